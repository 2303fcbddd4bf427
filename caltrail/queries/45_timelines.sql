-- Layer 3, timelines: what each HWID and each computer name did, with the names seen for a
-- HWID, the HWIDs seen for a name, each license's life, gaps and overlaps.

-- Device activity: facts a client causes by connecting (not snapshots, expiries or an
-- administrator's revocation), with the HWID, name and user it was seen with (a WMI
-- renewal is the earliest time the changed expiry allows). A license whose issue no source
-- dates (the seed's per-device export and the per-device report have no IssueDate) stands
-- by its first listing: its device held it, under that name and HWID, by then.
-- materialize: lake
-- patched per device: 'name' client_name, 'license' license_key
-- per device: 'name' client_name, 'hwid' hwid, 'license' license_key
create or replace view activity as
with facts as (
    select
        ts, fact, source, license_key, license_server, client_name, hwid, hwid_flag,
        user_name, cal_type, recovered,  -- recovered: an EVTX record read from chunk slack
        source_path, source_line
    from cal_events
    where fact in ('requested', 'issued', 'upgraded', 'renewed', 'denied', 'seen', 'listed')
        and ts is not null
        and (hwid is not null or client_name is not null)
),
undated as (
    select license_key from facts where fact = 'listed' and license_key is not null
    except
    select license_key from facts where fact in ('issued', 'upgraded')
)
select * from facts where fact <> 'listed'
union all
select f.*
from facts as f
semi join undated as u using (license_key)
where f.fact = 'listed'
qualify row_number() over (partition by f.license_key order by f.ts, f.source_line) = 1;

-- Every fact about a license plus the end of its life (expired, upgraded away, revoked,
-- database rebuilt), in time order: the rows both timeline macros show.
create or replace view license_life as
select
    e.ts,
    e.fact,
    e.source,
    e.license_key,
    e.client_name,
    e.hwid,
    e.user_name,
    e.cal_type,
    e.detail,  -- says "recovered from slack" for an EVTX record read from chunk slack
    e.source_path,
    e.source_line
from cal_events as e
where e.fact not in ('expires', 'listed')
union all
select
    l.counted_until as ts,
    case
        when not l.counted then 'never-counted'
        when l.counted_until = l.replaced_at then 'replaced-by-upgrade'
        when l.counted_until = l.revoked_at then 'stops-counting-revoked'
        when l.counted_until = l.db_rebuilt_at then 'lost-in-db-rebuild'
        when l.counted_until = l.unlisted_at then 'gone-from-listing'
        when l.expiry_estimated then 'expires-estimated'
        else 'expires'
    end as fact,
    'derived' as source,
    l.license_key,
    l.client_name,
    l.hwid,
    l.user_name,
    l.cal_type,
    'issued ' || strftime(l.issued_at, '%Y-%m-%d') as detail,
    null as source_path,
    null as source_line
from licenses as l;

-- hwid_timeline('02000000...'): the history of one HWID (any rendering accepted:
-- case and separators are normalised), name changes and gaps by window functions.
create or replace macro hwid_timeline(wanted_hwid) as table
with source as (
    select *
    from license_life
    where hwid = lower(regexp_replace(wanted_hwid, '[^0-9A-Fa-f]', '', 'g'))
),
ordered as (
    select
        *,
        lag(client_name) over w as previous_name,
        lag(ts) over w as previous_ts
    from source
    window w as (order by ts nulls first, fact)
)
select
    ts,
    fact,
    source,
    license_key,
    client_name,
    user_name,
    cal_type,
    client_name is distinct from previous_name and previous_name is not null as name_changed,
    round(epoch(ts - previous_ts) / 86400.0, 2) as gap_days,
    detail,
    source_path,
    source_line
from ordered
order by ts nulls first, fact;

-- name_timeline('BER-PC0001'): the history of one computer name (normalised like every
-- name), HWID changes, gaps, and how many HWIDs of this name held a counted CAL then.
-- (The parameters have names no view uses: a column of that name in any view a macro reads
-- fails to bind, "Conflicting column names".)
create or replace macro name_timeline(wanted_name) as table
with source as (
    select *
    from license_life
    where client_name = norm_name(wanted_name)
),
held as (
    select
        hwid,
        issued_at,
        counted_until
    from licenses
    where client_name = norm_name(wanted_name) and hwid is not null
),
ordered as (
    select
        s.*,
        lag(s.hwid) over w as previous_hwid,
        lag(s.ts) over w as previous_ts
    from source as s
    window w as (order by s.ts nulls first, s.fact)
)
select
    o.ts,
    o.fact,
    o.source,
    o.license_key,
    o.hwid,
    o.user_name,
    o.cal_type,
    o.hwid is distinct from o.previous_hwid and o.previous_hwid is not null as hwid_changed,
    round(epoch(o.ts - o.previous_ts) / 86400.0, 2) as gap_days,
    (
        select count(distinct h.hwid)
        from held as h
        where h.issued_at <= o.ts and o.ts < h.counted_until
    ) as hwids_holding_cals,
    o.detail,
    o.source_path,
    o.source_line
from ordered as o
order by o.ts nulls first, o.fact;

-- devices: one row per HWID.
create or replace view devices as
with names_of as (
    select
        hwid,
        list(distinct client_name order by client_name) filter (where client_name is not null)
            as names,
        min(ts) as first_seen,
        max(ts) as last_seen,
        count(distinct ts::date) as active_days,
        list(distinct source order by source) as sources
    from activity
    where hwid is not null
    group by hwid
),
client_side as (
    select
        hwid,
        list(distinct client_name order by client_name) as client_names
    from cal_events
    where source = 'client'
    group by hwid
),
held as (
    select
        hwid,
        count(*) as licenses,
        count(*) filter (where cal_type = 'permanent') as permanent_licenses,
        count(*) filter (where counted_until > (select as_of from as_of)) as cals_held_now,
        min(issued_at) as first_issued,
        max(issued_at) as last_issued
    from licenses
    where hwid is not null
    group by hwid
),
final as (
    select
        coalesce(n.hwid, h.hwid, c.hwid) as hwid,
        case
            when coalesce(n.hwid, h.hwid, c.hwid) = th_text('freerdp_legacy_hwid')
                then 'freerdp_legacy'
            when hwid_store_app(coalesce(n.hwid, h.hwid, c.hwid)) then 'store_app_ff'
        end as hwid_flag,
        list_sort(list_distinct(list_concat(coalesce(n.names, []), coalesce(c.client_names, []))))
            as names,
        n.first_seen,
        n.last_seen,
        coalesce(n.active_days, 0) as active_days,
        coalesce(h.licenses, 0) as licenses,
        coalesce(h.permanent_licenses, 0) as permanent_licenses,
        coalesce(h.cals_held_now, 0) as cals_held_now,
        h.first_issued,
        h.last_issued,
        list_sort(list_distinct(list_concat(
            coalesce(n.sources, []), case when c.hwid is not null then ['client'] else [] end
        ))) as sources
    from names_of as n
    full join held as h using (hwid)
    full join client_side as c using (hwid)
)
select
    *,
    len(names) as name_count
from final;

-- names: one row per normalised computer name.
create or replace view names as
with seen as (
    select
        client_name,
        list(distinct hwid order by hwid) filter (where hwid is not null) as hwids,
        min(ts) as first_seen,
        max(ts) as last_seen,
        count(*) filter (where fact = 'issued') as issue_facts,
        list(distinct source order by source) as sources
    from activity
    where client_name is not null
    group by client_name
),
client_side as (
    select
        client_name,
        list(distinct hwid order by hwid) as registry_hwids
    from cal_events
    where source = 'client' and client_name is not null
    group by client_name
),
held as (
    select
        client_name,
        count(*) as licenses,
        count(*) filter (where cal_type = 'permanent') as permanent_licenses,
        count(*) filter (where counted_until > (select as_of from as_of)) as cals_held_now,
        max(issued_at) as last_issued
    from licenses
    where client_name is not null
    group by client_name
),
final as (
    select
        coalesce(s.client_name, h.client_name, c.client_name) as client_name,
        list_sort(list_distinct(list_concat(coalesce(s.hwids, []), coalesce(c.registry_hwids, []))))
            as hwids,
        coalesce(c.registry_hwids, []) as registry_hwids,
        s.first_seen,
        s.last_seen,
        coalesce(s.issue_facts, 0) as issue_facts,
        coalesce(h.licenses, 0) as licenses,
        coalesce(h.permanent_licenses, 0) as permanent_licenses,
        coalesce(h.cals_held_now, 0) as cals_held_now,
        h.last_issued,
        list_sort(list_distinct(list_concat(
            coalesce(s.sources, []),
            case when c.client_name is not null then ['client'] else [] end
        ))) as sources
    from seen as s
    full join held as h using (client_name)
    full join client_side as c using (client_name)
)
select
    *,
    len(hwids) as hwid_count
from final;
