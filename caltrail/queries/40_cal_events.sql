-- Layer 2, CAL facts: snapshots deduplicated, the key-pack pool, and every CAL fact of every
-- source on one UTC time axis (cal_events), linked per issuance (licenses).
--
-- Reads: issued_license_rows, keypack_rows, client_hwids (10), licensing_events (30),
-- trace_licensing (35) and the named thresholds of diagnosis_thresholds.csv.

-- Named thresholds, one place to change them (queries/diagnosis_thresholds.csv, copied to
-- LAKE/_ref), read once per session into a table. th('name') is the numeric value,
-- th_text('name') the text.
create or replace table diagnosis_thresholds as
select
    name,
    value,
    unit,
    meaning
from read_csv(
    getvariable('ref_dir') || '/diagnosis_thresholds.csv',
    header = true,
    all_varchar = true,
    quote = '"'
);

create or replace macro th(n) as
    (select try_cast(value as double) from diagnosis_thresholds where name = n);

create or replace macro th_text(n) as
    (select value from diagnosis_thresholds where name = n);

-- The license servers the lake names (norm_name): the servers of WMI snapshots and the
-- computers whose logs hold license-server events. Each server's database numbers its own
-- key packs and licenses, so a license is keyed by its server first.
create or replace view license_servers as
select license_server
from (
    select norm_name(license_server) as license_server from issued_license_rows
    union
    select norm_name(license_server) from keypack_rows
    union
    select norm_name(computer)
    from events_all
    where licensing_provider_family(provider, event_source_name) = 'licensing'
)
where license_server is not null;

-- The license server whose trace a file is. A trace dump does not name its server, but
-- collectors name files and folders after the host ("LS01_lserver_trace.txt", "LS01/..."):
--   'path'        the part of the path nearest the file name that is a known license
--                 server's name (parts split at anything a computer name cannot hold);
--   'content'     else the server whose snapshots list more of the file's licenses (same
--                 license id and HWID) than any other server's do;
--   'only server' else, when the lake knows one license server only, that one;
--   NULL          else: the file's facts are keyed under the unknown server '?'.
-- materialize: lake
create or replace view file_license_servers as
with servers as (
    select coalesce(list(distinct license_server), []) as names from license_servers
),
named as (
    select
        f.sha256 as file_sha256,
        -- the path's parts from the file name up; the first that names a server
        min(list_filter(
            list_reverse(regexp_split_to_array(upper(f.path), '[^A-Z0-9-]+')),
            lambda part: list_contains(s.names, part)
        )[1]) as by_path,
        any_value(s.names) as names
    from ingest_files as f
    cross join servers as s
    group by f.sha256
),
unnamed_traces as (
    -- the trace licenses (id, HWID) of files their path does not attribute (none, usually)
    select distinct t.file_sha256, t.license_id, t.hwid
    from trace_licensing as t
    semi join named as m on m.file_sha256 = t.file_sha256 and m.by_path is null
    where t.license_id is not null and t.hwid is not null
),
listed as (
    select norm_name(license_server) as license_server, license_id::varchar as license_id, hwid
    from issued_license_rows
    where license_server is not null and license_id is not null and hwid is not null
),
matches as (
    select t.file_sha256, l.license_server, count(distinct (t.license_id, t.hwid)) as shared
    from unnamed_traces as t
    join listed as l on l.license_id = t.license_id and l.hwid = t.hwid
    group by all
),
by_content as (
    select
        file_sha256,
        arg_max(license_server, shared) as license_server,
        list(shared order by shared desc) as counts
    from matches
    group by file_sha256
)
select
    m.file_sha256,
    coalesce(
        m.by_path,
        c.license_server,
        case when len(m.names) = 1 then m.names[1] end
    ) as license_server,
    case
        when m.by_path is not null then 'path'
        when c.license_server is not null then 'content'
        when len(m.names) = 1 then 'only server'
    end as attributed_by
