-- The whole EVTX record conversion in DuckDB, as a benchmark route (tools/evtx_route.py):
-- pyevtx-rs's JSON text of each record in, the `events` columns out, with `odd` set on
-- every record this reading is not sure to read as caltrail/parsers/evtx/reader.py's
-- `record_from_json` does (those would go to the reader's own conversion). Not used by
-- ingest: `make bench BENCH_ARGS="--only routes"` times it against that conversion and
-- checks its rows against it, field by field.
--
-- How it is written, from what was measured (docs/SPEED.md section 1):
-- - each record's text is parsed once (`from_json` with the structure the reader reads);
-- - the data map's entries are rebuilt with list functions over each record's entries,
--   not one row per value grouped back (the grouping cost more than the rules);
-- - a macro is inlined wherever it names its argument, so the rules run over columns of
--   CTEs computed once (`materialized`), never over a JSON expression;
-- - cheap tests first (first characters, lengths) so that most values meet no regular
--   expression; the rare shapes (dates, CR characters, nested elements, repeated names,
--   numbers that are not plain integers) are marked odd, not read.
--
-- Input: table `rendered(pos, text, filetime, record_id, chunk, "offset")`.

-- _snorm over a plain string, or '\x00ODD' where the reader's rule is not written here.
create or replace macro route_snorm(v) as case
    when v is null then null
    when v = '' or v = '(NULL)' then null
    when contains(v, chr(13)) then '\x00ODD'
    when ascii(v) <= 32 or ascii(v) in (133, 160, 5760) or ascii(v) between 8192 and 12288
        then '\x00ODD'  -- may be all blanks as Python's str.isspace sees them
    when left(v, 2) = '0x' and regexp_full_match(v, '0x[0-9a-fA-F]+')
        then '0x' || coalesce(nullif(ltrim(lower(substr(v, 3)), '0'), ''), '0')
    when v in ('True', 'False', 'true', 'false') then lower(v)
    when length(v) in (36, 38) and regexp_full_match(v,
        '\{?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\}?')
        then case when length(v) = 38 and left(v, 1) <> '{' then '\x00ODD'
            else '{' || lower(trim(v, '{}')) || '}' end
    when length(v) between 19 and 35 and substr(v, 5, 1) = '-'
        and regexp_matches(v, '^\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d') then '\x00ODD'
    else v end;

-- A JSON value's text before route_snorm: a string unescaped, an integer or boolean as
-- printed, null as NULL; anything else odd.
create or replace macro route_text(j) as case
    when j is null or j = 'null' then null
    when left(j, 1) = '"' then j ->> '$'
    when j in ('true', 'false') then j::varchar
    when regexp_full_match(j, '-?[0-9]+') then j::varchar
    else '\x00ODD' end;

create or replace macro route_int(j) as case
    when j is null or j = 'null' then null
    when regexp_full_match(j, '-?[0-9]{1,18}') then j::varchar::bigint end;

create or replace macro route_int_odd(j) as
    j is not null and j <> 'null' and not regexp_full_match(j, '-?[0-9]{1,18}');

-- An entry of a data section the reader reads by rules not written here: a nested element,
-- a `#` key, or a name pyevtx-rs suffixed because the record gives it twice.
create or replace macro route_odd_entry(k, v) as
    left(v, 1) in ('{', '[') or left(k, 1) = '#' or regexp_matches(k, '_[0-9]+$');

-- unnamed <Data> items: a JSON array or one value -> [{key: paramN, t: text}]
create or replace macro route_params(t) as
    case when left(t, 1) = '[' then
        list_transform(t::JSON[], lambda x, i: {'key': 'param' || i, 't': route_text(x)})
    else [{'key': 'param1', 't': route_text(t)}] end;

create or replace temp view route_events as
with parsed as materialized (
    select pos, filetime, record_id, chunk, "offset",
        from_json(text, getvariable('route_structure')).Event as e,
        json_keys(text, '$.Event') as root_keys
    from rendered
),
fields as materialized (
    select pos, filetime, record_id, chunk, "offset", root_keys,
        e.EventData as ed,
        e.UserData as ud,
        try_cast(e.EventData as MAP(VARCHAR, JSON)) as edm,
        try_cast(e.UserData as MAP(VARCHAR, JSON)) as udm,
        case when left(e.System.EventID, 1) = '{' then e.System.EventID -> '$."#text"'
            else e.System.EventID end as eid,
        case when left(e.System.EventID, 1) = '{'
            then e.System.EventID -> '$."#attributes".Qualifiers' end as qual,
        e.System.Version as version,
        e.System.Level as level,
        e.System.Task as task,
        e.System.Opcode as opcode,
        e.System.Execution."#attributes".ProcessID as pid,
        e.System.Execution."#attributes".ThreadID as tid,
        route_text(e.System.Keywords) as keywords,
        route_text(e.System.Provider."#attributes".Name) as provider,
        route_text(e.System.Provider."#attributes".Guid) as provider_guid,
        route_text(e.System.Provider."#attributes".EventSourceName) as event_source_name,
        route_text(e.System.Channel) as channel,
        route_text(e.System.Computer) as computer,
        route_text(e.System.Security."#attributes".UserID) as user_sid,
        route_text(e.System.Correlation."#attributes".ActivityID) as activity_id,
        route_text(e.System.Correlation."#attributes".RelatedActivityID) as related_activity_id,
        e.System.TimeCreated."#attributes".SystemTime as system_time,
        -- the record header's time, microseconds (the reader's filetime_to_datetime)
        make_timestamptz(filetime // 10 - 11644473600000000) as header_time
    from parsed
),
items as (
    select *,
        case
            when edm is null then []
            when map_keys(edm) = ['Data'] then route_params(
                case when left(edm['Data'], 1) = '{' then edm['Data'] -> '$."#text"'
                    else edm['Data'] end)
            else list_transform(map_entries(edm), lambda x: {'key': x.key,
                't': case
                    when route_odd_entry(x.key, x.value) or x.key in ('Data', 'Binary', '')
                        then '\x00ODD'
                    else route_text(x.value) end})
        end as ed_items,
        case
            when udm is null then []
            when len(map_keys(udm)) = 1 then list_transform(
                map_entries(try_cast(map_values(udm)[1] as MAP(VARCHAR, JSON))),
                lambda x: {'key': map_keys(udm)[1] || '.' || x.key,
                    't': case
                        when x.key = '#attributes' then case
                            when regexp_full_match(x.value,
                                '\{"xmlns(:[A-Za-z0-9_]+)?":"[^"\\]*"\}') then '\x00SKIP'
                            else '\x00ODD' end
                        when route_odd_entry(x.key, x.value) then '\x00ODD'
                        else route_text(x.value) end})
            else [{'key': '', 't': '\x00ODD'}]
        end as ud_items
    from fields
),
normalised as (
    select *,
        list_transform(list_concat(ed_items, ud_items),
            lambda x: {'key': x.key, 'value': route_snorm(x.t)}) as entries
    from items
)
select
    pos,
    -- within the header's second: the header's time (the reader's _jtime_created)
    case when left(system_time, 1) = '"'
            and substr(system_time, 2, 19) = strftime(header_time, '%Y-%m-%dT%H:%M:%S')
        then header_time end as time_created,
    filetime,
    record_id,
    route_int(eid)::integer as event_id,
    route_int(qual)::integer as qualifiers,
    route_int(version)::integer as version,
    route_int(level)::integer as level,
    route_int(task)::integer as task,
    route_int(opcode)::integer as opcode,
    route_snorm(keywords) as keywords,
    route_snorm(provider) as provider,
    route_snorm(provider_guid) as provider_guid,
    route_snorm(event_source_name) as event_source_name,
    route_snorm(channel) as channel,
    route_snorm(computer) as computer,
    route_snorm(user_sid) as user_sid,
    route_snorm(activity_id) as activity_id,
    route_snorm(related_activity_id) as related_activity_id,
    route_int(pid) as process_id,
    route_int(tid) as thread_id,
    -- (a UserData namespace declaration is no value; the key tells it from a value that
    -- happens to read '\x00SKIP')
    map_from_entries(list_filter(entries,
        lambda x: not (x.value is not distinct from '\x00SKIP' and suffix(x.key, '.#attributes'))))
        as data,
    chunk,
    "offset",
    coalesce(list_bool_or(list_transform(entries,
            lambda x: x.value is not distinct from '\x00ODD')), false)
        or not list_has_all(['#attributes', 'System', 'EventData', 'UserData', 'RenderingInfo'],
            root_keys)
        or coalesce(left(ed, 1) = '{' and edm is null, false)
        or coalesce(left(ud, 1) = '{' and udm is null, false)
        or coalesce(ud <> 'null' and left(ud, 1) <> '{', false)
        or coalesce(ed <> 'null' and left(ed, 1) <> '{', false)
        or coalesce(route_int(eid) > 65535, false)
        or route_int_odd(eid) or route_int_odd(qual) or route_int_odd(version)
        or route_int_odd(level) or route_int_odd(task) or route_int_odd(opcode)
        or route_int_odd(pid) or route_int_odd(tid)
        or not coalesce(left(system_time, 1) = '"'
            and substr(system_time, 2, 19) = strftime(header_time, '%Y-%m-%dT%H:%M:%S'), false)
        or contains(concat_ws(' ', '', keywords, provider, provider_guid, event_source_name,
            channel, computer, user_sid, activity_id, related_activity_id), '\x00ODD')
        as odd
from normalised;
