-- Layer 2, the license server's own listings: named thresholds and reference tables, the
-- license servers and their database generations, Win32_TSIssuedLicense snapshots (and the
-- per-device report) one row per license and snapshot, key packs and the CAL pool.
--
-- Reads: issued_license_rows, keypack_rows (10), licensing_events (30), trace_licensing
-- (35), diagnosis_thresholds.csv and license_status.csv.

-- Named thresholds, one place to change them (queries/diagnosis_thresholds.csv, copied to
-- LAKE/_ref), read once per session into a table. th('name') is the numeric value,
-- th_text('name') the text.
create or replace table diagnosis_thresholds as
select
    name,
    value,
    unit,
    meaning
from reference_table('diagnosis_thresholds.csv');

create or replace macro th(n) as
    (select try_cast(value as double) from diagnosis_thresholds where name = n);

create or replace macro th_text(n) as
    (select value from diagnosis_thresholds where name = n);

-- LicenseStatus of Win32_TSIssuedLicense as documented (0 Unknown, 1 Temporary, 2 Active,
-- 3 Upgrade, 4 Revoked, 5 Pending, 6 Concurrent), with what each means for counting
-- (queries/license_status.csv): kind (temporary | permanent | revoked | pending |
-- concurrent | unknown), counted (takes a CAL from its pack), revocable (an administrator
-- may revoke it). Statuses 0, 3, 5, 6 are not described beyond their names: the table says
-- how they are read and can be changed.
create or replace table license_status as
select
    try_cast(status as integer) as status,
    name,
    kind,
    lower(counted) = 'true' as counted,
    lower(revocable) = 'true' as revocable,
    meaning
from reference_table('license_status.csv');

-- The product version as one comparable key: "Windows Server 2019", "2019", "10.01"... ->
-- '2019' (the year, with ' R2'); NULL for no text. Event 81/82 and the key packs name a
-- version their own way [U: localised product names]; the year is what they share.
create or replace macro product_key(p) as
    case
        when p is null or trim(p) = '' then null
        when regexp_matches(p, '(19|20)[0-9][0-9]') then
            regexp_extract(p, '((19|20)[0-9][0-9])', 1)
                || case when regexp_matches(p, '(?i)(19|20)[0-9][0-9]\s*R2') then ' R2' else '' end
        else lower(trim(p))
    end;

