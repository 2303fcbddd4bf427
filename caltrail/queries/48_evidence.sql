-- Layer 4, evidence: what each HWID and each computer name shows, measured once, for the
-- rules of 50_findings.sql. Every count a rule uses is a column here, so a finding can say
-- which evidence it rests on and which is missing.
--
-- Reads: activity, licenses, cal_events, as_of (40-45).

-- HWID-level evidence: the names each HWID was used with in time order, the name switches
-- (ping-pong: a switch back to a name used before on this HWID), and its licenses: how
-- many were superseded while they still counted (overlaps: more than one machine presents
-- this HWID, whatever their names).
-- materialize: lake
-- patched per device: 'hwid' hwid
create or replace view hwid_evidence as
with facts as (
    select
        hwid,
        client_name,
        ts,
        source,
        lag(client_name) over (partition by hwid order by ts, client_name) as previous_name
    from activity
    where hwid is not null and client_name is not null
),
-- each name's span on each HWID (grouped and joined back: a second window, partitioned
-- another way, would sort every fact again)
name_spans as (
    select hwid, client_name, min(ts) as first_seen, max(ts) as last_seen
    from facts
    group by all
),
numbered as (
    -- a switch to a name this HWID had before, then left: ping-pong
    select f.*, f.client_name <> f.previous_name and s.first_seen < f.ts as returns
    from facts as f
    join name_spans as s using (hwid, client_name)
),
per_hwid as (
    select
        hwid,
        list(client_name order by first_seen, client_name) as names,
        count(*) as name_count,
        min(first_seen) as first_seen,
        max(last_seen) as last_seen
    from name_spans
    group by hwid
),
switches as (
    select
        hwid,
        count(*) filter (where client_name <> previous_name) as name_switches,
        count(*) filter (where returns) as name_returns,
        count(*) as facts,
        list_sort(list_distinct(list(source))) as sources
    from numbered
    group by hwid
),
held as (
    select
        hwid,
        count(*) as licenses,
        count(*) filter (where overlap_sure_by_hwid) as overlaps,
        count(distinct user_name) as users
    from licenses
    where hwid is not null
    group by hwid
)
select
    p.*,
    coalesce(s.name_switches, 0) as name_switches,
    coalesce(s.name_returns, 0) as name_returns,
    coalesce(s.facts, 0) as facts,
    s.sources,
    coalesce(h.licenses, 0) as licenses,
    coalesce(h.overlaps, 0) as overlaps,
    coalesce(h.users, 0) as users
from per_hwid as p
left join switches as s using (hwid)
left join held as h using (hwid);

-- Per name and HWID: when the HWID was active under that name, on how many days, its
-- users, and its licenses' end (a HWID known only from a license, e.g. a CAL an
-- administrator revoked and never renewed, is part of the name without an active span).
create or replace view name_hwid_spans as
with held as (
    select client_name, hwid, user_name, counted_until from licenses
    where client_name is not null and hwid is not null
),
seen as (
    select client_name, hwid, ts, user_name from activity
    where client_name is not null and hwid is not null
    union all
    select client_name, hwid, null, user_name from held
),
-- each user name's key worked out once (a fleet has few users and millions of rows)
user_keys as (
    select user_name, user_key(user_name) as user_key
    from (select distinct user_name from seen where user_name is not null)
)
select
    s.client_name,
    s.hwid,
    min(s.ts) as first_seen,
    max(s.ts) as last_seen,
    count(distinct s.ts::date) as active_days,
    bool_or(hwid_store_app(s.hwid)) as store_app,
    list_sort(list_distinct(list(k.user_key) filter (where k.user_key is not null))) as users,
    any_value(h.counted_until) as counted_until
from seen as s
left join user_keys as k using (user_name)
left join (select client_name, hwid, max(counted_until) as counted_until from held group by all)
    as h using (client_name, hwid)
group by s.client_name, s.hwid;

