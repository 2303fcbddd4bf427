-- Layer 4, plans: when the excess CALs come back on their own (cal_recovery) and which to
-- revoke first within the 20% allowance (revoke_plan).

-- The product version of each license: its key pack's (a per-device pack of its server),
-- else, when no snapshot showed its key pack, one of its server's pool, else one of any
-- server's.
create or replace view license_versions as
select
    l.license_key,
    coalesce(
        k.product_version,
        v.product_version,
        (select any_value(product_version) from cal_pool)
    ) as product_version
from licenses as l
left join keypacks as k
    on k.license_server is not distinct from l.license_server
    and k.keypack_id::varchar = l.keypack_id
    and k.per_device_permanent
left join (
    select license_server, any_value(product_version) as product_version
    from cal_pool
    group by all
) as v on v.license_server is not distinct from l.license_server;

-- The excess CALs still counted at the end of the data, with their product version.
-- materialize: session
create or replace view excess_licenses as
with wasteful as (
    -- subjects of findings whose extra CALs are waste (duplicate names are not)
    select unnest(excess_licenses) as license_key, cause, subject
    from findings
    where waste and excess_licenses is not null
),
final as (
    select
        l.*,
        w.cause,
        w.subject,
        v.product_version
    from wasteful as w
    join license_excess as l using (license_key)
    left join license_versions as v using (license_key)
)
select * from final;

-- cal_recovery: per day from the end of the data, the excess CALs that stop counting by
-- expiry, how many are left, and the day the pool is healthy again (none left).
create or replace view cal_recovery as
with start as (
    select as_of::date as first_day from as_of
),
still_counted as (
    select *
    from excess_licenses
    where counted_now
),
days as (
    select unnest(generate_series(
        (select first_day from start),
        greatest(
            (select first_day from start),
            coalesce((select max(counted_until)::date from still_counted), (select first_day from start))
        ),
        interval 1 day
    ))::date as day
),
per_day as (
    select
        d.day,
        count(s.license_key) filter (where s.counted_until::date = d.day) as back_to_pool,
        count(s.license_key) filter (where s.counted_until::date = d.day and s.expiry_estimated)
            as back_estimated,
        count(s.license_key) filter (where s.counted_until::date = d.day and s.cal_type = 'permanent')
            as back_permanent
    from days as d
    left join still_counted as s on s.counted_until::date = d.day
    group by d.day
),
final as (
    select
        day,
        back_to_pool,
        back_permanent,
        back_estimated,
        (select count(*) from still_counted)
            - sum(back_to_pool) over (order by day rows between unbounded preceding and current row)
            as excess_left,
        (select coalesce(max(counted_until)::date, (select first_day from start)) from still_counted)
            as healthy_on
    from per_day
)
select * from final order by day;

