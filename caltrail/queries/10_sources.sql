-- Layer 1, sources: one view per raw table, showing only committed rows.
--
-- A data row is visible when its (file_sha256, run_id) is the latest successful manifest
-- row of that file: rows of a crashed run (no manifest row) and rows of an older run of a
-- file read again with --force are hidden. See pipeline/lake.py for the write protocol.

-- The manifest: one row per input file and run (latest row per path and content).
create or replace view ingest_files as
with all_rows as (
    select *
    from read_parquet(getvariable('lake') || '/ingest_files/*.parquet', union_by_name = true)
),
ranked as (
    select
        *,
        row_number() over (partition by sha256, path order by finished desc) as rn
    from all_rows
)
select * exclude (rn) from ranked where rn = 1;

create or replace view runs as
select * from read_parquet(getvariable('lake') || '/runs/*.parquet', union_by_name = true);

-- Which run's rows are the current ones for each file content.
create or replace view visible_runs as
select
    sha256 as file_sha256,
    arg_max(run_id, finished) as run_id
from read_parquet(getvariable('lake') || '/ingest_files/*.parquet', union_by_name = true)
where status in ('ok', 'quarantined')
group by sha256;

-- The committed rows of a raw table: those of the current run of each file (the one rule
-- every source view below applies).
create or replace macro committed_rows(table_name) as table
select r.*
from read_parquet(getvariable('lake') || '/' || table_name || '/*.parquet', union_by_name = true) as r
semi join visible_runs as v using (file_sha256, run_id);

-- Every committed EVTX record, duplicates included (one row per file it came from).
-- recovered: read from chunk slack, a record the log no longer counts (deleted or written
-- over); NULL in files ingested before the column existed, read as false.
create or replace view events_all as
select * replace (coalesce(recovered, false) as recovered)
from committed_rows('events');

-- The EVTX records whose key (computer, channel, record id, time) the view named
-- `keys_view` lists, each once: the copy the log still counts (recovered = false) when
-- there is one, else the first by path and offset; dup_count says how many files held it.
-- Key parts are compared NULL-safe (NULL parts equal, as in a window's partition). With
-- `with_singles`, every record whose key is not listed too, as it is (dup_count 1). The
-- keys are read once (a CTE; a view named twice would be computed twice).
create or replace macro records_once(keys_view, with_singles) as table
with keys as materialized (select * from query_table(keys_view))
select e.*, 1::bigint as dup_count
from events_all as e
anti join keys as c
    on c.computer is not distinct from e.computer
    and c.channel is not distinct from e.channel
    and c.record_id is not distinct from e.record_id
    and c.time_created is not distinct from e.time_created
where with_singles
union all
select * exclude (rn)
from (
    select
        e.*,
        count(*) over w as dup_count,
        row_number() over (w order by recovered, source_path, "offset") as rn
    from events_all as e
    semi join keys as c
        on c.computer is not distinct from e.computer
        and c.channel is not distinct from e.channel
        and c.record_id is not distinct from e.record_id
        and c.time_created is not distinct from e.time_created
    window w as (partition by computer, channel, record_id, time_created)
)
where rn = 1;

-- The keys of the EVTX records held by more than one file.
create or replace view event_copy_keys as
select computer, channel, record_id, time_created
from events_all
group by all
having count(*) > 1;

-- EVTX records, each shown once: the same record reached through two files (same computer,
-- channel, record id and time; e.g. a live log and its VSS copy) is one row, dup_count
-- says how many files held it. A copy the log still counts is the one shown (recovered =
-- false) when there is one: a recovered copy of a record found allocated in another file
-- only adds to dup_count. Most records have one copy: the records with several are found
-- by their key alone, and only they are sorted to choose one (a window over every record
-- sorted all of its columns: a quarter more time for cal_events at 50,000 devices).
create or replace view events as
select * from records_once('event_copy_keys', true);

-- What could not be read (quarantined = true) or was read with a doubt (false).
create or replace view parse_errors as
select * from committed_rows('parse_errors');

create or replace view trace_events as
select * from committed_rows('trace_events');

-- Raw snapshot rows (every row of every snapshot); issued_licenses (deduplicated) is built on it.
create or replace view issued_license_rows as
select
    *,
    norm_name(issued_to_computer) as client_name
from committed_rows('issued_licenses');

create or replace view keypack_rows as
select * from committed_rows('keypacks');

create or replace view client_hwids as
select
    *,
    norm_name(client_name) as client_name_norm
from committed_rows('client_hwids');
