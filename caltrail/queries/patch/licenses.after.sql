-- After licenses is patched: the partitions of the licenses computed not read beside them
-- yet (a new license of a HWID no touched device had), and the licenses kept as they were
-- whose next license of the same HWID changed (the one just before a license computed
-- again, in its HWID's order): their end of count can change (licenses.revoked_at reads
-- it), and with it their name's evidence. Their names and licenses are touched; the view is
-- then computed again (caltrail/pipeline/patch.py, while this adds anything: a device, or a
-- HWID to patch.redo).
insert into patch.redo
select distinct coalesce(hwid, '') from patch.rows_licenses
except
select hwid from patch.license_hwids;

insert into patch.license_hwids select key from patch.redo;

insert into patch.touched
with kept_rows as (
    select license_key, client_name, counted, license_server, version_key, hwid, issued_at,
        first_listed
    from patch.base_licenses
    where license_key in (select license_key from patch.input_license_window_peers)
),
orders as (
    -- each HWID's licenses now (those kept and those computed again) and before
    select 'now' as state, license_key, counted, license_server, version_key, hwid, issued_at,
        first_listed
    from kept_rows
    union all
    select 'now', license_key, counted, license_server, version_key, hwid, issued_at,
        first_listed
    from patch.rows_licenses
    where coalesce(hwid, '') in (select hwid from patch.license_hwids)
    union all
    select 'before', license_key, counted, license_server, version_key, hwid, issued_at,
        first_listed
    from patch.base_licenses
    where coalesce(hwid, '') in (select hwid from patch.license_hwids)
),
windows as (
    select
        state,
        license_key,
        lead(issued_at) over all_of_hwid as next_issue,
        lead(issued_at) over counted_of_hwid as next_counted_issue,
        lead(first_listed) over counted_of_hwid as next_counted_listed
    from orders
    window
        all_of_hwid as (partition by state, license_server, version_key, hwid
            order by issued_at, license_key),
        counted_of_hwid as (partition by state, counted, license_server, version_key, hwid
            order by issued_at, license_key)
),
changed as (
    select k.license_key, k.client_name
    from kept_rows as k
    join windows as n on n.license_key = k.license_key and n.state = 'now'
    join windows as b on b.license_key = k.license_key and b.state = 'before'
    where n.next_issue is distinct from b.next_issue
        or n.next_counted_issue is distinct from b.next_counted_issue
        or n.next_counted_listed is distinct from b.next_counted_listed
)
select kind, key
from (
    select 'license' as kind, license_key as key from changed
    union
    select 'name', client_name from changed where client_name is not null
)
except
select kind, key from patch.touched;
