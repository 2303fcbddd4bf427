-- Layer 4, plans: when the excess CALs come back on their own (cal_recovery) and which to
-- revoke first within the 20% allowance of their product version (revoke_plan).

-- The CALs clients say they hold (TSCTST: the HWID and the expiry of the CAL the client
-- stores): such a CAL is in use on that machine.
create or replace view client_held_cals as
select distinct l.license_key
from licenses as l
join cal_events as c
    on c.source = 'client' and c.hwid = l.hwid and c.expires is not null
    and abs(epoch(c.expires) - epoch(l.expires_wmi)) <= 86400;

-- The excess CALs of wasteful findings (duplicate names are not waste), with the finding.
-- Kept: the plans read it many times, and picking its rows out of every license cost most
-- of a diagnosis once the state was kept. A row depends on its license (its row in
-- licenses, and whether the finding lists it: the excess flag of that row) and on its
-- finding's own columns: after a batch, the rows of the licenses and names it touched are
-- computed again, and every row of a finding whose own columns changed
-- (patch/excess_licenses.sql), not every row of a subject touched (the FreeRDP HWID, which
-- each batch of FreeRDP clients touches, lists 200,000 CALs at 50,000 devices). (A
-- regeneration wave's finding lists the excess CALs of its names: a name that joins or
-- leaves it, or whose CALs change, is touched, and with it its licenses; the finding's
-- other columns are the wave's server's.)
-- materialize: lake
-- patched per device: 'license' license_key, 'name' client_name
create or replace view excess_licenses as
with wasteful as (
    select
        unnest(excess_licenses) as license_key,
        cause,
        subject,
        subject_kind,
        confidence,
        alternative_cause
    from findings
    where waste and excess_licenses is not null
)
select
    l.*,
    w.cause,
    w.subject,
    w.subject_kind,
    w.confidence,
    w.alternative_cause,
    coalesce(a.waste, true) as alternative_waste
from wasteful as w
join licenses as l using (license_key)
left join cause_catalog as a on a.cause = w.alternative_cause;

-- cal_recovery: per day from the end of the data, the excess CALs that stop counting by
-- expiry, permanent and temporary apart (temporary CALs never come from the purchased
-- pool), how many permanent ones are left, and the day the pool is healthy again (the
-- last excess permanent CAL back); temporary_gone_on: the last excess temporary one gone.
create or replace view cal_recovery as
with start as (
    select as_of::date as first_day from as_of
),
still_counted as (
    select * from excess_licenses where counted_now
),
days as (
    select unnest(generate_series(
        (select first_day from start),
        greatest(
            (select first_day from start),
            coalesce((select max(counted_until)::date from still_counted),
                (select first_day from start))
        ),
        interval 1 day
    ))::date as day
),
per_day as (
    select
        d.day,
        count(s.license_key) as back_to_pool,
        count(s.license_key) filter (where s.cal_type = 'permanent') as back_permanent,
        count(s.license_key) filter (where s.cal_type = 'temporary') as back_temporary,
        count(s.license_key) filter (where s.expiry_estimated) as back_estimated
    from days as d
    left join still_counted as s on s.counted_until::date = d.day
    group by d.day
)
select
    day,
    back_to_pool,
    back_permanent,
    back_temporary,
    back_estimated,
    (select count(*) from still_counted where cal_type = 'permanent')
        - sum(back_permanent) over (order by day rows between unbounded preceding and current row)
        as excess_left,
    (select count(*) from still_counted where cal_type <> 'permanent')
        - sum(back_to_pool - back_permanent) over (order by day
            rows between unbounded preceding and current row) as excess_left_temporary,
    (select coalesce(max(counted_until)::date, (select first_day from start))
     from still_counted where cal_type = 'permanent') as healthy_on,
    (select max(counted_until)::date from still_counted where cal_type = 'temporary')
        as temporary_gone_on
from per_day
order by day;

-- The installed per-device CALs each product version's allowance is computed on, per
-- license server: the key-pack snapshots, else the installed count event 81 gives.
create or replace view revoke_pools as
with packs as (
    select
        coalesce(license_server, '?') as license_server,
        product_key(product_version) as version_key,
        any_value(product_version) as product_version,
        sum(installed)::bigint as installed,
        'key packs' as installed_from
    from cal_pool
    group by all
),
refused as (
    select
        coalesce(norm_name(license_server), norm_name(logged_by), '?') as license_server,
        product_key(product) as version_key,
        any_value(product) as product_version,
        arg_max(try_cast(data['param4'] as bigint), time_created) as installed,
        'event 81' as installed_from
    from licensing_problems
    where action = 'revoke-refused'
    group by all
)
select * from packs
union all
select r.* from refused as r
anti join packs as p using (license_server, version_key)
where r.installed is not null;