-- revoke_plan: superseded (excess) permanent CALs of wasteful devices, oldest first, in
-- batches that never exceed revoke_limit_share (20%) of the installed per-device CALs of the
-- product version on the license server that issued them (each server's allowance is its
-- own; CALs of an unknown server are planned under '?', whose pool is empty unless key
-- packs of an unknown server were seen). A revoked CAL keeps occupying the allowance until
-- its own expiry, so CALs revoked earlier (snapshots, events, trace) count too; each
-- server's last event 81 is honoured. A CAL that would expire before its turn is left to
-- expire ('expires-first').
--   batch, revoke_on   the day's batch and the time from which it may be revoked
--   action             revoke | expires-first
--   license_key, license_id, keypack_id, client_name, hwid, cause, subject, issued_at,
--   expires_at (expiry_estimated: no snapshot showed it), license_server, product_version,
--   installed, revoke_limit (floor(installed * revoke_limit_share)),
--   occupied_after     revoked CALs still inside their validity after this step (<= limit)
--   next_batch_on      when the next batch is allowed
create or replace view revoke_plan as
with pool as (
    -- the allowance is each license server's own (it revokes what it issued)
    select
        coalesce(license_server, '?') as license_server,
        product_version,
        sum(installed)::bigint as installed,
        floor(sum(installed) * th('revoke_limit_share'))::bigint as revoke_limit
    from cal_pool
    group by all
),
start as (
    select as_of as t0 from as_of
),
revoked_known as (
    -- revoked CALs still inside their validity: they use up the allowance until then
    select
        coalesce(l.license_server, '?') as license_server,
        v.product_version,
        l.expires_at
    from licenses as l
    left join license_versions as v using (license_key)
    where (l.revoked_at is not null or l.revoked_in_snapshot)
        and l.expires_at > (select t0 from start)
),
refused as (
    -- each server's last refusal (event 81, logged by the server that refused):
    -- %3 revoked of %4 installed, allowed again after %5
    select
        coalesce(norm_name(license_server), norm_name(logged_by), '?') as license_server,
        arg_max(try_cast(data['param3'] as bigint), time_created) as revoked_count,
        max(time_created) as time_created
    from licensing_problems
    where action = 'revoke-refused'
    group by all
),
occupied as (
    -- known revoked CALs, plus placeholders for what event 81 says and we cannot see; a
    -- placeholder is held for the longest validity from the refusal
    select
        p.license_server,
        p.product_version,
        coalesce(
            (select list(r.expires_at) from revoked_known as r
             where r.license_server = p.license_server and r.product_version = p.product_version),
            []
        ) as known,
        greatest(
            coalesce(f.revoked_count, 0)
                - coalesce((select count(*) from revoked_known as r
                    where r.license_server = p.license_server
                        and r.product_version = p.product_version), 0),
            0
        ) as unseen,
        f.time_created + to_days(th('permanent_validity_max_days')::integer) as placeholder_expiry
    from pool as p
    left join refused as f using (license_server)
),
start_state as (
    select
        o.license_server,
        o.product_version,
        list_concat(
            o.known,
            list_transform(range(o.unseen), lambda i: o.placeholder_expiry)
        ) as active
    from occupied as o
),
candidates as (
    select
        row_number() over (partition by license_server, product_version order by issued_at, license_key) as k,
        coalesce(license_server, '?') as license_server,
        product_version,
        license_key,
        license_id,
        keypack_id,
        client_name,
        hwid,
        cause,
        subject,
        issued_at,
        counted_until as expires_at,
        expiry_estimated
    from excess_licenses
    where counted_now
        and cal_type = 'permanent'
        and revoked_at is null
        and not coalesce(revoked_in_snapshot, false)
),
-- The plan revokes the candidates in order, each at the earliest time (not before the
-- previous one) when fewer than the limit of revoked CALs are still inside their validity.
-- Candidate k's slot is therefore the earliest t >= t0 at which fewer than `limit` of the
-- occupied expiries and of candidates 1..k-1's expiries lie after t: the
-- (n - limit + 1)-th smallest of those n expiries (t0 when n < limit). A candidate left to
-- expire ('expires-first', its expiry not after its slot) changes no later count, so every
-- earlier candidate can be counted. The k-th smallest of a growing prefix comes from one
-- window function: linear in the candidates, not a step per candidate.
occupied_start as (
    -- the revoked CALs still counting at the start, one row each
    select s.license_server, s.product_version, unnest(list_filter(s.active, lambda e: e > t.t0)) as expires_at
    from start_state as s
    cross join start as t
),
line as (
    select license_server, product_version, 0::bigint as k, expires_at from occupied_start
    union all
    select license_server, product_version, k, expires_at from candidates
),
start_count as (
    select p.license_server, p.product_version, count(o.expires_at) as n
    from pool as p
    left join occupied_start as o using (license_server, product_version)
    group by p.license_server, p.product_version
),
slots as (
    select
        n.license_server,
        n.product_version,
        n.k,
        n.expires_at,
        case
            when n.kth_index <= 0 then t.t0
            else greatest(t.t0, n.kth)
        end as slot_at
    from (
        select
            l.*,
            -- the expiries before this candidate: the starting ones and candidates 1..k-1
            c.n + l.k - 1 - p.revoke_limit + 1 as kth_index,
            nth_value(l.expires_at, greatest(c.n + l.k - 1 - p.revoke_limit + 1, 1)
                order by l.expires_at) over (partition by l.license_server, l.product_version order by l.k
                rows between unbounded preceding and 1 preceding) as kth
        from line as l
        join pool as p using (license_server, product_version)
        join start_count as c using (license_server, product_version)
        where p.revoke_limit > 0
    ) as n
    cross join start as t
    where n.k > 0
),
-- revoked CALs inside their validity just after each step: the starting ones and the
-- candidates up to this one whose expiry lies after the slot (a candidate before this one
-- whose expiry is not after this slot is counted from the first slot at or after it)
start_ends as (
    select license_server, product_version, expires_at as moment, 0 as kind, null::bigint as k from occupied_start
    union all
    select license_server, product_version, slot_at, 1, k from slots
),
start_expired as (
    -- per step: the starting CALs whose expiry is not after its slot
    select license_server, product_version, k,
        -- (a running sum: DuckDB 2.0 takes seconds for count(*) FILTER over this frame)
        (sum((kind = 0)::integer) over (partition by license_server, product_version
            order by moment, kind rows between unbounded preceding and current row))::bigint as n
    from start_ends
    qualify kind = 1
),
cand_ends as (
    select license_server, product_version, expires_at as moment, 0 as kind, k from slots
    union all
    select license_server, product_version, slot_at, 1, k from slots
),
gone_from as (
    -- per candidate: the first step whose slot is at or after its expiry
    select license_server, product_version, k,
        case when first_step is not null then greatest(k, first_step) end as step
    from (
        select
            *,
            first_value(case when kind = 1 then k end ignore nulls) over (
                partition by license_server, product_version order by moment, kind, k
                rows between current row and unbounded following) as first_step
        from cand_ends
    )
    where kind = 0
),
cand_expired as (
    select s.license_server, s.product_version, s.k,
        coalesce(sum(g.n) over (partition by s.license_server, s.product_version order by s.k
            rows between unbounded preceding and current row), 0) as n
    from slots as s
    left join (
        select license_server, product_version, step as k, count(*) as n
        from gone_from
        where step is not null
        group by all
    ) as g using (license_server, product_version, k)
),
planned as (
    select
        s.license_server,
        s.product_version,
        s.k,
        s.slot_at,
        case when s.slot_at < s.expires_at then 'revoke' else 'expires-first' end as action,
        n.n - coalesce(x.n, 0) + s.k - c.n as occupied_after
    from slots as s
    join start_count as n using (license_server, product_version)
    left join start_expired as x using (license_server, product_version, k)
    join cand_expired as c using (license_server, product_version, k)
),
batched as (
    -- slots free one by one as revoked CALs expire; an administrator revokes once a day:
    -- the day's batch is revoked once its last slot is free (the allowance holds then)
    select
        p.*,
        case when p.action = 'revoke'
            then max(p.slot_at) over (partition by p.license_server, p.product_version, p.action, p.slot_at::date)
        end as revoke_on
    from planned as p
),
final as (
    select
        case when b.action = 'revoke'
            then dense_rank() over (partition by b.license_server, b.product_version, b.action order by b.revoke_on::date)
        end as batch,
        b.revoke_on,
        b.action,
        c.license_key,
        c.license_id,
        c.keypack_id,
        c.client_name,
        c.hwid,
        c.cause,
        c.subject,
        c.issued_at,
        c.expires_at,
        c.expiry_estimated,
        b.license_server,
        b.product_version,
        l.installed,
        l.revoke_limit,
        b.occupied_after::bigint as occupied_after
    from batched as b
    join candidates as c using (license_server, product_version, k)
    join pool as l using (license_server, product_version)
)
select
    f.*,
    -- the date the next batch is allowed (NULL after the last)
    n.next_batch_on
from final as f
left join (
    select
        license_server,
        product_version,
        revoke_on,
        lead(revoke_on) over (partition by license_server, product_version order by revoke_on)
            as next_batch_on
    from (
        select distinct license_server, product_version, revoke_on
        from final
        where revoke_on is not null
    )
) as n using (license_server, product_version, revoke_on)
order by f.license_server, f.product_version, f.batch nulls last, f.issued_at;
