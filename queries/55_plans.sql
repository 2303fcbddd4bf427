-- Layer 4, plans: when the excess CALs come back on their own (cal_recovery) and which to
-- revoke first within the 20% allowance (revoke_plan).

-- The excess CALs still counted at the end of the data, with their product version.
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
        coalesce(k.product_version, (select any_value(product_version) from cal_pool))
            as product_version
    from wasteful as w
    join license_excess as l using (license_key)
    left join keypacks as k on k.keypack_id::varchar = l.keypack_id and k.per_device_permanent
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
-- product version. A revoked CAL keeps occupying the allowance until its own expiry, so
-- CALs revoked earlier (snapshots, events, trace) count too; event 81's counts are honoured.
-- A CAL that would expire before its turn is left to expire ('expires-first').
--   batch, revoke_on   the day's batch and the time from which it may be revoked
--   action             revoke | expires-first
--   license_key, license_id, keypack_id, client_name, hwid, cause, subject, issued_at,
--   expires_at (expiry_estimated: no snapshot showed it), product_version,
--   installed, revoke_limit (floor(installed * revoke_limit_share)),
--   occupied_after     revoked CALs still inside their validity after this step (<= limit)
--   next_batch_on      when the next batch is allowed
create or replace view revoke_plan as
with recursive pool as (
    select
        product_version,
        sum(installed) as installed,
        floor(sum(installed) * th('revoke_limit_share'))::bigint as revoke_limit
    from cal_pool
    group by product_version
),
start as (
    select as_of as t0 from as_of
),
revoked_known as (
    -- revoked CALs still inside their validity: they use up the allowance until then
    select
        coalesce(k.product_version, (select any_value(product_version) from cal_pool))
            as product_version,
        l.expires_at
    from licenses as l
    left join keypacks as k on k.keypack_id::varchar = l.keypack_id and k.per_device_permanent
    where (l.revoked_at is not null or l.revoked_in_snapshot)
        and l.expires_at > (select t0 from start)
),
refused as (
    -- the last refusal (event 81): %3 revoked of %4 installed, allowed again after %5
    select
        try_cast(data['param3'] as bigint) as revoked_count,
        time_created
    from licensing_events
    where action = 'revoke-refused'
    order by time_created desc
    limit 1
),
occupied as (
    -- known revoked CALs, plus placeholders for what event 81 says and we cannot see; a
    -- placeholder is held for the longest validity from the refusal
    select
        p.product_version,
        coalesce(
            (select list(r.expires_at) from revoked_known as r where r.product_version = p.product_version),
            []
        ) as known,
        greatest(
            coalesce((select revoked_count from refused), 0)
                - coalesce((select count(*) from revoked_known as r where r.product_version = p.product_version), 0),
            0
        ) as unseen
    from pool as p
),
start_state as (
    select
        o.product_version,
        list_concat(
            o.known,
            list_transform(range(o.unseen), lambda i: o.placeholder_expiry)
        ) as active
    from (
        select
            *,
            (select time_created from refused)
                + to_days(th('permanent_validity_max_days')::integer) as placeholder_expiry
        from occupied
    ) as o
),
candidates as (
    select
        row_number() over (partition by product_version order by issued_at, license_key) as k,
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
steps(product_version, k, slot_at, active, action) as (
    select
        s.product_version,
        0::bigint,
        t.t0,
        list_filter(s.active, lambda e: e > t.t0),
        'start'
    from start_state as s
    cross join start as t
    union all
    select
        c.product_version,
        c.k,
        n.slot_at,
        case
            when n.slot_at < c.expires_at
                then list_append(list_filter(p.active, lambda e: e > n.slot_at), c.expires_at)
            else list_filter(p.active, lambda e: e > n.slot_at)
        end,
        case when n.slot_at < c.expires_at then 'revoke' else 'expires-first' end
    from steps as p
    join candidates as c on c.product_version = p.product_version and c.k = p.k + 1
    join pool as l on l.product_version = p.product_version
    cross join lateral (
        -- the earliest time a slot is free: now if fewer than the limit are occupied, else
        -- when enough of the occupied ones expire
        select
            case
                when l.revoke_limit <= 0 then null
                when len(list_filter(p.active, lambda e: e > p.slot_at)) < l.revoke_limit then p.slot_at
                else list_sort(list_filter(p.active, lambda e: e > p.slot_at))[
                    len(list_filter(p.active, lambda e: e > p.slot_at)) - l.revoke_limit + 1
                ]
            end as slot_at
    ) as n
    where n.slot_at is not null
),
planned as (
    select
        s.product_version,
        s.k,
        s.slot_at,
        s.action,
        len(list_filter(s.active, lambda e: e > s.slot_at)) as occupied_after
    from steps as s
    where s.k > 0
),
batched as (
    -- slots free one by one as revoked CALs expire; an administrator revokes once a day:
    -- the day's batch is revoked once its last slot is free (the allowance holds then)
    select
        p.*,
        case when p.action = 'revoke'
            then max(p.slot_at) over (partition by p.product_version, p.action, p.slot_at::date)
        end as revoke_on
    from planned as p
),
final as (
    select
        case when b.action = 'revoke'
            then dense_rank() over (partition by b.product_version, b.action order by b.revoke_on::date)
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
        b.product_version,
        l.installed,
        l.revoke_limit,
        b.occupied_after
    from batched as b
    join candidates as c using (product_version, k)
    join pool as l using (product_version)
)
select
    f.*,
    -- the date the next batch is allowed (NULL after the last)
    (
        select min(f2.revoke_on)
        from final as f2
        where f2.product_version = f.product_version and f2.revoke_on > f.revoke_on
    ) as next_batch_on
from final as f
order by f.product_version, f.batch nulls last, f.issued_at;
