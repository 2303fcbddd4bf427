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

-- And the names of a HWID that reached the number of names that makes it a HWID of several
-- machines (min_names_per_hwid): its names are explained by it from now on
-- (names_explained_elsewhere), which a name of it the batch did not touch reads too.
insert into patch.touched
select distinct 'name', name
from (
    select unnest(coalesce(n.names, []) || coalesce(b.names, [])) as name
    from hwid_evidence as n
    full join patch.base_hwid_evidence as b using (hwid)
    where hwid in (select key from patch.touched where kind = 'hwid')
        and coalesce(n.name_count >= th('min_names_per_hwid'), false)
            <> coalesce(b.name_count >= th('min_names_per_hwid'), false)
)
anti join patch.touched as t on t.kind = 'name' and t.key = name;
