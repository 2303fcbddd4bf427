-- The devices linked to a touched one, to a fixed point (caltrail/pipeline/patch.py runs
-- this statement until it adds nothing). Two devices are linked when one CAL fact names
-- both: a name and the licenses of its facts, a license and its server, generation and id
-- (facts sharing them give each other their key pack). A view computed for the touched
-- devices then reads every fact it would read for them computed whole. HWIDs link nothing
-- here: one HWID can be every FreeRDP client's, and what reads a HWID's facts across names
-- (its evidence, the windows ordering its licenses) reads every row of it (hwids.sql).
-- patch.links: the devices each fact names (cal_links of the base state, or of the patched
-- state).

-- (a fact naming one touched device touches the others it names)
insert into patch.touched
with hit as (
    select client_name, license_key, license_triple
    from patch.links
    where client_name in (select key from patch.touched where kind = 'name')
        or license_key in (select key from patch.touched where kind = 'license')
        or license_triple in (select key from patch.touched where kind = 'triple')
)
select 'name' as kind, client_name as key from hit where client_name is not null
union
select 'license', license_key from hit where license_key is not null
union
select 'triple', license_triple from hit where license_triple is not null
except
select kind, key from patch.touched;
