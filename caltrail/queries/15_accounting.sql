-- Accounting, per input file of the current runs: records seen = rows written + quarantined.
-- `caltrail verify` fails when a row here has balanced = false.
create or replace view ingest_accounting as
with current_files as (
    select f.*
    from ingest_files as f
    join visible_runs as v on v.file_sha256 = f.sha256 and v.run_id = f.run_id
    -- a "duplicate" row (same content as another file of the run, read once) shares the
    -- sha256 and run of the copy that was read: it must not claim that copy's rows
    where f.status in ('ok', 'quarantined')
),
written as (
    -- every file of every table has file_sha256 and run_id, so the files are read without
    -- union_by_name (which opens every file when the view is defined: thousands of files)
    select file_sha256, run_id, count(*) as n from (
        select file_sha256, run_id from read_parquet(getvariable('lake') || '/events/*.parquet')
        union all
        select file_sha256, run_id from read_parquet(getvariable('lake') || '/trace_events/*.parquet')
        union all
        select file_sha256, run_id from read_parquet(getvariable('lake') || '/issued_licenses/*.parquet')
        union all
        select file_sha256, run_id from read_parquet(getvariable('lake') || '/keypacks/*.parquet')
        union all
        select file_sha256, run_id from read_parquet(getvariable('lake') || '/client_hwids/*.parquet')
    )
    group by all
),
quarantined as (
    select file_sha256, run_id, count(*) filter (where quarantined) as n
    from read_parquet(getvariable('lake') || '/parse_errors/*.parquet', union_by_name = true)
    group by all
)
select
    f.path,
    f.sha256,
    f.run_id,
    f.status,
    f.records_seen,
    f.records_ok,
    f.records_bad,
    coalesce(w.n, 0) as written,
    coalesce(q.n, 0) as quarantined,
    f.records_seen = coalesce(w.n, 0) + coalesce(q.n, 0)
        and f.records_ok = coalesce(w.n, 0)
        and f.records_bad = coalesce(q.n, 0) as balanced
from current_files as f
left join written as w on w.file_sha256 = f.sha256 and w.run_id = f.run_id
left join quarantined as q on q.file_sha256 = f.sha256 and q.run_id = f.run_id;
