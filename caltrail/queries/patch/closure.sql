-- The devices linked to a touched one, to a fixed point (caltrail/pipeline/patch.py runs
-- the last statement until it adds nothing). Two devices are linked when one CAL fact names
-- both: a name and the licenses of its facts, a license and its server, generation and id
-- (facts sharing them give each other their key pack). A view computed for the touched
-- devices then reads every fact it would read for them computed whole. HWIDs link nothing
-- here: one HWID can be every FreeRDP client's, and what reads a HWID's facts across names
-- (its evidence, the windows ordering its licenses) reads every row of it (hwids.sql).
-- patch.links_source: the facts (cal_events of the base state, or of the patched state).

create or replace table patch.links as
with facts as (
    select distinct
        client_name,
        license_key,
        case when source in ('trace', 'wmi') and license_id is not null then
            coalesce(license_server, '?') || '/g' || coalesce(generation, 0) || '/' || license_id
        end as license_triple
    from patch.links_source
),
numbered as materialized (
    -- (computed once: the numbering of a distinct set differs between two computations)
    select row_number() over () as fact, * from facts
)
select fact, 'name' as kind, client_name as key from numbered where client_name is not null
union all
select fact, 'license', license_key from numbered where license_key is not null
union all
select fact, 'triple', license_triple from numbered where license_triple is not null;

insert into patch.touched
select distinct l.kind, l.key
from patch.links as l
semi join (
    select l.fact
    from patch.links as l
    semi join patch.touched as t on t.kind = l.kind and t.key = l.key
) as f on f.fact = l.fact
anti join patch.touched as t on t.kind = l.kind and t.key = l.key;
