-- After the closure (closure.sql). The HWIDs of the touched devices' facts: their evidence
-- and findings are computed again, from every row of each HWID, and the licenses of those
-- HWIDs kept as they were are read beside the licenses computed again (patch/licenses.sql).
insert into patch.touched
select distinct 'hwid', f.hwid
from patch.links as f
where f.hwid is not null
    and (f.client_name in (select key from patch.touched where kind = 'name')
        or f.license_key in (select key from patch.touched where kind = 'license'))
    and f.hwid not in (select key from patch.touched where kind = 'hwid');
