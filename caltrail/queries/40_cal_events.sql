-- Layer 2, CAL facts: every CAL fact of every source on one UTC time axis (cal_events).
-- One view per source of facts (trace, WMI snapshots, client exports, EVTX), the license
-- each fact belongs to, and a short union.
--
-- Reads: the snapshots, servers, thresholds and license keys of 38_snapshots.sql,
-- client_hwids (10), licensing_events (30), trace_licensing (35).

-- The time the data ends: the last record of any source (the "now" of plans), among the
-- committed rows (those of visible_runs, as every source view shows). Each table's files are
-- read for its time column alone, without union_by_name (every file has it): most views above
-- read as_of, and union_by_name opened every file of the four tables each time one of them
-- was defined. EVTX records are read before their deduplication: copies share their time.
create or replace macro committed_files(table_name) as
    getvariable('lake') || '/' || table_name || '/*.parquet';

-- (Each run's last time is taken before its run is looked up: joined row by row, DuckDB
-- built its hash table of the 3 M events of 50,000 devices rather than of the 10,000 runs,
-- 0.45 s instead of 0.06.)
-- materialize: lake
create or replace view as_of as
with last_of_runs as (
    select file_sha256, run_id, max(ts) as last
    from read_parquet(committed_files('trace_events')) group by all
    union all
    select file_sha256, run_id, max(time_created)
    from read_parquet(committed_files('events')) group by all
    union all
    select file_sha256, run_id, max(snapshot_time)
    from read_parquet(committed_files('issued_licenses')) group by all
    union all
    select file_sha256, run_id, max(snapshot_time)
    from read_parquet(committed_files('keypacks')) group by all
)
select max(r.last) as as_of
from last_of_runs as r
semi join visible_runs as v using (file_sha256, run_id);

