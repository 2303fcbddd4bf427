-- After cal_facts_keyed's rows of the touched devices are computed: the licenses they hold
-- that no device touched so far names. A batch gives them: an id's facts take a key pack one
-- of its new facts names, or none left at all ('<server>/g<generation>/?/<license id>', its
-- file attributed to another server). Every fact of such a license is a fact of its id (the
-- key holds the id), so all of them are among the rows just computed: nothing more is
-- linked, and nothing computed again (patch.among_rows).
insert into patch.among_rows
select distinct 'license', license_key
from patch.rows_cal_facts_keyed
where license_key is not null
except
select kind, key from patch.touched;