-- What the clients' registry exports say per name: the machines (a machine is the folder
-- its export came from), the most HWIDs one export holds (several: a corrupted store), the
-- most one machine's exports hold together, and whether two machines hold different HWIDs
-- (two machines share the name). An export carries no date: two of one machine may be
-- taken before and after its HWID changed, so only one export holding several is a
-- corrupted store. (A TSCTST dump names the CAL its client holds, not a machine of its
-- own.)
create or replace view name_registry as
with per_export as (
    select
        client_name,
        machine,
        list_sort(list_distinct(list(hwid))) as hwids
    from cal_events
    where source = 'client' and detail like 'registry%' and client_name is not null
        and hwid is not null
    group by client_name, machine, source_path
),
per_machine as (
    select
        client_name,
        machine,
        max(len(hwids)) as most_in_one_export,
        list_sort(list_distinct(flatten(list(hwids)))) as hwids
    from per_export
    group by client_name, machine
)
select
    client_name,
    count(*) as machines,
    max(most_in_one_export) as most_hwids_in_one_export,
    max(len(hwids)) as most_hwids_in_one_machine,
    count(distinct hwids) as distinct_machine_hwid_sets,
    list_sort(list_distinct(flatten(list(hwids)))) as registry_hwids
from per_machine
group by client_name;

