-- Layer 2, licenses: one row per issuance with all its facts merged (trace + WMI + linked
-- EVTX events), its type and product version, when it stopped counting against the pool,
-- and whether it is excess.
--
-- Reads: cal_events, snapshot_listings, keypacks, cal_pool, db_rebuilds (38, 40).

-- The facts of each license merged.
create or replace view license_facts as
select
    license_key,
    any_value(license_server) as license_server,
    any_value(license_id) as license_id,
    any_value(keypack_id) as keypack_id,
    any_value(generation) as generation,
    -- the name it was issued to: the issue fact's, else the earliest fact's (a listing
    -- carries the name of its own snapshot); two facts at one time naming two computers
    -- give the first name in order, not the one a thread met first (0.3 s more over the
    -- 4 M facts of 50,000 devices, for the same answer on every run)
    coalesce(
        arg_min(client_name, (ts, client_name)) filter (where fact in ('issued', 'upgraded')),
        arg_min(client_name, (ts, client_name)) filter (where fact not in ('expires', 'unlisted'))
    ) as client_name,
    -- (lists of distinct values as list functions over the group's list: as ordered
    -- distinct aggregates, DuckDB aggregated the 2.7 M facts of 50,000 devices once more for
    -- each; empty: NULL, as the aggregate over no value)
    nullif(list_sort(list_distinct(list(client_name))), []) as names,
    any_value(hwid) filter (where hwid is not null) as hwid,
    min(hwid_raw) as hwid_raw,
    arg_min(user_name, (ts, user_name)) filter (where user_name is not null) as user_name,
    nullif(list_sort(list_distinct(list(user_name))), []) as users,
    -- the snapshot's type, else the first type a fact gave (a refused upgrade of a
    -- temporary CAL is an 'upgraded' fact too)
    coalesce(
        arg_max(cal_type, ts) filter (where source = 'wmi' and cal_type is not null),
        arg_min(cal_type, (ts, cal_type)) filter (where source = 'trace' and cal_type is not null),
        arg_min(cal_type, (ts, cal_type)) filter (where cal_type is not null)
    ) as fact_cal_type,
    arg_max(product_version, ts) filter (where product_version is not null) as fact_product,
    -- WMI dates have whole seconds: the trace or event time of an issuance is preferred
    coalesce(
        min(ts) filter (where fact in ('issued', 'upgraded') and source <> 'wmi'),
        min(ts) filter (where fact in ('issued', 'upgraded'))
    ) as issue_fact_at,
    min(ts) filter (where fact not in ('expires', 'unlisted')) as first_fact_at,
    max(ts) filter (where fact not in ('expires', 'unlisted')) as last_fact_at,
    max(ts) filter (where fact in ('issued', 'upgraded', 'renewed')) as last_issue_or_renewal,
    bool_or(fact = 'upgraded') as from_upgrade,
    count(*) filter (where fact = 'renewed' and source = 'trace') as renewals_trace,
    count(*) filter (where fact = 'renewed' and source = 'evtx') as renewals_evtx,
    max(ts) filter (where fact = 'renewed') as last_renewed,
    -- when it was last renewed, as the trace or an event says (a renewal a snapshot shows
    -- is placed at the earliest it can have happened: see licenses.renewed_after_at)
    max(ts) filter (where fact = 'renewed' and source in ('trace', 'evtx')) as last_renewed_seen,
    min(ts) filter (where fact = 'revoked') as revoked_at,
    min(ts) filter (where fact = 'unlisted') as unlisted_at,
    max(expires) filter (where source = 'wmi') as expires_wmi,
    min(expires) filter (where fact = 'listed') as first_expiry,
    -- known only as presented by a client (a request naming it): whether it still counted
    -- then is not known (a CAL issued before the logs, expired or not)
    bool_and(fact in ('requested', 'seen') and keypack_id is null) as only_presented,
    list_sort(list_distinct(list(source))) as sources,
    count(*) as facts
from cal_events
where license_key is not null
group by license_key;

