-- Time zones: do the times of sources written without a zone (trace text, culture dates of
-- WMI exports) line up with the UTC times the EVTX logs give for the same facts? caltrail
-- reads a zone-less time in the zone --tz names (UTC when not given); a wrong zone shifts
-- every such fact by hours, silently. The EVTX logs carry UTC, so a licensing fact both name
-- (the same client's CAL issued, renewed, upgraded or revoked, hours apart at most) shows the
-- offset between them. `caltrail ingest` reports the zone that fits; `--tz auto` uses it
-- (caltrail/pipeline/timezone_check.py).
--
-- A file read in an assumed zone has the notes `zone_assumed` (what it read in it) and `tz`
-- ("<zone> (from --tz)" or "UTC (assumed: --tz not given)"), written by the ingest driver.

-- The licensing facts of files read in an assumed zone, with their wall-clock time: the stored
-- UTC time taken back to the zone the file was read in (what the file's text said).
create or replace view zone_less_facts as
with files as (
    select
        sha256 as file_sha256,
        split_part(notes['tz'], ' ', 1) as read_in,
        run_id
    from ingest_files
    where status in ('ok', 'quarantined') and notes['zone_assumed'] is not null
),
trace_facts as (
    select
        'trace' as source,
        file_sha256,
        source_path,
        line,
        ts,
        client_name,
        case
            when operation like 'issue%' then 'issued'
            when operation = 'renew' then 'renewed'
            when operation = 'upgrade' then 'upgraded'
            when operation = 'revoke' then 'revoked'
        end as action
    from trace_licensing
),
snapshot_facts as (
    -- an issue date written as a culture date (a DMTF date carries its offset)
    select
        'wmi' as source,
        file_sha256,
        source_path,
        line,
        issue_date as ts,
        client_name,
        'issued' as action
    from issued_license_rows
    where issue_date_raw is not null
        and not regexp_matches(issue_date_raw, '^[0-9*]{14}\.[0-9*]{6}[+-]')
)
select
    f.source,
    f.source || ':' || f.file_sha256 || ':' || f.line as fact_id,
    f.source_path,
    f.file_sha256,
    files.run_id,
    files.read_in,
    f.client_name,
    f.action,
    f.ts,
    timezone(files.read_in, f.ts) as wall
from (select * from trace_facts union all by name select * from snapshot_facts) as f
join files using (file_sha256)
where f.action is not null and f.client_name is not null and f.ts is not null;

-- Each zone-less fact with the EVTX license-server events of the same client and action
-- within 15 hours of its wall-clock time (every zone's offset is within 14 hours), and the
-- offset between them, wall clock minus UTC, to the nearest quarter hour (zones are whole
-- quarter hours off UTC). A pair counts when it is that close to a quarter hour: the same
-- instant written twice, to within two minutes. zone_offset_pairs_of(q_run): the pairs of the
-- zone-less facts of the ingest run q_run (NULL: of the whole lake); the EVTX events are
-- those within 15 hours of those facts' span, taken by their time before the client and
-- action are read out of their data (reading those is most of the cost in a large lake).
create or replace macro zone_offset_pairs_of(q_run) as table
with facts as (
    select * from zone_less_facts where q_run is null or run_id = q_run
),
span as (
    select min(wall) - interval 15 hour as low, max(wall) + interval 15 hour as high from facts
),
evtx as (
    select time_created, timezone('UTC', time_created) as utc_wall, client_name, action
    from licensing_events
    where provider_family = 'licensing'
        and time_created between timezone('UTC', (select low from span))
            and timezone('UTC', (select high from span))
        and action in ('issued', 'renewed', 'upgraded', 'revoked')
        and client_name is not null
),
pairs as (
    select
        z.*,
        e.time_created as utc,
        epoch(z.wall - e.utc_wall) / 60.0 as minutes
    from facts as z
    join evtx as e
        on e.client_name = z.client_name
        and e.action = z.action
        and e.utc_wall between z.wall - interval 15 hour and z.wall + interval 15 hour
)
select
    * exclude (minutes),
    (round(minutes / 15) * 15)::integer as offset_minutes
from pairs
where abs(minutes - round(minutes / 15) * 15) <= 2;

create or replace view zone_offset_pairs as
select * from zone_offset_pairs_of(null);

-- zone_offsets(q_run): the constant offsets, the best aligned first: how many zone-less facts
-- (of the ingest run q_run; NULL: of the whole lake) each one aligns with an EVTX event, of
-- how many zone-less facts there are. q_pairs: the table or view of the pairs to read, those
-- of zone_offset_pairs by default (the zone check after an ingest reads its run's pairs into
-- a table once and asks this macro and zone_fit of it: each reading of zone_offset_pairs
-- reads every EVTX licensing event of the lake).
create or replace macro zone_offsets(q_run, q_pairs := 'zone_offset_pairs') as table
select
    offset_minutes,
    count(distinct fact_id) as facts_aligned,
    (select count(*) from zone_less_facts where q_run is null or run_id = q_run) as facts
from query_table(q_pairs)
where q_run is null or run_id = q_run
group by offset_minutes
order by facts_aligned desc, abs(offset_minutes);

-- Zones a user names first among those that share their offsets (Europe/Berlin before
-- Europe/Amsterdam): a zone that fits as well as another is suggested in this order.
create or replace view zone_preference as
select * from (values
    ('UTC', 1), ('Europe/London', 2), ('Europe/Berlin', 3), ('Europe/Paris', 4),
    ('America/New_York', 5), ('America/Chicago', 6), ('America/Denver', 7),
    ('America/Phoenix', 8), ('America/Los_Angeles', 9), ('America/Toronto', 10),
    ('America/Sao_Paulo', 11), ('America/Mexico_City', 12), ('Asia/Tokyo', 13),
    ('Asia/Shanghai', 14), ('Asia/Kolkata', 15), ('Asia/Singapore', 16), ('Asia/Dubai', 17),
    ('Australia/Sydney', 18), ('Europe/Moscow', 19), ('Africa/Johannesburg', 20),
    ('Europe/Helsinki', 21), ('Pacific/Auckland', 22)
) as t(zone, preference);

-- zone_fit(q_run): each zone with the zone-less facts (of the ingest run q_run; NULL: of the
-- whole lake) it aligns with the EVTX logs: its offset at the fact's time, daylight saving
-- time included, equals the fact's offset. The best first. Facts are taken per day and
-- offset (a zone's offset changes at most once in a day). q_pairs: as for zone_offsets.
create or replace macro zone_fit(q_run, q_pairs := 'zone_offset_pairs') as table
with pairs as (
    select * from query_table(q_pairs) where q_run is null or run_id = q_run
),
days as (
    select
        date_trunc('day', utc) + interval 12 hour as noon,
        offset_minutes,
        count(distinct fact_id) as facts
    from pairs
    group by all
),
zones as (
    -- region/city names and UTC (not abbreviations such as IST, which --tz does not take)
    select name as zone from pg_timezone_names()
    where (name like '%/%' or name = 'UTC')
        and name not like 'Etc/%' and name not like 'SystemV/%' and name not like 'posix/%'
        and name not like 'right/%'
)
select
    z.zone,
    sum(d.facts)::bigint as facts_aligned,
    (select count(distinct fact_id) from pairs) as facts_paired,
    (select count(*) from zone_less_facts where q_run is null or run_id = q_run) as facts
from zones as z
cross join days as d
where epoch(timezone(z.zone, d.noon) - timezone('UTC', d.noon)) / 60 = d.offset_minutes
group by z.zone
order by
    facts_aligned desc,
    coalesce((select p.preference from zone_preference as p where p.zone = z.zone), 1000),
    z.zone;
