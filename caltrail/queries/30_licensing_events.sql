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

-- The (family, id) pairs the catalog gives a problem: the events licensing_problems shows.
create or replace view problem_event_ids as
select provider_family, event_id
from event_catalog
where action in ('server-problem', 'revoke-refused') or problem is not null;

-- The keys of the records one of whose copies has a problem id.
create or replace view problem_event_keys as
select distinct computer, channel, record_id, time_created
from events_all
where (licensing_provider_family(provider, event_source_name), event_id) in (
    select (provider_family, event_id) from problem_event_ids
);

-- The records of the problem ids, each once, as `events` shows them: every copy of a record
-- one of whose copies has such an id is read (whatever the other copies say), so the copy
-- chosen and dup_count are those of `events`. Copies are looked for among these few records
-- only: `events` finds them among every event (its grouping of all keys alone took longer
-- than the rest of licensing_problems at 50,000 devices).
create or replace view problem_events as
select * from records_once('problem_event_keys', false);

-- The rows of licensing_events, all of them or (problems_only) those licensing_problems
-- shows: the events of the licensing families, each record once (the `events` view: one
-- row per computer, channel, record id and time; dup_count copies; an allocated copy is
-- preferred to one recovered from chunk slack, and `recovered` says which was kept), for
-- problems_only those of problem_events whose (family, id) the catalog gives a problem.
create or replace macro licensing_rows(problems_only) as table
with deduplicated as (
    select
        *,
        licensing_provider_family(provider, event_source_name) as provider_family
    from query_table(case when problems_only then 'problem_events' else 'events' end)
    where licensing_provider_family(provider, event_source_name) is not null
        and (not problems_only or (licensing_provider_family(provider, event_source_name), event_id) in (
            select (provider_family, event_id) from problem_event_ids
        ))
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
    from deduplicated as s
    left join event_catalog as c
        on c.provider_family = s.provider_family
        and c.event_id = s.event_id
        and (c.qualifiers is null or s.qualifiers is null or c.qualifiers = s.qualifiers)
    where s.provider_family is not null
),
final as (
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
        dup_count,
        recovered,  -- read from chunk slack (events.recovered): evidence to mark as such
        source_path,
        file_sha256,
        chunk,
        "offset"
    from joined
)
select *
from final
where not problems_only or action in ('server-problem', 'revoke-refused') or problem is not null;

create or replace view licensing_events as
select * from licensing_rows(false);

-- The few events the diagnosis reads besides CAL facts: server problems, refused revocations,
-- database rebuilds (every event with a catalog problem): the rows of licensing_events with
-- such an action or a problem. server_findings and revoke_plan read this view (kept in the
-- lake: caltrail/pipeline/materialize.py).
-- materialize: lake
create or replace view licensing_problems as
select * from licensing_rows(true);
