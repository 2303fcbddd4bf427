-- Before subject_findings is patched: the names whose membership of the fleet's
-- regeneration wave changed (a wave explains its names, which then get no finding of their
-- own: names_explained_elsewhere). Their devices are closed over again (closure.sql), over
-- the patched facts.
insert into patch.touched
select distinct 'name', name
from (
    (select unnest(names) as name from regeneration_waves
     except
     select unnest(names) from patch.base_regeneration_waves)
    union all
    (select unnest(names) from patch.base_regeneration_waves
     except
     select unnest(names) from regeneration_waves)
)
anti join patch.touched as t on t.kind = 'name' and t.key = name;