from named as m
left join by_content as c
    on c.file_sha256 = m.file_sha256
    -- one server lists more of them than any other
    and (len(c.counts) = 1 or c.counts[1] > c.counts[2]);

-- Database generations: a license server's database rebuilt (events 9/47/49/52/4100)
-- restarts its license ids, so (keypack, license id) names one license only within a
-- generation of one server.
-- materialize: lake
create or replace view db_rebuilds as
select
    license_server,
    time_created as rebuilt_at,
    row_number() over (partition by license_server order by time_created) as generation
from (
    -- the times of licensing_events' database-rebuilt events, read before deduplication
    -- (events_all: the copies of one record share its time), so without sorting every
    -- record; the server is the computer that logged the event
    select distinct norm_name(e.computer) as license_server, e.time_created
    from events_all as e
    join event_catalog as c
        on c.provider_family = licensing_provider_family(e.provider, e.event_source_name)
        and c.event_id = e.event_id
        and (c.qualifiers is null or e.qualifiers is null or c.qualifiers = e.qualifiers)
    where c.problem = 'database-rebuilt'
)
union all
-- generation 0: before any rebuild in the logs
select null, timestamptz '0001-01-01 00:00:00+00', 0;


-- The rebuilds in time order (db_rebuilds without its generation 0), as one list of
-- {server, at}: a fact's generation is the number of its server's rebuilds at or before it,
-- and the rebuild ending a license the first one of its server after its issue. A fact of
-- an unknown server (NULL) counts every server's rebuilds. Read from the list rather than
-- by an as-of join, which sorted every wide fact row (2.4 M trace facts: 1.6 s) to place it
-- among a handful of rebuilds.
create or replace macro rebuild_times() as
    (select coalesce(
        list({'server': license_server, 'at': rebuilt_at} order by rebuilt_at, license_server)
            filter (where generation > 0),
        [])
     from db_rebuilds);

create or replace macro rebuild_generation(times, server, t) as
    len(list_filter(times, lambda r: r.at <= t and (server is null or r.server = server)));

create or replace macro rebuild_after(times, server, t) as
    list_filter(times, lambda r: r.at > t and (server is null or r.server = server))[1].at;

-- The rows of a snapshot view (issued_license_rows, keypack_rows) with their license server:
-- the one the snapshot names (norm_name), else the one its file is attributed to.
create or replace macro snapshot_rows(view_name) as table
select
    r.* exclude (license_server),
    coalesce(norm_name(r.license_server), f.license_server) as license_server
from query_table(view_name) as r
left join file_license_servers as f using (file_sha256);

-- issued_licenses: one row per license (license server, generation, key pack, license id),
-- however many snapshots listed it; first and last snapshot seen, latest state.
create or replace view issued_licenses as
with source as (
    select * from snapshot_rows('issued_license_rows') where license_id is not null
),
generations as (
    select
        s.*,
        rebuild_generation(g.times, s.license_server, s.issue_date) as generation
    from source as s
    cross join (select rebuild_times() as times) as g
),
final as (
    select
        license_server,
        generation,
        keypack_id,
        license_id,
        arg_max(license_status, snapshot_time) as license_status,
        arg_max(license_status_name, snapshot_time) as license_status_name,
        min(issue_date) as issue_date,
        arg_min(issue_date_raw, issue_date) as issue_date_raw,
        arg_max(expiration_date, snapshot_time) as expiration_date,
        arg_max(expiration_date_raw, snapshot_time) as expiration_date_raw,
        bool_or(expiration_never) as expiration_never,
        arg_max(issued_to_computer, snapshot_time) as issued_to_computer,
        arg_max(client_name, snapshot_time) as client_name,
        arg_max(issued_to_user, snapshot_time) as issued_to_user,
        arg_max(hwid, snapshot_time) as hwid,
        arg_max(hwid_raw, snapshot_time) as hwid_raw,
        arg_max(hwid_flag, snapshot_time) as hwid_flag,
        min(snapshot_time) as first_snapshot,
        max(snapshot_time) as last_snapshot,
        count(distinct snapshot_time) as snapshots,
        count(*) as rows_seen,
        arg_min(source_path, snapshot_time) as source_path,
        arg_min(line, snapshot_time) as line,
        arg_min(file_sha256, snapshot_time) as file_sha256
    from generations
    group by license_server, generation, keypack_id, license_id
)
select * from final;

