-- Layer 2, licensing facts from EVTX: every event of the license server (and its Windows
-- Server 2003 name TermServLicensing), RemoteConnectionManager and LocalSessionManager,
-- with typed columns from the event catalog. Events whose id is not in the catalog are
-- kept with action 'other'.
create or replace macro licensing_provider_family(provider, event_source_name) as
    case
        when provider in ('Microsoft-Windows-TerminalServices-Licensing', 'TermServLicensing')
            or event_source_name = 'TermServLicensing' then 'licensing'
        when provider = 'Microsoft-Windows-TerminalServices-RemoteConnectionManager' then 'rcm'
        when provider = 'Microsoft-Windows-TerminalServices-LocalSessionManager' then 'lsm'
    end;

-- The rows licensing_records reads: every committed EVTX record, copies included. A session
-- points it at the runs not kept yet (caltrail/pipeline/per_run.py).
create or replace view licensing_records_input as
select * from events_all;

-- licensing_records: the events of the licensing families with typed columns from the event
-- catalog, every copy of a record (one row per file that holds it). A row depends on its
-- record and the catalog only, so the rows are kept per ingest run of each EVTX file: a
-- session after a batch reads the catalog's fields out of the batch's events alone
-- (caltrail/pipeline/per_run.py). `dup_count` is NULL here: licensing_events counts the
-- copies, among every event. After a batch, cal_events reads the records of the devices the
-- batch touched (caltrail/pipeline/patch.py).
-- materialize: run
-- per device: 'name' client_name, 'file' file_sha256
create or replace view licensing_records as
with family as (
    select
        *,
        licensing_provider_family(provider, event_source_name) as provider_family
    from licensing_records_input
    where licensing_provider_family(provider, event_source_name) is not null
),
joined as (
    select
        s.*,
        c.action,
        c.problem,
        c.device_cal,
        c.client_field,
        c.cal_type_field,
        c.product_field,
        c.host_field,
        c.user_field,
        c.address_field,
        c.server_field,
        c.message as message_template,
        c.description
    from family as s
    left join event_catalog as c
        on c.provider_family = s.provider_family
        and c.event_id = s.event_id
        and (c.qualifiers is null or s.qualifiers is null or c.qualifiers = s.qualifiers)
)
select
    time_created,
    provider_family,
    provider,
    channel,
    event_id,
    qualifiers,
    level,
    coalesce(action, 'other') as action,
    problem,
    coalesce(device_cal, false) as device_cal,
    data_field(data, client_field) as client_name_raw,
    norm_name(data_field(data, client_field)) as client_name,
    data_field(data, cal_type_field) as cal_type,
    data_field(data, product_field) as product,
    data_field(data, host_field) as session_host,
    data_field(data, user_field) as user_name,
    data_field(data, address_field) as address,
    data_field(data, server_field) as license_server,
    computer as logged_by,  -- the machine whose log holds the event
    render_message(message_template, data) as message,
    description,
    record_id,
    data,
    null::bigint as dup_count,
    recovered,  -- read from chunk slack (events.recovered): evidence to mark as such
    source_path,
    file_sha256,
    chunk,
    "offset",
    run_id
from joined;

-- The rows of licensing_records for the records whose keys (computer, channel, record id,
-- time) the view named `keys_view` lists, each record once: the copy `events` shows (chosen
-- by records_once among every event, an allocated copy before one recovered from chunk
-- slack), with dup_count the files holding it. With `with_singles`, every record whose key
-- is not listed too (dup_count 1). A record whose chosen copy is of no licensing family is
-- not shown, as when the catalog's fields were read after deduplicating.
create or replace macro licensing_once(keys_view, with_singles) as table
with chosen as materialized (
    select computer, channel, record_id, time_created, source_path, "offset", file_sha256,
        dup_count
    from records_once(keys_view, false)
)
select r.* exclude (run_id) replace (1::bigint as dup_count)
from licensing_records as r
anti join chosen as c
    on c.computer is not distinct from r.logged_by
    and c.channel is not distinct from r.channel
    and c.record_id is not distinct from r.record_id
    and c.time_created is not distinct from r.time_created
where with_singles
union all
select * exclude (rn)
from (
    -- the copy chosen, once (two rows of one file, path and offset are one record read twice)
    select
        r.* exclude (run_id) replace (c.dup_count as dup_count),
        row_number() over (
            partition by c.computer, c.channel, c.record_id, c.time_created
        ) as rn
    from licensing_records as r
    join chosen as c
        on c.computer is not distinct from r.logged_by
        and c.channel is not distinct from r.channel
        and c.record_id is not distinct from r.record_id
        and c.time_created is not distinct from r.time_created
        and c.source_path is not distinct from r.source_path
        and c."offset" is not distinct from r."offset"
        and c.file_sha256 is not distinct from r.file_sha256
)
where rn = 1;

-- licensing_events: the events of the licensing families (license server and its Windows
-- Server 2003 name, RemoteConnectionManager, LocalSessionManager), each record once, as the
-- `events` view shows it: one row per computer, channel, record id and time, the copy
-- `events` chooses (`recovered` says whether it was read from chunk slack), dup_count the
-- files holding it. Most records have one copy: the copies are looked for among the records
-- held by several files (licensing_copy_keys).
-- The keys of the licensing records held by several files, their copies counted among every
-- event. Looked for among the records' own keys: a session computing cal_events for a few
-- devices reads their records alone, and their copies alone.
create or replace view licensing_copy_keys as
select e.computer, e.channel, e.record_id, e.time_created
from events_all as e
semi join (
    select distinct logged_by as computer, channel, record_id, time_created
    from licensing_records
) as k
    on k.computer is not distinct from e.computer
    and k.channel is not distinct from e.channel
    and k.record_id is not distinct from e.record_id
    and k.time_created is not distinct from e.time_created
group by all
having count(*) > 1;

create or replace view licensing_events as
select * from licensing_once('licensing_copy_keys', true);

-- The keys of the records a copy of which licensing_records gives a problem (the events
-- licensing_problems shows, before their copies are counted).
create or replace view problem_record_keys as
select distinct logged_by as computer, channel, record_id, time_created
from licensing_records
where action in ('server-problem', 'revoke-refused') or problem is not null;

-- The few events the diagnosis reads besides CAL facts: server problems, refused revocations,
-- database rebuilds (every event with a catalog problem): the rows of licensing_events with
-- such an action or a problem. Their copies are looked for among these records alone (among
-- every event, the copies of all records took longer than the rest at 50,000 devices).
-- server_findings and revoke_plan read this view (kept in the lake:
-- caltrail/pipeline/materialize.py).
-- materialize: lake
create or replace view licensing_problems as
select *
from licensing_once('problem_record_keys', false)
where action in ('server-problem', 'revoke-refused') or problem is not null;