-- Each license server's last refused revocation (event 81) per product version: %3
-- revoked of %4 installed, allowed again after %5 (the server's local time: read in the
-- zone the event log's file was read in; without one, 14 hours later, the latest it can be).
create or replace view revoke_refusals as
with refused as (
    select
        coalesce(norm_name(p.license_server), norm_name(p.logged_by), '?') as license_server,
        product_key(p.product) as version_key,
        try_cast(p.data['param3'] as bigint) as revoked_count,
        p.time_created,
        try_strptime(trim(p.data['param5']), [
            '%m/%d/%Y %I:%M:%S %p', '%m/%d/%Y %H:%M:%S', '%d.%m.%Y %H:%M:%S',
            '%Y-%m-%d %H:%M:%S', '%d/%m/%Y %H:%M:%S'
        ]) as allowed_local,
        split_part(any_value(f.notes['tz']), ' ', 1) as zone
    from licensing_problems as p
    left join ingest_files as f on f.sha256 = p.file_sha256
    where p.action = 'revoke-refused'
    group by all
)
select
    license_server,
    version_key,
    arg_max(revoked_count, time_created) as revoked_count,
    max(time_created) as refused_at,
    arg_max(
        case
            when allowed_local is null then null
            when zone in (select name from pg_timezone_names()) then timezone(zone, allowed_local)
            else timezone('UTC', allowed_local) + interval 14 hour
        end,
        time_created
    ) as allowed_after
from refused
group by all;

-- The excess permanent CALs still counted that the plan could revoke, each with why it is
-- kept back when it is ('keep_reason'):
--   the client's own TSCTST dump shows it holds this CAL;
--   renewed after its successor was issued (the trace or an event says so, or its expiry
--   lies further from that issue than the longest validity);
--   its HWID seen after that (a name's HWID is its machine's alone);
--   its holder has no newer CAL in use (revoking it would take the holder's only CAL);
--   the finding cannot rule out two machines under the name (the CAL may be the other's);
--   the product version is not known (no allowance can be computed for it).
-- Kept per state: revoke_plan reads it twice (its candidates, and through their slots),
-- and each time it read the fleet's activity and licenses (1.7 s of a diagnosis at 50,000
-- devices, with the plan).
-- materialize: lake
create or replace view revoke_candidates as
-- (each test is a join on a per-key aggregate, not a subquery inside the CASE: DuckDB
-- cannot decorrelate those there, and 50,000 candidates then took minutes)
with held as (
    select distinct license_key from client_held_cals
),
hwid_last_seen as (
    select hwid, max(ts) as last_seen from activity group by hwid
),
newest_in_use as (
    -- per holder: the issue time of its latest CAL still counted
    select license_server, version_key, client_name, max(issued_at) as issued_at
    from licenses
    where counted_now
    group by all
),
allowance as (
    select license_server, version_key,
        bool_or(floor(installed * th('revoke_limit_share')) > 0) as allows
    from revoke_pools
    group by all
)
select
    e.*,
    coalesce(e.license_server, '?') as server_key,
    case
        when h.license_key is not null then
            'still in use: the client''s TSCTST dump shows it holds this CAL'
        when e.last_renewed_seen > e.superseded_at
            or e.expires_wmi - to_days(th('permanent_validity_max_days')::integer)
                > e.superseded_at
            then 'still in use: renewed after the newer CAL was issued'
        when e.subject_kind in ('name', 'fleet') and s.last_seen > e.superseded_at
            then 'its HWID was seen after the newer CAL was issued: its machine may still use it'
        when n.issued_at is null or n.issued_at <= e.issued_at
            then 'its holder has no newer CAL in use'
        when not e.alternative_waste then 'the finding cannot rule out '
            || e.alternative_cause || ': this may be the only CAL of another machine'
        when e.product_version is null then 'product version not known: no allowance to plan in'
        when not coalesce(a.allows, false)
            then 'no installed count of this version (key-pack export or event 81): no allowance'
    end as keep_reason
from excess_licenses as e
left join held as h on h.license_key = e.license_key
left join hwid_last_seen as s on s.hwid = e.hwid
left join newest_in_use as n
    on n.license_server is not distinct from e.license_server
    and n.version_key = e.version_key
    and n.client_name = e.client_name
left join allowance as a
    on a.license_server = coalesce(e.license_server, '?') and a.version_key = e.version_key
where e.counted_now
    and e.cal_type = 'permanent'
    and e.revocable
    and e.revoked_at is null;

-- The revoked CALs that occupy each allowance at the end of the data, one row each: those
-- seen revoked (events, trace, status Revoked) still inside their validity, and the ones
-- only the last event 81 of that server and version counts: the first of them expires at
-- its "allowed after" date (the earliest expiry of the revoked CALs), the others at the
-- latest the refusal allows (the longest validity from it).
create or replace view revoke_occupied as
with t0 as (
    select as_of as t0 from as_of
),
known as (
    select coalesce(l.license_server, '?') as license_server, l.version_key, l.expires_at
    from licenses as l
    where l.revoked_at is not null and l.expires_at > (select t0 from t0)
),
unseen as (
    select
        r.license_server,
        r.version_key,
        greatest(coalesce(r.revoked_count, 0) - (select count(*) from known as k
            where k.license_server = r.license_server and k.version_key = r.version_key), 0)
            as n,
        r.allowed_after,
        r.refused_at + to_days(th('permanent_validity_max_days')::integer) as latest,
        -- a known revoked CAL may be the one expiring first
        exists (select 1 from known as k where k.license_server = r.license_server
            and k.version_key = r.version_key
            and k.expires_at <= r.allowed_after + interval 1 day) as first_known
    from revoke_refusals as r
)
select license_server, version_key, expires_at from known
union all
select
    license_server,
    version_key,
    unnest(list_transform(range(n), lambda i: case
        when i = 0 and allowed_after is not null and not first_known then allowed_after
        else latest end)) as expires_at
from unseen
where n > 0;

-- The candidates the plan revokes (none kept back), numbered k per allowance (license
-- server, product version) oldest first, and each one's slot. The plan revokes them in
-- order, each at the earliest time (not before the previous one) when fewer than the limit
-- of revoked CALs are still inside their validity: candidate k's slot is the earliest
-- t >= t0 at which fewer than `limit` of the occupied expiries and of candidates 1..k-1's
-- expiries lie after t, the (n - limit + 1)-th smallest of those n expiries (t0 when
-- n < limit). A candidate left to expire ('expires-first', its expiry not after its slot)
-- changes no later count, so every earlier candidate can be counted. The k-th smallest of
-- a growing prefix comes from one window function: linear in the candidates.
create or replace view revoke_slots as
with t0 as (select as_of as t0 from as_of),
pool as (
    select license_server, version_key, any_value(product_version) as product_version,
        sum(installed)::bigint as installed,
        floor(sum(installed) * th('revoke_limit_share'))::bigint as revoke_limit
    from revoke_pools
    group by all
),
occupied as (
    select o.* from revoke_occupied as o where o.expires_at > (select t0 from t0)
),
candidates as (
    select
        server_key as license_server, version_key, counted_until as expires_at,
        row_number() over (partition by server_key, version_key
            order by issued_at, license_key) as k
    from revoke_candidates
    where keep_reason is null
),
line as (
    select license_server, version_key, 0::bigint as k, expires_at from occupied
    union all
    select license_server, version_key, k, expires_at from candidates
),
start_count as (
    select p.license_server, p.version_key, p.revoke_limit, count(o.expires_at) as n
    from pool as p
    left join occupied as o using (license_server, version_key)
    group by all
)
select
    l.license_server,
    l.version_key,
    l.k,
    l.expires_at,
    c.n as start_n,
    case
        when c.n + l.k - 1 - c.revoke_limit + 1 <= 0 then t.t0
        else greatest(t.t0, nth_value(l.expires_at, greatest(c.n + l.k - c.revoke_limit, 1)
            order by l.expires_at) over (partition by l.license_server, l.version_key
                order by l.k rows between unbounded preceding and 1 preceding))
    end as slot_at
from line as l
join start_count as c using (license_server, version_key)
cross join t0 as t
where c.revoke_limit > 0
qualify l.k > 0;

-- Each step's action and the revoked CALs inside their validity just after it: the
-- starting ones and the candidates up to this one whose expiry lies after the slot (a
-- candidate before this one whose expiry is not after this slot is counted from the first
-- slot at or after it).
create or replace view revoke_steps as
with slots as (select * from revoke_slots),
start_ends as (
    select license_server, version_key, expires_at as moment, 0 as kind, null::bigint as k
    from revoke_occupied where expires_at > (select as_of from as_of)
    union all
    select license_server, version_key, slot_at, 1, k from slots
),
start_expired as (
    -- per step: the starting CALs whose expiry is not after its slot (a running sum)
    select license_server, version_key, k,
        (sum((kind = 0)::integer) over (partition by license_server, version_key
            order by moment, kind rows between unbounded preceding and current row))::bigint as n
    from start_ends
    qualify kind = 1
),
cand_ends as (
    select license_server, version_key, expires_at as moment, 0 as kind, k from slots
    union all
    select license_server, version_key, slot_at, 1, k from slots
),
gone_from as (
    -- per candidate: the first step whose slot is at or after its expiry
    select license_server, version_key, k,
        case when first_step is not null then greatest(k, first_step) end as step
    from (
        select *, first_value(case when kind = 1 then k end ignore nulls) over (
            partition by license_server, version_key order by moment, kind, k
            rows between current row and unbounded following) as first_step
        from cand_ends
    )
    where kind = 0
),
cand_expired as (
    select s.license_server, s.version_key, s.k,
        coalesce(sum(g.n) over (partition by s.license_server, s.version_key order by s.k
            rows between unbounded preceding and current row), 0) as n
    from slots as s
    left join (
        select license_server, version_key, step as k, count(*) as n
        from gone_from where step is not null group by all
    ) as g using (license_server, version_key, k)
)
select
    s.license_server,
    s.version_key,
    s.k,
    s.slot_at,
    case when s.slot_at < s.expires_at then 'revoke' else 'expires-first' end as action,
    (s.start_n - coalesce(x.n, 0) + s.k - c.n)::bigint as occupied_after
from slots as s
left join start_expired as x using (license_server, version_key, k)
join cand_expired as c using (license_server, version_key, k);

-- revoke_plan: superseded (excess) permanent CALs of wasteful findings, oldest first, in
-- batches that never exceed revoke_limit_share (20%) of the installed per-device CALs of
-- the product version on the license server that issued them (each server's and each
-- version's allowance is its own; CALs of an unknown server are planned under '?'). A
-- revoked CAL occupies the allowance until its own expiry, so CALs revoked earlier
-- (snapshots, events, trace) count too, and each server's last event 81 per version. A
-- CAL that would expire before its turn is left to expire ('expires-first'); one that may
-- still be in use is kept ('keep', with keep_reason), whatever the allowance.
--   batch, revoke_on   the day's batch and the time from which it may be revoked
--   action             revoke | expires-first | keep
--   license_key, license_id, keypack_id, client_name, hwid, cause, subject, issued_at,
--   expires_at (expiry_estimated: no snapshot showed it), license_server, product_version,
--   installed (installed_from: key packs | event 81), revoke_limit,
--   occupied_after     revoked CALs still inside their validity after this step (<= limit)
--   next_batch_on      when the next batch is allowed;  keep_reason
-- (kept per state: every diagnosis reads it whole)
-- materialize: lake
create or replace view revoke_plan as
with candidates as (select * from revoke_candidates),
numbered as (
    select
        *,
        row_number() over (partition by server_key, version_key
            order by issued_at, license_key) as k
    from candidates
    where keep_reason is null
),
batched as (
    -- an administrator revokes once a day: the day's batch is revoked once its last slot
    -- is free (the allowance holds then)
    select
        s.*,
        case when s.action = 'revoke' then max(s.slot_at) over (partition by s.license_server,
            s.version_key, s.action, s.slot_at::date) end as revoke_on
    from revoke_steps as s
),
planned as (
    select
        case when b.action = 'revoke' then dense_rank() over (partition by b.license_server,
            b.version_key, b.action order by b.revoke_on::date) end as batch,
        b.revoke_on, b.action, b.occupied_after, c.*
    from batched as b
    join numbered as c on c.server_key = b.license_server and c.version_key = b.version_key
        and c.k = b.k
),
final as (
    select * from planned
    union all by name
    select 'keep' as action, * from candidates where keep_reason is not null
)
select
    f.batch,
    f.revoke_on,
    f.action,
    f.license_key,
    f.license_id,
    f.keypack_id,
    f.client_name,
    f.hwid,
    f.cause,
    f.subject,
    f.issued_at,
    f.counted_until as expires_at,
    f.expiry_estimated,
    f.server_key as license_server,
    coalesce(p.product_version, f.product_version) as product_version,
    p.installed,
    p.installed_from,
    floor(p.installed * th('revoke_limit_share'))::bigint as revoke_limit,
    f.occupied_after,
    n.next_batch_on,
    f.keep_reason
from final as f
left join (
    select server_key, version_key, revoke_on,
        lead(revoke_on) over (partition by server_key, version_key order by revoke_on)
            as next_batch_on
    from (select distinct server_key, version_key, revoke_on from planned
        where revoke_on is not null)
) as n using (server_key, version_key, revoke_on)
left join (
    select license_server, version_key, any_value(product_version) as product_version,
        sum(installed)::bigint as installed, string_agg(distinct installed_from, ', ')
            as installed_from
    from revoke_pools group by all
) as p on p.license_server = f.server_key and p.version_key = f.version_key
order by f.server_key, f.version_key, f.action = 'keep', f.batch nulls last, f.issued_at;