-- keypacks: one row per key pack (license server (norm_name), key pack id, description),
-- latest state.
create or replace view keypacks as
with final as (
    select
        license_server,
        keypack_id,
        description,
        arg_max(keypack_type, snapshot_time) as keypack_type,
        arg_max(keypack_type_name, snapshot_time) as keypack_type_name,
        arg_max(product_type, snapshot_time) as product_type,
        arg_max(product_type_name, snapshot_time) as product_type_name,
        arg_max(product_version, snapshot_time) as product_version,
        arg_max(product_version_id, snapshot_time) as product_version_id,
        arg_max(type_and_model, snapshot_time) as type_and_model,
        arg_max(total_licenses, snapshot_time) as total_licenses,
        bool_or(total_unlimited) as total_unlimited,
        arg_max(issued_licenses, snapshot_time) as issued_licenses,
        arg_max(available_licenses, snapshot_time) as available_licenses,
        min(snapshot_time) as first_snapshot,
        max(snapshot_time) as last_snapshot,
        count(distinct snapshot_time) as snapshots
    from snapshot_rows('keypack_rows')
    group by license_server, keypack_id, description
)
select
    *,
    -- installed per-device CALs that count for the 20% revocation allowance: permanent
    -- per-device packs (not temporary, not the built-in pack), with a finite total
    product_type = 0
        and coalesce(keypack_type, 0) not in (4, 6)
        and not coalesce(total_unlimited, false) as per_device_permanent
from final;

-- The per-device pool per product version and snapshot: installed, issued, available.
create or replace view cal_pool_history as
select
    license_server,
    product_version,
    description,
    snapshot_time,
    sum(total_licenses) as installed,
    sum(issued_licenses) as issued,
    sum(available_licenses) as available
from snapshot_rows('keypack_rows')
where product_type = 0
    and coalesce(keypack_type, 0) not in (4, 6)
    and not coalesce(total_unlimited, false)
group by all;

-- The pool as last seen, per product version (what the revoke allowance is computed on).
create or replace view cal_pool as
select
    license_server,
    product_version,
    description,
    sum(total_licenses) as installed,
    sum(issued_licenses) as issued,
    sum(available_licenses) as available,
    max(last_snapshot) as as_of
from keypacks
where per_device_permanent
group by all;