-- Trace facts: each licensing message with the operation it names. A message naming no
-- operation is a fact too when it pairs a computer name with a HWID or names a license
-- ('seen': that device dealt with the license server then) [U: the wording of the license
-- server's trace is not public].
create or replace view cal_facts_trace as
select
    t.ts,
    case
        when t.operation = 'request' then 'requested'
        when t.operation in ('issue-temporary', 'issue-permanent') then 'issued'
        when t.operation = 'upgrade' then 'upgraded'
        when t.operation = 'renew' then 'renewed'
        when t.operation = 'revoke' and lower(coalesce(t.result, '')) in ('success', 'ok', '')
            then 'revoked'
        when t.operation = 'revoke' then 'revoke-refused'
        when t.operation = 'deny' then 'denied'
        when t.operation is null then 'seen'
    end as fact,
    'trace' as source,
    s.license_server,
    t.license_id,
    t.keypack_id,
    rebuild_generation(g.times, s.license_server, t.ts) as generation,
    t.client_name,
    t.client_name_raw,
    t.hwid,
    t.hwid_raw,
    t.user_name,
    case
        when t.operation = 'issue-temporary' then 'temporary'
        when t.operation in ('issue-permanent', 'upgrade') then 'permanent'
    end as cal_type,
    null::varchar as product_version,
    null::timestamptz as expires,
    null::varchar as session_host,
    null::varchar as machine,
    coalesce(t.result, '') as detail,
    -- the line itself names a key pack (an issue or renewal line; a request names only the
    -- license the client presented)
    t.keypack_id is not null as names_keypack,
    t.source_path,
    t.line as source_line,
    t.file_sha256
from trace_licensing as t
left join file_license_servers as s using (file_sha256)
cross join (select rebuild_times() as times) as g
where t.operation in (
        'request', 'issue-temporary', 'issue-permanent', 'upgrade', 'renew', 'revoke', 'deny'
    )
    or (t.operation is null
        and ((t.client_name is not null and t.hwid is not null) or t.license_id is not null));

-- The snapshot listings of each license in time order, with the listing before.
create or replace view listing_steps as
select
    l.*,
    k.kind as status_kind,
    lag(l.expiration_date) over w as previous_expiry,
    lag(l.snapshot_time) over w as previous_snapshot,
    lag(k.kind) over w as previous_kind,
    row_number() over w as nth,
    -- (over w, in the same sort: a window of its own sorted the listings again)
    l.snapshot_time is not distinct from max(l.snapshot_time) over (
        w rows between unbounded preceding and unbounded following
    ) as latest
from snapshot_listings as l
left join license_status as k on k.status = l.license_status
window w as (partition by l.license_key order by l.snapshot_time);

-- WMI facts: what each listing says, dated where it happened, never back-dated: 'listed'
-- (that snapshot's name, user, HWID, status, expiry), 'issued' (IssueDate, when exported),
-- 'expires', 'renewed' (the expiry moved later since the listing before: at the earliest
-- time the renewal can have happened, so a renewal is never placed earlier than it was;
-- or, at the first listing, an expiry further from the issue than the longest validity),
-- 'revoked' (the first listing with status Revoked).
-- (Each listing's facts are a list unnested and filtered: as a lateral union, DuckDB joined
-- every listing back to its facts on all of its columns, 0.27 s for 120,000 listings.)
-- Computed once for a new state, not kept: they are of the whole fleet (each listing read
-- beside the one before), and three computations read them (the server keys, the facts of
-- a batch's files and of its devices), each computing them whole again (the window and the
-- unnest, 0.2-0.4 s each at 50,000 devices). Kept, writing them cost more than that.
-- materialize: state
create or replace view cal_facts_wmi as
with facts as (
    select
        l.*,
        unnest([
            {'ts': l.snapshot_time, 'fact': 'listed', 'detail': null::varchar, 'given': true},
            {
                'ts': l.issue_date, 'fact': 'issued', 'detail': null,
                'given': l.nth = 1 and l.issue_date is not null
            },
            {
                'ts': l.expiration_date, 'fact': 'expires', 'detail': null,
                'given': l.latest and not coalesce(l.expiration_never, false)
            },
            {
                'ts': greatest(
                    l.previous_snapshot,
                    l.expiration_date - to_days(th('permanent_validity_max_days')::integer),
                    l.previous_expiry - to_days(th('renew_window_days')::integer)
                ),
                'fact': 'renewed',
                'detail': 'the expiry moved from ' || strftime(l.previous_expiry, '%Y-%m-%d')
                    || ': renewed at the earliest then',
                'given': l.previous_expiry is not null
                    and l.expiration_date > l.previous_expiry + interval 1 day
                    and coalesce(l.status_kind, '') <> 'temporary'
            },
            {
                'ts': l.expiration_date - to_days(th('permanent_validity_max_days')::integer),
                'fact': 'renewed',
                'detail': 'earliest renewal implied by the expiry date',
                'given': l.nth = 1
                    and coalesce(l.status_kind, 'permanent') = 'permanent'
                    and not coalesce(l.expiration_never, false)
                    and l.expiration_date - to_days(th('permanent_validity_max_days')::integer)
                        > l.issue_date + interval 1 day
            },
            {
                'ts': l.snapshot_time, 'fact': 'revoked',
                'detail': 'status Revoked in the snapshot',
                'given': l.status_kind = 'revoked' and coalesce(l.previous_kind, '') <> 'revoked'
            }
        ]) as f
    from listing_steps as l
)
select
    f.ts,
    f.fact,
    'wmi' as source,
    l.license_server,
    l.license_key,
    l.license_id::varchar as license_id,
    l.keypack_id::varchar as keypack_id,
    l.generation,
    l.client_name,
    l.issued_to_computer as client_name_raw,
    l.hwid,
    l.hwid_raw,
    l.issued_to_user as user_name,
    case
        when l.status_kind in ('temporary', 'permanent') then l.status_kind
        when l.cal_type ilike '%temporary%' then 'temporary'
        when l.cal_type is not null then 'permanent'
    end as cal_type,
    l.product_version,
    l.expiration_date as expires,
    null::varchar as session_host,
    null::varchar as machine,
    coalesce(f.detail, l.license_status_name, l.cal_type, '') as detail,
    l.source_path,
    l.line as source_line,
    l.file_sha256
from facts as l
where f.given;

-- A license a later full listing of its server no longer shows has left the database by
-- then (expired early, upgraded, revoked or deleted): 'unlisted' at that snapshot, with the
-- fields of its latest listing.
create or replace view cal_facts_unlisted as
select
    min(f.snapshot_time) as ts,
    'unlisted' as fact,
    'wmi' as source,
    l.license_server,
    l.license_key,
    any_value(l.license_id)::varchar as license_id,
    any_value(l.keypack_id)::varchar as keypack_id,
    any_value(l.generation) as generation,
    any_value(l.client_name) as client_name,
    any_value(l.issued_to_computer) as client_name_raw,
    any_value(l.hwid) as hwid,
    any_value(l.hwid_raw) as hwid_raw,
    any_value(l.issued_to_user) as user_name,
    'not in the full listing of ' || strftime(min(f.snapshot_time), '%Y-%m-%d') as detail,
    any_value(l.source_path) as source_path,
    any_value(l.line) as source_line,
    any_value(l.file_sha256) as file_sha256
from snapshot_listings as l
-- each license's latest listing (a listing of no time is no later than any)
semi join (
    select license_key, max(snapshot_time) as snapshot_time from snapshot_listings group by all
) as latest using (license_key, snapshot_time)
join full_snapshots as f
    on f.license_server is not distinct from l.license_server
    and f.snapshot_time > l.snapshot_time
where l.full_listing
group by l.license_server, l.license_key, l.expiration_date
having min(f.snapshot_time) < l.expiration_date;

-- Client facts: a HWID a client holds (registry export, TSCTST output). `machine` is the
-- folder the export came from: collectors write each machine's export into a folder of its
-- own, so two folders of one name are two machines (or one collected twice). TSCTST also
-- says which CAL the client holds: its issuer (the license server), its dates (`expires`),
-- its product; the client platform id is kept in `detail` (its meaning is not public).
-- per device: 'name' client_name, 'hwid' hwid, 'file' file_sha256
create or replace view cal_facts_client as
select
    valid_from as ts,
    'client-hwid' as fact,
    'client' as source,
    norm_name(issuer) as license_server,
    license_id,
    null::varchar as keypack_id,
    null::bigint as generation,
    client_name_norm as client_name,
    client_name as client_name_raw,
    hwid,
    hwid_raw,
    issued_to_user as user_name,
    null::varchar as cal_type,
    null::varchar as product_version,
    expires_on as expires,
    null::varchar as session_host,
    regexp_replace(source_path, '[/\\][^/\\]*$', '') as machine,
    source_kind || coalesce(' ' || key_path, '')
        || coalesce('; issuer ' || issuer, '') || coalesce('; platform ' || platform_id, '')
        as detail,
    source_path,
    line as source_line,
    file_sha256
from client_hwids
where hwid is not null and not coalesce(deleted, false);

-- EVTX facts (license-server and session-host events about a device), before they are
-- tied to a license. The product version comes from the CAL type ("Windows Server 2019 :
-- RDS Per Device CAL") or the event's product field (80, 81, 82: the new version).
-- `recovered`: read from chunk slack (docs/EVTX_RECOVERY.md). A recovered record whose
-- payload could not be rendered (its EventData template gone: `data` empty) is its event id
-- and time only: it names no device, user, host or CAL type, so it is never a name or HWID
-- fact and is tied to no license. (After a batch, cal_events reads it over the licensing
-- records of the devices the batch touched.)
create or replace view cal_facts_evtx as
with evtx_rows as (
    select *, coalesce(recovered and coalesce(cardinality(data), 0) = 0, false) as payload_lost
    from licensing_events
)
select
    time_created as ts,
    case action
        when 'issued-vdi' then 'issued'
        when 'temp-license-expired' then 'temp-expired'
        else action
    end as fact,
    'evtx' as source,
    case when not payload_lost then client_name end as client_name,
    case when not payload_lost then client_name_raw end as client_name_raw,
    case when not payload_lost then user_name end as user_name,
    case
        when payload_lost then null
        when cal_type ilike '%temporary%' then 'temporary'
        when cal_type is not null then 'permanent'
    end as cal_type,
    case when not payload_lost then coalesce(product,
        case when cal_type like '%:%' then trim(split_part(cal_type, ':', 1)) end) end
        as product_version,
    case when not payload_lost then session_host end as session_host,
    coalesce(cal_type || ': ', '') || action || ' (event ' || event_id || ')'
        || case when event_id = 82 and product_key(data['param1']) <> product_key(data['param4'])
            then '; version ' || data['param1'] || ' -> ' || data['param4'] else '' end
        || case
            when payload_lost then '; recovered from slack without its payload: event id and time only'
            when recovered then '; recovered from slack'
            else ''
        end as detail,
    norm_name(logged_by) as logged_by_server,
    recovered,
    source_path,
    record_id as source_line,
    file_sha256
from evtx_rows
where action in (
    'issued', 'issued-vdi', 'renewed', 'upgraded', 'revoked', 'revoke-refused',
    'invalid-license', 'temp-license-expired', 'renew-failed'
);

-- Trace and WMI facts before a request is given the key pack of its license id. license_key:
-- the fact's own (a listing's key; a trace line naming its key pack: '<server>/g<generation>/
-- <keypack>/<license id>'), NULL where the fact names none. license_triple: the server,
-- generation and id a license is known by before its key pack is (facts sharing it may give
-- each other their key pack). After a batch, its rows of the touched devices are computed
-- from the trace facts of their names (and those naming none): a fact of a touched license
-- or license id names a touched name, since the devices of each fact are linked
-- (caltrail/pipeline/patch.py).
-- per device: 'name' client_name, 'hwid' hwid, 'license' license_key, 'triple' license_triple, 'file' file_sha256
create or replace view cal_facts_unkeyed as
with both_facts as (
    select * from cal_facts_trace
    union all by name
    select * from cal_facts_wmi
    union all by name
    select * from cal_facts_unlisted
)
select
    * exclude (license_key),
    coalesce(
        license_key,
        case when keypack_id is not null then
            license_key_of(license_server, generation, keypack_id, license_id) end
    ) as license_key,
    license_triple_of(license_server, generation, license_id) as license_triple
from both_facts;

-- The servers some trace or WMI fact keys a license of (with a name and a time: the facts
-- an EVTX fact can be linked to; '?' for facts of an unknown server). An EVTX event
-- logged by one of these servers is linked to its facts only; one logged by another
-- server to the facts of an unknown server. (A view of its own, not a part of cal_events:
-- it is of the whole fleet, and cal_events is also computed for a few devices alone.)
-- materialize: lake
create or replace view keyed_servers as
select distinct coalesce(license_server, '?') as server
from cal_facts_unkeyed
where license_id is not null and client_name is not null and ts is not null;

-- Trace and WMI facts with the license they belong to. A request names the license the
-- client presented by its id only: its key pack is the one another fact of the same server
-- and generation gives that id (the least, when facts give several). Computed once for a
-- new state, not kept: cal_events reads it. After a batch, the rows of the devices the
-- batch touched are computed alone, from theirs of cal_facts_unkeyed: every fact of a
-- license id they touch is among them (caltrail/pipeline/patch.py).
-- materialize: state
-- patched per device: 'name' client_name, 'license' license_key, 'triple' license_triple, 'file' file_sha256
create or replace view cal_facts_keyed as
with both_facts as (
    select * from cal_facts_unkeyed
),
keypack_of as (
    select license_server, generation, license_id, min(keypack_id) as keypack_id
    from both_facts
    where keypack_id is not null and license_id is not null
    group by all
)
select
    b.* exclude (keypack_id, license_key, license_triple),
    coalesce(b.keypack_id, k.keypack_id) as keypack_id,
    coalesce(
        b.license_key,
        license_key_of(b.license_server, b.generation, k.keypack_id, b.license_id)
    ) as license_key,
    b.license_triple
from both_facts as b
left join keypack_of as k
    on k.license_server is not distinct from b.license_server
    and k.generation is not distinct from b.generation
    and k.license_id = b.license_id
    and b.license_key is null;

-- cal_events: every CAL fact from every source, one UTC axis.
--   fact: requested | issued | upgraded | renewed | revoked | revoke-refused | denied |
--         seen | expires | listed | unlisted | client-hwid | invalid-license |
--         temp-expired | renew-failed
--   source: wmi | trace | evtx | client
--   license_server: the server that issued the license (norm_name): a snapshot's server,
--         a trace file's (file_license_servers), a client's CAL issuer; NULL when unknown
--   license_key: the issuance this fact belongs to
--         ('<server>/g<generation>/<keypack>/<license id>', '?' for an unknown server; a
--         per-device report entry without a license id: '<server>/g<generation>/r/...'),
--         for EVTX events taken from the trace or WMI fact they were linked to;
--         NULL when nothing ties the fact to one license.
--   product_version: as the fact names it (EVTX CAL type or product, report entry)
--   machine: the folder a client export came from (client facts)
--   linked_by: how an EVTX fact was tied to a license ('name+time' within
--         link_tolerance_seconds of a trace or WMI fact of the same kind and name).
--   recovered: an EVTX fact read from chunk slack (false for every other source).
-- An EVTX fact takes the license of the closest trace/WMI fact of the same kind and name
-- (within link_tolerance_seconds; at equal distance the earlier fact, among facts at one
-- time the smallest key), of the server whose log holds the event ('?' when no fact is
-- keyed by that server). A trace line naming no operation but a license and its key pack
-- stands for any kind. The closest fact before and after each EVTX fact come from window
-- functions over one time line per (name, kind, server): linear in the facts. (The keyed
-- facts are read once, in the first CTE: a view named twice is bound twice.)
-- Every layer above reads it many times: computed once per state of the lake and kept in
-- LAKE/_derived; after a batch ingest, the facts of the devices it touched are computed
-- again and the others kept (caltrail/pipeline/patch.py).
-- materialize: lake
-- patched per device: 'name' client_name, 'license' license_key, 'file' file_sha256
-- per device: 'name' client_name, 'hwid' hwid, 'license' license_key, 'file' file_sha256
create or replace view cal_events as
with keyed as (select * from cal_facts_keyed),
evtx as (select *, row_number() over () as evtx_row from cal_facts_evtx),
points as (
    select client_name, k.kind as fact, coalesce(license_server, '?') as server, ts,
        min(license_key) as license_key
    from keyed, lateral (select unnest(case when fact = 'seen' and names_keypack
        then ['issued', 'renewed', 'upgraded'] else [fact] end) as kind) as k
    where license_id is not null and client_name is not null and ts is not null
    group by all
),
line as (
    select client_name, fact, server, ts, {'ts': ts, 'key': license_key} as point,
        null::bigint as evtx_row
    from points
    union all
    select e.client_name, e.fact, coalesce(s.server, '?'), e.ts, null, e.evtx_row
    from evtx as e
    left join keyed_servers as s on s.server = e.logged_by_server
    where e.client_name is not null and e.ts is not null
),
nearest as (
    -- a trace/WMI fact at the very time of the EVTX fact sorts before it
    select evtx_row, ts,
        last_value(point ignore nulls) over (w rows between unbounded preceding and current row)
            as before,
        first_value(point ignore nulls) over (w rows between current row and unbounded following)
            as after
    from line
    window w as (partition by client_name, fact, server order by ts, evtx_row nulls first)
    qualify evtx_row is not null
),
chosen as (
    select n.evtx_row, case
        when n.before.ts >= n.ts - t.tolerance
            and (n.after is null or n.after.ts > n.ts + t.tolerance
                or epoch(n.ts) - epoch(n.before.ts) <= epoch(n.after.ts) - epoch(n.ts))
            then n.before.key
        when n.after.ts <= n.ts + t.tolerance then n.after.key
    end as license_key
    from nearest as n
    cross join (select to_seconds(th('link_tolerance_seconds')::bigint) as tolerance) as t
),
keyed_info as (
    -- one HWID rendering, the same every time (trace and WMI may render one HWID apart)
    select license_key, any_value(license_server) as license_server,
        any_value(license_id) as license_id, any_value(keypack_id) as keypack_id,
        any_value(generation) as generation, any_value(hwid) as hwid, min(hwid_raw) as hwid_raw
    from keyed group by license_key
),
final as (
    select * exclude (names_keypack), null::varchar as linked_by from keyed
    union all by name
    select e.* exclude (evtx_row, logged_by_server), c.license_key,
        k.license_server, k.license_id, k.keypack_id, k.generation, k.hwid, k.hwid_raw,
        case when c.license_key is not null then 'name+time' end as linked_by
    from evtx as e
    left join chosen as c using (evtx_row)
    left join keyed_info as k on k.license_key = c.license_key
    union all by name
    select *, null::varchar as license_key, null::varchar as linked_by from cal_facts_client
)
select
    ts, fact, source, license_server, license_key, license_id, keypack_id, generation,
    client_name, client_name_raw, hwid, hwid_raw,
    case
        when hwid = th_text('freerdp_legacy_hwid') then 'freerdp_legacy'
        when hwid_store_app(hwid) then 'store_app_ff'
    end as hwid_flag,
    user_name, cal_type, product_version, expires, session_host, machine, detail, linked_by,
    coalesce(recovered, false) as recovered, source_path, source_line, file_sha256
from final;

-- The devices each CAL fact names (its computer name, license, license id and HWID), one
-- row per distinct set: what the devices a batch touched are closed over
-- (caltrail/queries/patch/closure.sql, which read the 4 M facts for them: 0.9 s at 50,000
-- devices). license_triple: as cal_facts_unkeyed's, of the trace and WMI facts.
-- materialize: lake
-- patched per device: 'name' client_name, 'license' license_key, 'triple' license_triple
create or replace view cal_links as
select distinct
    client_name,
    license_key,
    case when source in ('trace', 'wmi') then
        license_triple_of(license_server, generation, license_id)
    end as license_triple,
    hwid
from cal_events
where client_name is not null or license_key is not null;