-- A user name to compare: without its domain (DOMAIN\user, user@domain), case, and every
-- character but ASCII letters and digits (an ASCII export writes jürgen as j?rgen).
create or replace macro user_key(u) as
    nullif(regexp_replace(lower(split_part(list_reverse(string_split(u, '\'))[1], '@', 1)),
        '[^a-z0-9]', '', 'g'), '');

-- A HWID of the Microsoft Store Remote Desktop app: reported as HWIDs "starting with ff"
-- in a rendering nobody names [U], so the canonical form or the DWORD rendering
-- (parsers/hwid.py, flag store_app_ff) starting with ff.
create or replace macro hwid_store_app(h) as
    h like 'ff%' or substr(h, 7, 2) = 'ff';

-- The license servers the lake names (norm_name): the servers of WMI snapshots and the
-- computers whose logs hold license-server events. Each server's database numbers its own
-- key packs and licenses, so a license is keyed by its server first.
-- (Each name is normalised once, after the union: a filter on the normalised name is pushed
-- below it, onto each of the million licensing events of 50,000 devices. list_distinct
-- drops the NULL of a blank name.)
create or replace view license_servers as
select unnest(list_distinct(list(norm_name(name)))) as license_server
from (
    select license_server as name from issued_license_rows
    union
    select license_server from keypack_rows
    union
    select computer
    from events_all
    where licensing_provider_family(provider, event_source_name) = 'licensing'
);

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

-- The rows of a snapshot view (issued_license_rows, keypack_rows) with their license server:
-- the one the snapshot names (norm_name), else the one its file is attributed to.
create or replace macro snapshot_rows(view_name) as table
select
    r.* exclude (license_server),
    coalesce(norm_name(r.license_server), f.license_server) as license_server
from query_table(view_name) as r
left join file_license_servers as f using (file_sha256);

-- A license database emptied between two full listings of one server, seen in the listings
-- alone: the permanent CALs the earlier listing showed, unexpired at the later one, are
-- (nearly) all missing from it. A CAL leaves the database at its expiry; revoking one keeps
-- it listed, and revocation is bounded by 20% of a product version; a rebuilt database
-- (or one renamed aside, or replaced by a restored file) starts with no CAL at all
-- (docs/LICENSING.md, "A database rebuilt, in the listings"). A later listing whose license
-- ids all lie below every id of the earlier one supports it (ids numbered again, [U]); an
-- export cut short or filtered by status, the other ways to lose most of a listing, keeps
-- some of the earlier ids. Read from the raw rows (snapshot_listings is keyed by the
-- generations this starts). The findings report it (50_findings.sql); where the ids start
-- again it also starts a generation (db_rebuilds) at `emptied_by`, the latest time it can
-- have been emptied: the first CAL the later listing shows issued since the earlier one
-- came from the new database (else the later listing's time).
create or replace view snapshot_db_resets as
with listings as (
    -- one row per license and listing, however many copies or forms of it were read
    select
        s.license_server,
        s.snapshot_time,
        s.keypack_id,
        s.license_id,
        s.hwid,
        min(s.issue_date) as issue_date,
        max(s.expiration_date) as expiration_date,
        bool_or(k.kind = 'permanent') as permanent,
        min({'source_path': s.source_path, 'line': s.line, 'recovered': false}) as evidence_row
    from snapshot_rows('issued_license_rows') as s
    left join license_status as k on k.status = s.license_status
    where s.license_id is not null
        and s.license_server is not null
        and s.snapshot_time is not null
    group by s.license_server, s.snapshot_time, s.keypack_id, s.license_id, s.hwid
),
times as (
    select
        license_server,
        snapshot_time,
        lag(snapshot_time) over (partition by license_server order by snapshot_time) as before,
        max_id,
        lag(min_id) over (partition by license_server order by snapshot_time) as min_id_before,
        first_row
    from (
        select
            license_server,
            snapshot_time,
            max(license_id) as max_id,
            min(license_id) as min_id,
            min(evidence_row) as first_row
        from listings
        group by all
    )
),
compared as (
    select
        t.license_server,
        t.before as listed_at,
        t.snapshot_time as missing_at,
        -- the evidence: the earlier listing's rows of the CALs gone, then the later listing
        list_append(
            (list(p.evidence_row order by p.evidence_row)
                filter (where n.license_id is null))[1:9],
            t.first_row
        ) as evidence_rows,
        t.max_id,
        t.min_id_before,
        count(*) as due,
        count(*) filter (where n.license_id is null) as gone
    from times as t
    join listings as p
        on p.license_server = t.license_server
        and p.snapshot_time = t.before
        and p.permanent
        and p.expiration_date > t.snapshot_time + interval 1 day
    left join listings as n
        on n.license_server = t.license_server
        and n.snapshot_time = t.snapshot_time
        and n.license_id = p.license_id
        and n.keypack_id is not distinct from p.keypack_id
        and n.hwid is not distinct from p.hwid
    group by t.license_server, t.before, t.snapshot_time, t.first_row, t.max_id, t.min_id_before
),
resets as (
    select *, max_id < min_id_before as ids_restart
    from compared
    where gone >= th('snapshot_reset_min_cals') and gone >= th('snapshot_reset_min_share') * due
)
select
    c.*,
    -- (only where the ids say it was emptied: a listing cut short or filtered keeps CALs of
    -- the old database issued since the earlier listing)
    case when c.ids_restart then least(c.missing_at, (
        select min(n.issue_date) from listings as n
        where n.license_server = c.license_server
            and n.snapshot_time = c.missing_at and n.issue_date > c.listed_at
    )) end as emptied_by
from resets as c;

-- Database generations: a license server's database rebuilt (events 9/47/49/52/4100, or
-- emptied between two listings with its ids numbered again: snapshot_db_resets) restarts
-- its license ids, so (keypack, license id) names one license only within a generation of
-- one server.
-- materialize: lake
create or replace view db_rebuilds as
with logged as (
    -- the times of licensing_events' database-rebuilt events, read before deduplication
    -- (events_all: the copies of one record share its time), so without sorting every
    -- record; the server is the computer that logged the event
    select distinct norm_name(e.computer) as license_server, e.time_created as rebuilt_at
    from events_all as e
    join event_catalog as c
        on c.provider_family = licensing_provider_family(e.provider, e.event_source_name)
        and c.event_id = e.event_id
        and (c.qualifiers is null or e.qualifiers is null or c.qualifiers = e.qualifiers)
    where c.problem = 'database-rebuilt'
),
listed as (
    -- a database emptied between two listings, where no event of its server says so between
    -- them, at the latest time it can have been emptied
    select r.license_server, r.emptied_by as rebuilt_at
    from snapshot_db_resets as r
    where r.emptied_by is not null
        and not exists (
            select 1 from logged as l
            where l.license_server = r.license_server
                and l.rebuilt_at > r.listed_at and l.rebuilt_at <= r.missing_at
        )
)
select
    license_server,
    rebuilt_at,
    row_number() over (partition by license_server order by rebuilt_at) as generation
from (select * from logged union all select * from listed)
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

-- A license's key ('<server>/g<generation>/<keypack>/<license id>', '?' for a server or key
-- pack not known: a listing's, and a trace or WMI fact's, 40_cal_events.sql), and the triple
-- it is known by before its key pack is (facts sharing it may give each other their key
-- pack). NULL without an id.
create or replace macro license_key_of(server, generation, keypack_id, license_id) as
    coalesce(server, '?') || '/g' || coalesce(generation, 0) || '/' || coalesce(keypack_id, '?')
        || '/' || license_id;

create or replace macro license_triple_of(server, generation, license_id) as
    coalesce(server, '?') || '/g' || coalesce(generation, 0) || '/' || license_id;

-- snapshot_listings: one row per license and snapshot (the copies of one snapshot in several
-- forms are one row). A listing keeps what that snapshot said: the name, user, HWID, status
-- and expiry of that day (a renamed machine's license shows its new name from the snapshot
-- that saw it on, never before). A row's generation is its server's at the snapshot: a
-- listed license is in the database of that day. Win32_TSIssuedLicense rows (and the
-- seed's per-device export) are keyed by license id; a per-device report entry
-- (Win32_TSLicenseReportPerDeviceEntry, no license id) takes the key of a license listed
-- with its server, HWID and expiry, else one of its own: its HWID, product and rank by
-- expiry among that HWID's entries of the report (one device holds one CAL a version, so
-- a device's CAL keeps its key while it is renewed).
-- materialize: lake
create or replace view snapshot_listings as
with rows as (
    select
        r.*,
        rebuild_generation(g.times, r.license_server, r.snapshot_time) as generation
    from snapshot_rows('issued_license_rows') as r
    cross join (select rebuild_times() as times) as g
),
with_id as (
    select
        r.*,
        license_key_of(r.license_server, r.generation, r.keypack_id::varchar, r.license_id)
            as license_key
    from rows as r
    where r.license_id is not null
),
by_id as (
    select distinct license_server, hwid, expiration_date, license_key from with_id
),
keyed as (
    select * from with_id
    union all
    -- (a report entry apart: its rank was computed for every listing, 0.12 s of 0.3)
    select
        r.*,
        coalesce(
            (select min(b.license_key) from by_id as b
             where b.license_server is not distinct from r.license_server
                and b.hwid = r.hwid and b.expiration_date = r.expiration_date),
            coalesce(r.license_server, '?') || '/g' || r.generation || '/r/' || r.hwid || '/'
                || coalesce(product_key(r.product_version), '?') || '/'
                || row_number() over (
                    partition by r.license_server, r.snapshot_time, r.hwid,
                        product_key(r.product_version)
                    order by r.expiration_date, r.line)
        ) as license_key
    from rows as r
    where r.license_id is null
),
listed as (
    select * from keyed where license_id is not null or hwid is not null
),
in_forms as (
    -- the listings of a snapshot read in several forms (CSV and HTML of one export)
    select license_key, snapshot_time from listed group by all having count(*) > 1
)
-- a listing in one form is its row (the aggregates below, of one row; the ordered ones took
-- 0.3 s for the 120,000 listings of 50,000 devices, nearly all in one form)
select
    license_key, snapshot_time, license_server, generation, keypack_id, license_id,
    license_id is not null as full_listing,
    license_status, license_status_name, issue_date, issue_date_raw, expiration_date,
    expiration_never, issued_to_computer, client_name, issued_to_user, hwid, hwid_raw,
    hwid_flag, cal_type, product_version, source_path, line, file_sha256
from listed
anti join in_forms using (license_key, snapshot_time)
union all by name
select
    license_key,
    snapshot_time,
    any_value(license_server) as license_server,
    any_value(generation) as generation,
    max(keypack_id) as keypack_id,
    max(license_id) as license_id,
    -- a Win32_TSIssuedLicense row (it lists every CAL the database holds, temporary and
    -- revoked ones too) rather than a per-device report entry
    bool_or(license_id is not null) as full_listing,
    first(license_status order by license_status is null) as license_status,
    first(license_status_name order by license_status is null) as license_status_name,
    min(issue_date) as issue_date,
    first(issue_date_raw order by issue_date nulls last) as issue_date_raw,
    max(expiration_date) as expiration_date,
    bool_or(expiration_never) as expiration_never,
    first(issued_to_computer order by issued_to_computer is null, source_path) as issued_to_computer,
    first(client_name order by client_name is null, source_path) as client_name,
    first(issued_to_user order by issued_to_user is null, source_path) as issued_to_user,
    first(hwid order by hwid is null, source_path) as hwid,
    min(hwid_raw) as hwid_raw,
    first(hwid_flag order by hwid is null, source_path) as hwid_flag,
    first(cal_type order by cal_type is null) as cal_type,
    first(product_version order by product_version is null) as product_version,
    first(source_path order by license_id is null, source_path) as source_path,
    first(line order by license_id is null, source_path) as line,
    first(file_sha256 order by license_id is null, source_path) as file_sha256
from listed
semi join in_forms using (license_key, snapshot_time)
group by license_key, snapshot_time;

-- The full listings: every Win32_TSIssuedLicense snapshot time of each server (a license
-- a later full listing does not show has left the database by then).
create or replace view full_snapshots as
select distinct license_server, generation, snapshot_time
from snapshot_listings
where full_listing;

-- issued_licenses: one row per license, however many snapshots listed it; the first
-- snapshot's name and the latest state.
create or replace view issued_licenses as
select
    license_key,
    license_server,
    generation,
    max(keypack_id) as keypack_id,
    max(license_id) as license_id,
    arg_max(license_status, snapshot_time) as license_status,
    arg_max(license_status_name, snapshot_time) as license_status_name,
    min(issue_date) as issue_date,
    arg_min(issue_date_raw, issue_date) as issue_date_raw,
    arg_max(expiration_date, snapshot_time) as expiration_date,
    bool_or(expiration_never) as expiration_never,
    arg_min(issued_to_computer, snapshot_time) as first_issued_to_computer,
    arg_max(issued_to_computer, snapshot_time) as issued_to_computer,
    arg_max(client_name, snapshot_time) as client_name,
    arg_max(issued_to_user, snapshot_time) as issued_to_user,
    arg_max(hwid, snapshot_time) as hwid,
    arg_max(hwid_raw, snapshot_time) as hwid_raw,
    arg_max(hwid_flag, snapshot_time) as hwid_flag,
    arg_max(cal_type, snapshot_time) as cal_type,
    arg_max(product_version, snapshot_time) as product_version,
    min(snapshot_time) as first_snapshot,
    max(snapshot_time) as last_snapshot,
    count(*) as snapshots,
    arg_min(source_path, snapshot_time) as source_path,
    arg_min(line, snapshot_time) as line,
    arg_min(file_sha256, snapshot_time) as file_sha256
from snapshot_listings
group by license_key, license_server, generation;

-- A key pack of installed permanent per-device CALs (Win32_TSLicenseKeyPack): a per-device
-- product (ProductType 0), not a temporary pack (KeyPackType 4) nor the built-in one (6),
-- with a finite total. What counts for the 20% revocation allowance, and the pool a device
-- is issued its permanent CAL from.
create or replace macro per_device_pack(product_type, keypack_type, total_unlimited) as
    product_type = 0
    and coalesce(keypack_type, 0) not in (4, 6)
    and not coalesce(total_unlimited, false);

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
    per_device_pack(product_type, keypack_type, total_unlimited) as per_device_permanent
from final;

-- The key packs of each listing: one row per server, key pack and listing time. A listing
-- exported more than once (a CSV and an HTML page of one run, PowerShell 5.1 and 7, CIM) is
-- read once, from the copy of the least path: summed over every copy, a pool exported in
-- three forms counted its CALs three times.
create or replace view keypack_listings as
select *
from snapshot_rows('keypack_rows')
qualify row_number() over (
    partition by license_server, keypack_id, description, snapshot_time
    order by source_path, line
) = 1;

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
from keypack_listings
where per_device_pack(product_type, keypack_type, total_unlimited)
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