-- cal_events: every CAL fact from every source, one UTC axis.
--   fact: requested | issued | upgraded | renewed | revoked | revoke-refused | denied |
--         expires | listed | client-hwid | invalid-license | temp-expired | renew-failed
--         (a WMI 'renewed' fact is the earliest time the expiry date allows: expiry minus
--         the longest validity)
--   source: wmi | trace | evtx | client
--   license_server: the server that issued the license (norm_name): a snapshot's server,
--         a trace file's (file_license_servers); NULL when unknown
--   license_key: the issuance this fact belongs to
--         ('<server>/g<generation>/<keypack>/<license id>', '?' for an unknown server),
--         for EVTX events taken from the trace or WMI fact they were linked to;
--         NULL when nothing ties the fact to one license.
--   linked_by: how an EVTX fact was tied to a license ('name+time' within
--         link_tolerance_seconds of a trace or WMI fact of the same kind and name).
-- Every layer above reads it many times: computed once per state of the lake and kept in
-- LAKE/_derived.
-- materialize: lake
create or replace view cal_events as
with trace_facts as (
    select
        ts,
        case
            when operation = 'request' then 'requested'
            when operation in ('issue-temporary', 'issue-permanent') then 'issued'
            when operation = 'upgrade' then 'upgraded'
            when operation = 'renew' then 'renewed'
            when operation = 'revoke' and lower(coalesce(result, '')) in ('success', 'ok', '')
                then 'revoked'
            when operation = 'revoke' then 'revoke-refused'
            when operation = 'deny' then 'denied'
        end as fact,
        'trace' as source,
        s.license_server,
        license_id,
        keypack_id,
        rebuild_generation(g.times, s.license_server, t.ts) as generation,
        client_name,
        client_name_raw,
        hwid,
        hwid_raw,
        user_name,
        case
            when operation = 'issue-temporary' then 'temporary'
            when operation in ('issue-permanent', 'upgrade') then 'permanent'
        end as cal_type,
        null::timestamptz as expires,
        null::varchar as session_host,
        coalesce(result, '') as detail,
        source_path,
        line as source_line,
        file_sha256
    from trace_licensing as t
    left join file_license_servers as s using (file_sha256)
    cross join (select rebuild_times() as times) as g
    where operation in (
        'request', 'issue-temporary', 'issue-permanent', 'upgrade', 'renew', 'revoke', 'deny'
    )
),
wmi_facts as (
    -- a snapshot row tells when its license was issued, when it expires and that it was listed
    select
        f.ts,
        f.fact,
        'wmi' as source,
        l.license_server,
        l.license_id::varchar as license_id,
        l.keypack_id::varchar as keypack_id,
        l.generation,
        l.client_name,
        l.issued_to_computer as client_name_raw,
        l.hwid,
        l.hwid_raw,
        l.issued_to_user as user_name,
        case when l.license_status = 1 then 'temporary' else 'permanent' end as cal_type,
        l.expiration_date as expires,
        null::varchar as session_host,
        case
            when f.fact = 'renewed' then 'earliest renewal implied by the expiry date'
            else l.license_status_name
        end as detail,
        l.source_path,
        l.line as source_line,
        l.file_sha256
    from issued_licenses as l,
        lateral (
            select l.issue_date as ts, 'issued' as fact
            union all
            select l.expiration_date, 'expires' where not coalesce(l.expiration_never, false)
            union all
            select l.last_snapshot, 'listed'
            union all
            -- a permanent CAL whose expiry lies further out than the longest validity from
            -- its issue was renewed, at the earliest this long before its expiry
            select
                l.expiration_date - to_days(th('permanent_validity_max_days')::integer),
                'renewed'
            where l.license_status <> 1
                and not coalesce(l.expiration_never, false)
                and l.expiration_date - to_days(th('permanent_validity_max_days')::integer)
                    > l.issue_date + interval 1 day
                and l.expiration_date - to_days(th('permanent_validity_max_days')::integer)
                    <= l.last_snapshot
        ) as f
),
client_facts as (
    select
        valid_from as ts,
        'client-hwid' as fact,
        'client' as source,
        null::varchar as license_server,
        license_id,
        null::varchar as keypack_id,
        null::bigint as generation,
        client_name_norm as client_name,
        client_name as client_name_raw,
        hwid,
        hwid_raw,
        issued_to_user as user_name,
        null::varchar as cal_type,
        expires_on as expires,
        null::varchar as session_host,
        source_kind || coalesce(' ' || key_path, '') as detail,
        source_path,
        line as source_line,
        file_sha256
    from client_hwids
    where hwid is not null and not coalesce(deleted, false)
),
evtx_facts as (
    select
        time_created as ts,
        case action
            when 'issued' then 'issued'
            when 'issued-vdi' then 'issued'
            when 'renewed' then 'renewed'
            when 'upgraded' then 'upgraded'
            when 'revoked' then 'revoked'
            when 'revoke-refused' then 'revoke-refused'
            when 'invalid-license' then 'invalid-license'
            when 'temp-license-expired' then 'temp-expired'
            when 'renew-failed' then 'renew-failed'
        end as fact,
        'evtx' as source,
        client_name,
        client_name_raw,
        user_name,
        case
            when cal_type ilike '%temporary%' then 'temporary'
            when cal_type is not null then 'permanent'
        end as cal_type,
        session_host,
        coalesce(cal_type || ': ', '') || action || ' (event ' || event_id || ')' as detail,
        norm_name(logged_by) as logged_by_server,
        source_path,
        record_id as source_line,
        file_sha256
    from licensing_events
    where action in (
        'issued', 'issued-vdi', 'renewed', 'upgraded', 'revoked', 'revoke-refused',
        'invalid-license', 'temp-license-expired', 'renew-failed'
    )
),
both_facts as (
    select * from trace_facts where fact is not null
    union all by name
    select * from wmi_facts
),
-- a request names the license the client presented by its id only: its key pack is the one
-- another fact of the same server and generation gives that license id
keypack_of as (
    select
        license_server,
        generation,
        license_id,
        min(keypack_id) as keypack_id
    from both_facts
    where keypack_id is not null and license_id is not null
    group by all
),
keyed as (
    select
        b.* exclude (keypack_id),
        coalesce(b.keypack_id, k.keypack_id) as keypack_id,
        coalesce(b.license_server, '?') || '/g' || coalesce(b.generation, 0) || '/'
            || coalesce(b.keypack_id, k.keypack_id, '?') || '/' || b.license_id as license_key
    from both_facts as b
    left join keypack_of as k
        on k.license_server is not distinct from b.license_server
        and k.generation is not distinct from b.generation
        and k.license_id = b.license_id
),
-- an EVTX fact takes the license of the closest trace/WMI fact of the same kind and name
-- (within link_tolerance_seconds; at equal distance the earlier fact, among facts at one
-- time the smallest key), of the server whose log holds the event (a license server logs
-- its own issuances; '?' when no fact is keyed by that server). The closest fact before and
-- after each EVTX fact come from window functions over one time line per (name, kind,
-- server): linear in the facts however long the logs (pairing every fact of a name with
-- every other grew with the square of their number).
evtx_numbered as (
    select
        *,
        row_number() over () as evtx_row
    from evtx_facts
),
link_points as (
    -- one candidate per (name, kind, server, time): the smallest license key among facts
    -- at one time
    select
        client_name,
        fact,
        coalesce(license_server, '?') as server,
        ts,
        min(license_key) as license_key
    from keyed
    where license_id is not null and client_name is not null and ts is not null
    group by all
),
link_servers as (
    select distinct server from link_points
),
link_line as (
    select
        client_name,
        fact,
        server,
        ts,
        {'ts': ts, 'key': license_key} as point,
        null::bigint as evtx_row
    from link_points
    union all
    select
        e.client_name,
        e.fact,
        coalesce(s.server, '?'),
        e.ts,
        null,
        e.evtx_row
    from evtx_numbered as e
    left join link_servers as s on s.server = e.logged_by_server
    where e.client_name is not null and e.ts is not null
),
nearest as (
    select
        evtx_row,
        ts,
        last_value(point ignore nulls) over (w rows between unbounded preceding and current row)
            as before,
        first_value(point ignore nulls) over (w rows between current row and unbounded following)
            as after
    from link_line
    -- a trace/WMI fact at the very time of the EVTX fact sorts before it
    window w as (partition by client_name, fact, server order by ts, evtx_row nulls first)
    qualify evtx_row is not null
),
evtx_candidates as (
    select
        n.evtx_row,
        case
            when n.before.ts >= n.ts - t.tolerance
                and (n.after is null or n.after.ts > n.ts + t.tolerance
                    or epoch(n.ts) - epoch(n.before.ts) <= epoch(n.after.ts) - epoch(n.ts))
                then n.before.key
            when n.after.ts <= n.ts + t.tolerance then n.after.key
        end as license_key
    from nearest as n
    cross join (
        select to_seconds(th('link_tolerance_seconds')::bigint) as tolerance
    ) as t
),
evtx_linked as (
    select
        e.* exclude (evtx_row, logged_by_server),
        c.license_key
    from evtx_numbered as e
    left join evtx_candidates as c using (evtx_row)
),
evtx_keyed as (
    select
        l.* exclude (license_key),
        l.license_key,
        k.license_server,
        k.license_id,
        k.keypack_id,
        k.generation,
        k.hwid,
        k.hwid_raw,
        case when l.license_key is not null then 'name+time' end as linked_by
    from evtx_linked as l
    left join (
        select
            license_key,
            any_value(license_server) as license_server,
            any_value(license_id) as license_id,
            any_value(keypack_id) as keypack_id,
            any_value(generation) as generation,
            any_value(hwid) as hwid,
            -- one rendering, the same every time (trace and WMI may render one HWID apart)
            min(hwid_raw) as hwid_raw
        from keyed
        group by license_key
    ) as k using (license_key)
),
final as (
    select *, null::varchar as linked_by from keyed
    union all by name
    select * from evtx_keyed
    union all by name
    select *, null::varchar as license_key, null::varchar as linked_by from client_facts
)
select
    ts,
    fact,
    source,
    license_server,
    license_key,
    license_id,
    keypack_id,
    generation,
    client_name,
    client_name_raw,
    hwid,
    hwid_raw,
    case
        when hwid = th_text('freerdp_legacy_hwid') then 'freerdp_legacy'
        when hwid like 'ff%' then 'store_app_ff'
    end as hwid_flag,
    user_name,
    cal_type,
    expires,
    session_host,
    detail,
    linked_by,
    source_path,
    source_line,
    file_sha256