-- Name-level evidence: the HWIDs of each name, how long each stayed, how they overlap, the
-- cadence of new HWIDs, the clients' exports of the name, its users, and for a name of two
-- HWIDs whether the older one has gone quiet through its CAL's renewal window (a machine
-- still in use renews its CAL in the days before it expires).
-- materialize: lake
-- patched per device: 'name' client_name
create or replace view name_evidence as
with spans as (
    select
        *,
        epoch(first_seen - lag(first_seen) over (partition by client_name order by first_seen))
            / 86400.0 as gap_days,
        -- the latest end of a HWID begun before this one: the overlap of a HWID with one
        -- that started before it is largest with the one that lasted longest (linear)
        max(last_seen) over (partition by client_name order by first_seen, hwid
            rows between unbounded preceding and 1 preceding) as latest_end_before,
        row_number() over (partition by client_name order by first_seen nulls last, hwid) as nth
    from name_hwid_spans
),
per_name as (
    select
        client_name,
        count(*) as hwid_count,
        count(*) filter (where active_days > 1) as multiday_hwids,
        count(*) filter (where store_app) as store_app_hwids,
        min(first_seen) as first_seen,
        max(last_seen) as last_seen,
        median(gap_days) as cadence_days,
        count(*) filter (where gap_days < 1.5) / nullif(count(gap_days), 0) as next_day_share,
        coalesce(max(epoch(least(last_seen, latest_end_before) - first_seen))
            filter (where latest_end_before is not null) / 86400.0, 0) as max_overlap_days,
        any_value(users) filter (where nth = 1) as old_users,
        any_value(users) filter (where nth = 2) as new_users,
        any_value(last_seen) filter (where nth = 1) as old_last_seen,
        any_value(counted_until) filter (where nth = 1) as old_counted_until,
        any_value(first_seen) filter (where nth = 2) as new_first_seen,
        any_value(hwid) filter (where nth = 1) as old_hwid,
        -- the spans with a first sighting (active, not known from a license alone): what
        -- regeneration_waves reads of a name whose HWID changed once
        count(first_seen) as active_hwids,
        max(first_seen) as active_last_start,
        min(last_seen) as active_first_end,
        -- (what the name's finding lists: read here, not from the whole activity again)
        list(hwid order by hwid) as hwids
    from spans
    group by client_name
),
-- (a name's server: the least of them by name, the same however the rows come in)
servers as (
    select client_name, min(license_server) as license_server
    from activity
    where client_name is not null and license_server is not null
    group by client_name
),
named_events as (
    select
        client_name,
        count(*) filter (where fact = 'invalid-license') as invalid_license_events,
        count(*) filter (where source <> 'client') as facts,
        list_sort(list_distinct(list(source))) as sources
    from cal_events
    where client_name is not null
    group by client_name
)
select
    n.* exclude (old_users, new_users, old_last_seen, old_counted_until, new_first_seen,
        old_hwid),
    greatest(n.max_overlap_days, 0) as overlap_days,
    coalesce(r.machines, 0) as registry_machines,
    coalesce(r.most_hwids_in_one_export, 0) as registry_hwids_one_export,
    coalesce(r.distinct_machine_hwid_sets, 0) as registry_hwid_sets,
    coalesce(len(r.registry_hwids), 0) as registry_hwids,
    -- a machine's export still holds the older HWID alone: that machine is in use
    coalesce(list_contains(r.registry_hwids, n.old_hwid) and n.hwid_count = 2
        and r.most_hwids_in_one_machine = 1, false) as registry_has_old,
    -- the two HWIDs came with users of their own (two machines, or one given to another)
    coalesce(len(n.old_users) > 0 and len(n.new_users) > 0
        and len(list_intersect(n.old_users, n.new_users)) = 0, false) as users_differ,
    -- the older HWID showed nothing after the newer one came, through its CAL's renewal
    -- window (or its end): a machine still in use would have renewed it
    coalesce(n.old_last_seen < n.new_first_seen
        and n.old_counted_until - to_days(th('renew_window_days')::integer) <= a.as_of,
        false) as old_quiet_through_renewal,
    coalesce(e.invalid_license_events, 0) as invalid_license_events,
    coalesce(e.facts, 0) as facts,
    e.sources,
    v.license_server
from per_name as n
cross join as_of as a
left join name_registry as r using (client_name)
left join named_events as e using (client_name)
left join servers as v using (client_name);

-- A fleet-wide HWID regeneration (the workaround applied to many clients at once, with or
-- without a rebuilt database): names whose HWID changed once, the new one first seen within
-- mass_regeneration_window_days of each other, at least mass_regeneration_min_names of them
-- and mass_regeneration_min_share of the names active then. A machine takes its new HWID
-- at its next connection, so the wave goes on for mass_regeneration_tail_days, and beyond
-- for a machine not seen from before the wave until its switch (a laptop away for months
-- takes its new HWID when it comes back). One event, not a fault of each machine: its names
-- get no finding of their own (a machine rebuilt in those days is counted with it). But not
-- a name whose machine's registry export holds both HWIDs: the workaround deletes the
-- MSLicensing key, which leaves the new HWID alone; a store keeping the old one beside it is
-- a corrupted store whose switch fell in the wave's days (docs/LICENSING.md, "A fleet-wide
-- regeneration").
-- materialize: lake
create or replace view regeneration_waves as
with switches as (
    -- (read from name_evidence, kept: each name's active spans on its HWIDs, which this
    -- view computed from the whole activity again, 0.4 s at 50,000 devices)
    select
        client_name,
        active_last_start as switch_at,
        active_first_end as old_last_seen,
        license_server
    from name_evidence
    where active_hwids = 2 and active_first_end < active_last_start
        and registry_hwids_one_export < 2
),
windows as (
    select
        switch_at as wave_start,
        count(*) over (order by switch_at range between current row
            and to_days(th('mass_regeneration_window_days')::integer) following) as n
    from switches
),
best as (
    -- the densest window (one wave a lake: the workaround is applied once)
    select wave_start, n from windows
    where n >= th('mass_regeneration_min_names')
    order by n desc, wave_start
    limit 1
),
active as (
    select b.wave_start, b.n, count(distinct a.client_name) as names_active
    from best as b
    join activity as a
        on a.ts between b.wave_start - to_days(30) and b.wave_start + to_days(30)
    group by b.wave_start, b.n
)
select
    w.wave_start,
    max(s.switch_at) as wave_end,
    w.names_active,
    list(s.client_name order by s.switch_at, s.client_name) as names,
    mode(s.license_server) as license_server
from active as w
join switches as s
    on s.switch_at >= w.wave_start
    and (s.switch_at <= w.wave_start + to_days(th('mass_regeneration_tail_days')::integer)
        or s.old_last_seen <= w.wave_start)
where w.n >= th('mass_regeneration_min_share') * w.names_active
group by w.wave_start, w.names_active;
