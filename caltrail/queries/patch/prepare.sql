-- Patching the kept per-device views after a batch ingest (caltrail/pipeline/patch.py):
-- what changed since the base state (the last state whose kept files are all there), and
-- which devices that touches. Run in order on a session loaded up to cal_events, with the
-- base state's kept files as the views patch.base_<view> and its runs as patch.base_runs.
--
-- A device is a key of one kind: a computer name ('name'), a HWID ('hwid'), a license key
-- ('license'), a license known by its server, generation and id before its key pack is
-- ('triple'); a new input file ('file') touches the rows it gave. patch.touched holds them.

-- The runs the base state did not have (a batch ingest adds runs: only new files, or files
-- read again with --force, whose older run is then hidden).
create or replace table patch.new_files as
select distinct file_sha256 from visible_runs
anti join patch.base_runs using (file_sha256, run_id);

-- The files of the base whose server (file_license_servers) is another now: a file of
-- the base attributed as the lake's only license server, once the lake knows two. Only
-- trace files and WMI exports that do not name their server read it.
create or replace table patch.reattributed as
select file_sha256
from (
    select file_sha256, license_server from patch.base_file_license_servers
    except
    select file_sha256, license_server from file_license_servers
);

-- Why the base state cannot be patched (no rows: it can). Each is a change a device of the
-- base could see without any row of it touched:
--   a run of the base hidden since (a file read again with --force: its older rows go);
--   the database generations of a server (a rebuild event: every license key of that
--   server after it);
--   a WMI export that does not name its server attributed to another one (its listings
--   and key packs move from one server's pool to another's);
--   a counted license of the base without a computer name: licenses.excess_by_name orders
--   a server's licenses without a name as one holder's, across every device.
create or replace view patch.unpatchable as
select 'a file of the earlier state was read again (--force)' as reason
from (select 1 from patch.base_runs anti join visible_runs using (file_sha256, run_id) limit 1)
union all
select 'a license database was rebuilt (new database-rebuilt events)'
from (
    (select * from db_rebuilds except select * from patch.base_db_rebuilds)
    union all
    (select * from patch.base_db_rebuilds except select * from db_rebuilds)
    limit 1
)
union all
select 'a WMI export naming no license server is attributed to another one now'
from (
    select 1
    from patch.reattributed
    semi join (
        select file_sha256 from issued_license_rows where norm_name(license_server) is null
        union all
        select file_sha256 from keypack_rows where norm_name(license_server) is null
    ) as s using (file_sha256)
    limit 1
)
union all
select 'the earlier state holds a counted license issued to no computer name'
from (select 1 from patch.base_licenses where counted and client_name is null limit 1);

create or replace table patch.touched (kind varchar, key varchar);

-- The rows of a new file, and of a trace file of the base read with another server now (its
-- facts' licenses are keyed by their server), are computed again.
insert into patch.touched
select 'file', file_sha256 from patch.new_files
union
select 'file', file_sha256
from patch.reattributed
semi join (select distinct file_sha256 from trace_licensing) as t using (file_sha256);

-- The devices the base's rows of those files named (the new rows' devices are added by
-- caltrail/pipeline/patch.py from each input read per device).
insert into patch.touched
with base_rows as (
    select client_name, hwid, license_key
    from patch.base_cal_events
    where file_sha256 in (select key from patch.touched where kind = 'file')
)
select 'name', client_name from base_rows where client_name is not null
union
select 'hwid', hwid from base_rows where hwid is not null
union
select 'license', license_key from base_rows where license_key is not null;

-- A server of which a new file holds a full listing (Win32_TSIssuedLicense: each license it
-- does not show has left the database) or a key pack snapshot (the pool, each key pack's
-- type and product): every license of that server may read it.
insert into patch.touched
select distinct 'license', b.license_key
from patch.base_licenses as b
where coalesce(b.license_server, '?') in (
    select coalesce(license_server, '?')
    from snapshot_rows('issued_license_rows')
    where license_id is not null and file_sha256 in (select file_sha256 from patch.new_files)
    union
    select coalesce(license_server, '?')
    from snapshot_rows('keypack_rows')
    where file_sha256 in (select file_sha256 from patch.new_files)
);

-- The end of the data moved (as_of: a batch with later records): a license whose count
-- ended between the two ends is counted now in one state and not in the other
-- (licenses.counted_now), and a name whose older HWID's CAL reached its renewal window in
-- between reads that window otherwise (name_evidence.old_quiet_through_renewal).
insert into patch.touched
select distinct 'license', b.license_key
from patch.base_licenses as b
cross join (
    select least(o.as_of, n.as_of) as low, greatest(o.as_of, n.as_of) as high
    from patch.base_as_of as o, as_of as n
    where o.as_of is distinct from n.as_of
) as moved
where (b.counted_until > moved.low and b.counted_until <= moved.high)
    or (b.counted_until - to_days(th('renew_window_days')::integer) > moved.low
        and b.counted_until - to_days(th('renew_window_days')::integer) <= moved.high)
    or moved.low is null;

-- A server some fact keys a license of for the first time (or no longer): an EVTX event its
-- log holds is linked to its facts now, no longer to those of an unknown server (cal_events),
-- or the reverse. (The names of its licensing records: those of its CAL facts among them.)
insert into patch.touched
select distinct 'name', r.client_name
from licensing_records as r
where r.client_name is not null
    and norm_name(r.logged_by) in (
        (select server from keyed_servers except select server from patch.base_keyed_servers)
        union all
        (select server from patch.base_keyed_servers except select server from keyed_servers)
    );