-- What the snapshots said of each license: first and last listing, the last one at which
-- it counted (its status), its latest status, the first listing as Revoked.
create or replace view license_listings as
select
    l.license_key,
    min(l.snapshot_time) as first_listed,
    max(l.snapshot_time) as last_listed,
    max(l.snapshot_time) filter (where coalesce(k.counted, true)) as last_counted_listed,
    min(l.snapshot_time) filter (where k.kind = 'revoked') as revoked_listed_at,
    -- the last listing before it was revoked: the revocation lies after it
    max(l.snapshot_time) filter (where coalesce(k.kind, '') <> 'revoked') as revoked_after,
    arg_max(k.kind, l.snapshot_time) as status_kind,
    -- it counted at some time: a counted status, or Revoked (it counted until then)
    bool_or(coalesce(k.counted, true) or k.kind = 'revoked') as status_counted,
    arg_max(coalesce(k.revocable, true), l.snapshot_time) as status_revocable,
    arg_max(l.license_status, l.snapshot_time) as license_status,
    arg_max(l.cal_type, l.snapshot_time) as report_cal_type,
    arg_max(l.product_version, l.snapshot_time) as report_product
from snapshot_listings as l
left join license_status as k on k.status = l.license_status
group by l.license_key;

-- Each license's type, product version and dates:
--   cal_type       temporary | permanent | unknown: the status (Revoked CALs were
--                  permanent), else the facts, else its key pack's type, else the report's
--                  CAL type; cal_type_source says which
--   product_version  the facts' (EVTX, report entry), else its key pack's, else the only
--                  version of its server's pool; NULL when it cannot be told
--   issued_at      the issue fact, else (no IssueDate) the latest time the expiry allows
--                  (a permanent CAL's last issue or renewal lies 52-89 days before its
--                  expiry, a temporary CAL's 90 days) and no later than its first fact
--   expires_at     the latest snapshot's expiry, else last issue/renewal + longest validity
create or replace view license_dates as
with typed as (
    select
        f.*,
        s.* exclude (license_key),
        case
            when s.status_kind = 'temporary' then 'temporary'
            when s.status_kind in ('permanent', 'revoked') then 'permanent'
            when f.fact_cal_type is not null then f.fact_cal_type
            when k.keypack_type = 4 then 'temporary'
            when k.per_device_permanent then 'permanent'
            when s.report_cal_type ilike '%temporary%' then 'temporary'
            when s.report_cal_type is not null then 'permanent'
            else 'unknown'
        end as cal_type,
        case
            when s.status_kind in ('temporary', 'permanent', 'revoked') then 'status'
            when f.fact_cal_type is not null then 'facts'
            when k.keypack_type = 4 or k.per_device_permanent then 'key pack'
            when s.report_cal_type is not null then 'report'
        end as cal_type_source,
        coalesce(f.fact_product, s.report_product, k.product_version, v.product_version)
            as product_version,
        coalesce(s.status_counted, true) and not f.only_presented as counted,
        coalesce(s.status_revocable, true) as revocable
    from license_facts as f
    left join license_listings as s using (license_key)
    left join keypacks as k
        on k.license_server is not distinct from f.license_server
        and k.keypack_id::varchar = f.keypack_id
    left join (
        select license_server, any_value(product_version) as product_version
        from cal_pool
        group by license_server
        having count(distinct product_key(product_version)) = 1
    ) as v on v.license_server is not distinct from f.license_server
)
select
    * exclude (issue_fact_at, first_fact_at),
    coalesce(
        issue_fact_at,
        least(
            first_fact_at,
            first_expiry - to_days(case when cal_type = 'temporary'
                then th('temporary_validity_days') else th('permanent_validity_min_days')
                end::integer)
        )
    ) as issued_at,
    issue_fact_at is not null as issue_seen,
    coalesce(
        expires_wmi,
        coalesce(last_issue_or_renewal, first_fact_at) + to_days(case when cal_type = 'temporary'
            then th('temporary_validity_days') else th('permanent_validity_max_days') end::integer)
    ) as expires_at,
    expires_wmi is null as expiry_estimated,
    -- the earliest it can expire: an estimated expiry lies between the shortest and the
    -- longest validity from the last issue or renewal (a CAL superseded before that is
    -- excess for certain; after it, it may have expired first)
    coalesce(
        expires_wmi,
        coalesce(last_issue_or_renewal, first_fact_at) + to_days(case when cal_type = 'temporary'
            then th('temporary_validity_days') else th('permanent_validity_min_days') end::integer)
    ) as expires_earliest
from typed;

-- The licenses a patch keeps as they were, of the HWIDs of the licenses it computes again
-- (caltrail/pipeline/patch.py): the windows ordering each HWID's licenses read them too, so
-- that a license computed again finds its next one among every license of its HWID. No rows
-- when every license is computed.
create or replace view license_window_peers as
select
    null::varchar as license_key,
    null::boolean as counted,
    null::varchar as license_server,
    null::varchar as version_key,
    null::varchar as hwid,
    null::timestamptz as issued_at,
    null::timestamptz as first_listed
where false;

-- licenses: one row per issuance (license_dates and):
--   revoked_at     revoked by a trace line or event 80, or first listed as Revoked (a
--                  revoked CAL is back in its pack at once)
--   replaced_at    a temporary CAL upgraded to a permanent one
--   unlisted_at    the first full listing of its server without it, before its expiry
--   counted_until  when it stopped counting against its pack: the first of expiry,
--                  upgrade, revocation, database rebuilt, absence from a full listing (a
--                  status that does not count, e.g. Pending: never counted)
--   excess_by_name the next CAL of the same holder (server, product version, name) was
--                  issued while this one still counted, or both were listed counted by one
--                  snapshot; excess_by_name_hwid the same per HWID within a name (two
--                  machines under one name), excess_by_hwid per HWID (clones);
--                  overlap_sure_by_hwid: that overlap is sure (the next CAL came while
--                  this one was last seen to exist), the evidence of a second machine;
--                  superseded_at the next CAL's issue; counted_now: still counted at the end
-- Each license's product version key, the issue of the next CAL of its HWID (server,
-- version: a machine keeping its HWID gets a new CAL only once its own is no longer
-- valid), and for a license never listed the first full listing of its server after its
-- last fact (had it still been in the database, that listing would show it).
create or replace view license_order as
with d as materialized (
    select *, coalesce(product_key(product_version), '?') as version_key
    from license_dates
),
next_on_hwid as (
    -- (over the columns it needs alone: see licenses.next_cals)
    select license_key, lead(issued_at) over (partition by license_server, version_key, hwid
        order by issued_at, license_key) as next_on_hwid_issued
    from (
        select license_key, license_server, version_key, hwid, issued_at from d
        union all
        select license_key, license_server, version_key, hwid, issued_at
        from license_window_peers
    )
)
select
    d.* exclude (unlisted_at),
    coalesce(d.unlisted_at, case when d.first_listed is null then (
        select min(f.snapshot_time) from full_snapshots as f
        where f.license_server is not distinct from d.license_server
            and f.generation = d.generation and f.snapshot_time > d.last_fact_at)
    end) as unlisted_at,
    n.next_on_hwid_issued
