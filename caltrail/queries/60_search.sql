-- Search over every event read, without writing SQL (`caltrail search`): EVTX records
-- (events_all) and trace records (trace_events) on one time axis, with one text column to
-- search in (an EVTX record's EventData as `name=value; ...`, a trace record's message).
--
-- search_hits(q_from, q_to, q_text, q_regex, q_event_ids, q_providers, q_computers,
-- q_sources): the records matching every filter given; a NULL filter matches everything.
--   q_from, q_to     time window, start included, end excluded (timestamptz)
--   q_text           text the record holds, any case
--   q_regex          a regular expression (RE2) the text matches
--   q_event_ids      a list of event ids
--   q_providers      a list of provider (or trace module) names, each matched as a part of
--                    the name, any case
--   q_computers      a list of computer names, each matched whole or as the first label of
--                    an FQDN (LS01 finds LS01.corp.example), any case; trace records carry
--                    no computer, so this filter keeps EVTX records only
--   q_sources        a list of 'evtx' and/or 'trace'
-- An EVTX record reached through several files (a live log and its copy) is shown once, as
-- the events view does it, with dup_count; the filters run first, so a search reads the
-- matching records' copies only. (Parameter names are prefixed: a column of the same name
-- in a table the macro reads would fail to bind.)
create or replace macro search_hits(
    q_from, q_to, q_text, q_regex, q_event_ids, q_providers, q_computers, q_sources
) as table
with evtx_rendered as (
    select
        *,
        array_to_string(
            list_transform(map_entries(data), lambda e: e.key || '=' || coalesce(e.value, '')),
            '; '
        ) as text
    from events_all
    where (q_sources is null or list_contains(q_sources, 'evtx'))
        and (q_from is null or time_created >= q_from)
        and (q_to is null or time_created < q_to)
        and (q_event_ids is null or list_contains(q_event_ids, event_id))
        and (q_providers is null or list_bool_or(list_transform(q_providers,
            lambda p: contains(lower(coalesce(provider, event_source_name, '')), lower(p)))))
        and (q_computers is null or list_bool_or(list_transform(q_computers,
            lambda c: lower(computer) = lower(c) or starts_with(lower(computer), lower(c) || '.'))))
),
evtx as (
    select * exclude (rn)
    from (
        select
            *,
            count(*) over w as dup_count,
            row_number() over (w order by source_path, "offset") as rn
        from evtx_rendered
        where (q_text is null or contains(lower(text), lower(q_text)))
            and (q_regex is null or regexp_matches(text, q_regex))
        window w as (partition by computer, channel, record_id, time_created)
    )
    where rn = 1
),
trace as (
    select *
    from trace_events
    where (q_sources is null or list_contains(q_sources, 'trace'))
        and q_computers is null
        and (q_from is null or ts >= q_from)
        and (q_to is null or ts < q_to)
        and (q_event_ids is null or list_contains(q_event_ids, event_id))
        and (q_providers is null or list_bool_or(list_transform(q_providers,
            lambda p: contains(lower(coalesce(provider, '')), lower(p)))))
        and (q_text is null or contains(lower(coalesce(message, '')), lower(q_text)))
        and (q_regex is null or regexp_matches(coalesce(message, ''), q_regex))
)
select
    time_created as ts,
    'evtx' as source,
    computer,
    coalesce(provider, event_source_name) as provider,
    event_id,
    text,
    source_path,
    'chunk ' || chunk || ', offset ' || "offset" as location,
    channel,
    level::varchar as level,
    record_id,
    dup_count
from evtx
union all by name
select
    ts,
    'trace' as source,
    null::varchar as computer,
    provider,
    event_id,
    message as text,
    source_path,
    'line ' || line as location,
    null::varchar as channel,
    level,
    null::bigint as record_id,
    1 as dup_count
from trace;