from final;

-- The time the data ends: the last record of any source (the "now" of plans), among the
-- committed rows (those of visible_runs, as every source view shows). Each table's files are
-- read for its time column alone, without union_by_name (every file has it): most views above
-- read as_of, and union_by_name opened every file of the four tables each time one of them
-- was defined. EVTX records are read before their deduplication: copies share their time.
create or replace macro committed_files(table_name) as
    getvariable('lake') || '/' || table_name || '/*.parquet';

-- materialize: lake
create or replace view as_of as
select
    greatest(
        (select max(r.ts) from read_parquet(committed_files('trace_events')) as r
            semi join visible_runs as v using (file_sha256, run_id)),
        (select max(r.time_created) from read_parquet(committed_files('events')) as r
            semi join visible_runs as v using (file_sha256, run_id)),
        (select max(r.snapshot_time) from read_parquet(committed_files('issued_licenses')) as r
            semi join visible_runs as v using (file_sha256, run_id)),
        (select max(r.snapshot_time) from read_parquet(committed_files('keypacks')) as r
            semi join visible_runs as v using (file_sha256, run_id))
    ) as as_of;

-- licenses: one row per issuance, all its facts merged (trace + WMI + linked EVTX events).
--   issued_at: first issue/upgrade fact (else the first fact: a CAL issued before the logs)
--   expires_at: the latest snapshot's expiry, else last issue/renewal + the longest validity
--   replaced_at: a temporary CAL upgraded to a permanent one for the same HWID and name
--   counted_until: when it stopped counting against the pool (expiry, upgrade, revocation,
--                  database rebuilt)
-- materialize: lake
create or replace view licenses as
with facts as (
    select * from cal_events where license_key is not null
),
merged as (
    select
        license_key,
        any_value(license_server) as license_server,
        any_value(license_id) as license_id,
        any_value(keypack_id) as keypack_id,
        any_value(generation) as generation,
        coalesce(
            arg_min(client_name, ts) filter (where fact in ('issued', 'upgraded')),
            arg_min(client_name, ts)
        ) as client_name,
        list_sort(list_distinct(list(client_name) filter (where client_name is not null))) as names,
        any_value(hwid) filter (where hwid is not null) as hwid,
        min(hwid_raw) as hwid_raw,
        arg_min(user_name, ts) filter (where user_name is not null) as user_name,
        -- the snapshot's type, else the first type a fact gave (a refused upgrade of a
        -- temporary CAL is an 'upgraded' fact too; 'any' value depended on the order read)
        coalesce(
            any_value(cal_type) filter (where source = 'wmi'),
            arg_min(cal_type, (ts, cal_type)) filter (where source = 'trace' and cal_type is not null),
            arg_min(cal_type, (ts, cal_type)) filter (where cal_type is not null)
        ) as cal_type,
        -- WMI dates have whole seconds: the trace or event time of an issuance is preferred
        coalesce(
            min(ts) filter (where fact in ('issued', 'upgraded') and source <> 'wmi'),
            min(ts) filter (where fact in ('issued', 'upgraded'))
        ) as issue_fact_at,
        min(ts) filter (where fact not in ('expires')) as first_fact_at,
        max(ts) filter (where fact in ('issued', 'upgraded', 'renewed')) as last_issue_or_renewal,
        bool_or(fact = 'upgraded') as from_upgrade,
        count(*) filter (where fact = 'renewed' and source = 'trace') as renewals_trace,
        count(*) filter (where fact = 'renewed' and source = 'evtx') as renewals_evtx,
        max(ts) filter (where fact = 'renewed') as last_renewed,
        min(ts) filter (where fact = 'revoked') as revoked_at,
        max(expires) filter (where source = 'wmi') as expires_wmi,
        max(ts) filter (where fact = 'listed') as last_listed,
        bool_or(source = 'wmi' and detail = 'Revoked') as revoked_in_snapshot,
        -- sorted: list_distinct's order follows the order rows are read in
        list_sort(list_distinct(list(source))) as sources,
        count(*) as facts
    from facts
    group by license_key
),
dated as (
    select
        *,
        coalesce(issue_fact_at, first_fact_at) as issued_at,
        -- false: issued before the logs begin (first seen renewed, requested or listed)
        issue_fact_at is not null as issue_seen,
        coalesce(
            expires_wmi,
            coalesce(last_issue_or_renewal, first_fact_at) + to_days(
                case
                    when cal_type = 'temporary' then th('temporary_validity_days')
                    else th('permanent_validity_max_days')
                end::integer
            )
        ) as expires_at,
        expires_wmi is null as expiry_estimated
    from merged
),
upgrades as (
    -- the permanent CALs that replaced a temporary one (an upgrade), when they were issued
    select
        hwid,
        client_name,
        issued_at as upgraded_at
    from dated
    where from_upgrade and hwid is not null
),
replaced as (
    select
        d.license_key,
        min(u.upgraded_at) as replaced_at
    from dated as d
    join upgrades as u
        on u.hwid = d.hwid
        and u.client_name = d.client_name
        and u.upgraded_at > d.issued_at
        and u.upgraded_at <= d.expires_at
    where d.cal_type = 'temporary'
    group by d.license_key
),
final as (
    select
        d.*,
        r.replaced_at,
        rebuild_after(b.times, d.license_server, d.issued_at) as db_rebuilt_at
    from dated as d
    left join replaced as r using (license_key)
    cross join (select rebuild_times() as times) as b
),
counted as (
    select
        * exclude (issue_fact_at, first_fact_at),
        least(
            expires_at,
            coalesce(replaced_at, expires_at),
            coalesce(revoked_at, expires_at),
            coalesce(db_rebuilt_at, expires_at)
        ) as counted_until
    from final
)
-- excess: the next CAL of the same holder was issued while this one still counted. The
-- holder is the name (one device per name), or the HWID within a name (duplicate names:
-- two devices); for a HWID shared by several names (cloned, FreeRDP), the name within it.
select
    c.*,
    coalesce(lead(c.issued_at) over by_name < c.counted_until, false) as excess_by_name,
    coalesce(lead(c.issued_at) over by_name_hwid < c.counted_until, false)
        as excess_by_name_hwid,
    c.counted_until > a.as_of as counted_now
from counted as c
cross join as_of as a
window
    by_name as (partition by c.client_name order by c.issued_at, c.license_key),
    by_name_hwid as (partition by c.client_name, c.hwid order by c.issued_at, c.license_key);