from d
join next_on_hwid as n using (license_key);

-- A temporary CAL is replaced by a permanent one for its HWID and name (an upgrade) when
-- the trace or an event says so, or when no snapshot shows the temporary CAL after the
-- permanent one was issued (the server takes the temporary record out when it upgrades it).
-- (license_dates is read once, in the first CTE: a view named twice is bound twice.)
-- materialize: lake
-- patched per device: 'name' client_name, 'license' license_key
-- per device: 'name' client_name, 'hwid' hwid, 'license' license_key
create or replace view licenses as
with dates as (select * from license_order),
replaced as (
    select t.license_key, min(p.issued_at) as replaced_at
    from dates as t
    join dates as p
        on p.hwid = t.hwid
        and p.license_server is not distinct from t.license_server
        and product_key(p.product_version) is not distinct from product_key(t.product_version)
        and p.client_name is not distinct from t.client_name
        and p.cal_type = 'permanent'
        and p.issued_at > t.issued_at
        and p.issued_at <= t.expires_at
        and (p.from_upgrade or t.last_listed is null or t.last_listed < p.issued_at)
    where t.cal_type = 'temporary'
    group by t.license_key
),
ended as (
    select
        d.* exclude (revoked_at),
        -- revoked: when the trace or event 80 says; else (snapshots only) at the first
        -- listing as Revoked, or just after the listing before when the same HWID got its
        -- next CAL in between (the revocation came first)
        least(d.revoked_at, case
            when d.next_on_hwid_issued > d.revoked_after
                and d.next_on_hwid_issued <= d.revoked_listed_at
                then d.revoked_after + interval 1 second
            else d.revoked_listed_at
        end) as revoked_at,
        d.revoked_listed_at is not null as revoked_in_snapshot,
        r.replaced_at,
        rebuild_after(b.times, d.license_server, d.issued_at) as db_rebuilt_at
    from dates as d
    left join replaced as r using (license_key)
    cross join (select rebuild_times() as times) as b
),
counted as materialized (
    select
        *,
        case when not counted then issued_at else least(
            expires_at,
            coalesce(replaced_at, expires_at),
            coalesce(revoked_at, expires_at),
            coalesce(db_rebuilt_at, expires_at),
            coalesce(unlisted_at, expires_at)
        ) end as counted_until
    from ended
),
-- (the windows sort only the columns they need, joined back by key: a window over the
-- whole row carries its forty columns through the sort, seconds at 700,000 licenses)
next_cals as (
    select
        license_key,
        lead(issued_at) over by_name as superseded_at,
        lead(first_listed) over by_name as next_first_listed,
        lead(issued_at) over by_name_hwid as next_on_hwid_at,
        lead(first_listed) over by_name_hwid as next_on_hwid_listed
    from (
        select license_key, counted, license_server, version_key, client_name, hwid,
            issued_at, first_listed
        from counted
    )
    window
        by_name as (partition by counted, license_server, version_key, client_name
            order by issued_at, license_key),
        by_name_hwid as (partition by counted, license_server, version_key,
            client_name, hwid order by issued_at, license_key)
),
-- (apart: every license of a HWID is in its window, license_window_peers too)
next_by_hwid as (
    select
        license_key,
        lead(issued_at) over by_hwid as next_by_hwid_at,
        lead(first_listed) over by_hwid as next_by_hwid_listed
    from (
        select license_key, counted, license_server, version_key, hwid, issued_at,
            first_listed
        from counted
        union all
        select license_key, counted, license_server, version_key, hwid, issued_at,
            first_listed
        from license_window_peers
    )
    window by_hwid as (partition by counted, license_server, version_key, hwid
        order by issued_at, license_key)
),
chains as (
    select c.*, n.* exclude (license_key), h.* exclude (license_key)
    from counted as c
    join next_cals as n using (license_key)
    join next_by_hwid as h using (license_key)
)
select
    c.* exclude (next_first_listed, next_on_hwid_at, next_on_hwid_listed, next_by_hwid_at,
        next_by_hwid_listed),
    c.counted and (c.superseded_at < least(c.counted_until, c.expires_earliest)
        or c.next_first_listed <= c.last_counted_listed) is true as excess_by_name,
    c.counted and (c.next_on_hwid_at < least(c.counted_until, c.expires_earliest)
        or c.next_on_hwid_listed <= c.last_counted_listed) is true as excess_by_name_hwid,
    c.counted and c.hwid is not null and (c.next_by_hwid_at < least(c.counted_until,
        c.expires_earliest) or c.next_by_hwid_listed <= c.last_counted_listed) is true
        as excess_by_hwid,
    -- the clone evidence: an overlap per HWID that is sure, the next CAL issued while this
    -- one was last seen to exist (listed, presented, renewed). Its end after that is
    -- inferred (an expiry, the next full listing without it): a database rebuilt unseen
    -- gives every HWID a new CAL in between, which is no second machine.
    c.counted and c.hwid is not null and (c.next_by_hwid_at < least(c.counted_until,
        c.expires_earliest, coalesce(greatest(c.last_listed, c.last_fact_at), c.counted_until))
        or c.next_by_hwid_listed <= c.last_counted_listed) is true as overlap_sure_by_hwid,
    c.counted_until > a.as_of as counted_now
from chains as c
cross join as_of as a;
