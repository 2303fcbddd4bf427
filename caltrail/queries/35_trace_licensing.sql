-- Layer 2, licensing facts from trace dumps (tracefmt / netsh text, tracerpt XML and CSV).
--
-- The wording of license-server trace messages is not public, so extraction is driven by
-- patterns kept as data: queries/trace_patterns.csv (the defaults) and the user's own table
-- LAKE/_ref/user_trace_patterns.csv (`caltrail ingest --patterns FILE`; the DuckDB shell reads
-- the same file). One row per pattern:
--   name          reported in trace_licensing.pattern. A user row with the name of a default
--                 row replaces it; with an empty regex it switches the default off.
--   module_regex  RE2 regex, case-insensitive, over the module / provider (tracefmt `[module]`,
--                 tracerpt Provider Name or GUID). Empty: any module, and lines without one.
--                 A module matched by some pattern's module_regex is a "licensing module".
--   regex         RE2 regex over the message (tracerpt XML: the message, then the event's
--                 EventData/UserData values as `Name=value` lines). Use (?i) for any case.
--   groups_regex  optional: the regex groups 1..n are read with, from the text `regex`
--                 matched (the whole of it: anchored at both ends). For a long regex: RE2
--                 reads groups at a cost that grows with the regex's size (its counted
--                 repetitions such as {19} most), finding a match does not; a smaller regex
--                 that reads the same groups from the match is cheaper. Without it, the
--                 groups are those of `regex`.
--   captures      what groups 1..n capture, '|'-separated: client_name, hwid, user,
--                 license_id, keypack_id, operation, result; an empty entry skips a group;
--                 several groups may name the same field (the first one that took part wins).
--   operation     the operation a match means when none was captured (optional).
--   priority      smaller wins when two patterns give the same field (empty: 10, before
--                 every default; defaults: specific wordings 20, Key=Value 50, bare HWIDs 80+).
--   example, note documentation; every default's example is checked by the tests.
-- A message is a licensing fact when the matching patterns give at least one of client name,
-- HWID, user, license id or key pack id: an operation or result alone is no fact. One fact
-- per message; each field comes from the best pattern that captured it.
--
-- Views: trace_licensing (the facts), trace_unmatched (messages of licensing modules that
-- gave no fact, by shape, most frequent first: what to write a pattern for), trace_patterns
-- (the table in use, with a `problem` column), trace_pattern_check (each pattern tried on its
-- own example). Patterns are read when the session opens.

-- ---------------------------------------------------------------- value macros

-- A captured value: trimmed, and the usual renderings of "nothing" made NULL.
-- (Every word is at most 6 characters, and lower() maps one character to one, of at most 4
-- bytes: a longer value is none of them, and is not lowered.)
create or replace macro trace_value(v) as
    case
        when v is null then null
        when strlen(trim(v)) <= 24
            and lower(trim(v)) in ('', '(null)', 'null', '<null>', '-', 'n/a', 'none', '(none)', '<none>')
            then null
        else trim(v)
    end;

-- An operation wording -> request | issue-temporary | issue-permanent | upgrade | renew |
-- revoke | deny, else NULL ("issue" alone does not say which).
create or replace macro trace_operation_letters(v) as
    regexp_replace(lower(coalesce(v, '')), '[^a-z]', '', 'g');

-- The operation of the letters of a wording (trace_operation_letters).
create or replace macro trace_operation_of_letters(l) as
    case
        when l = '' then null
        when regexp_matches(l, 'revok') then 'revoke'
        when regexp_matches(l, 'renew') then 'renew'
        when regexp_matches(l, 'upgrad') then 'upgrade'
        when regexp_matches(l, 'deny|denied|reject|refus') then 'deny'
        when regexp_matches(l, 'temp') then 'issue-temporary'
        when regexp_matches(l, 'perm') then 'issue-permanent'
        when regexp_matches(l, 'request|^req$') then 'request'
    end;

create or replace macro trace_operation(v) as
    trace_operation_of_letters(trace_operation_letters(v));

-- A DWORD as 8 hex digits -> its 4 bytes little-endian (registry order).
create or replace macro hwid_dword_le(d) as
    substr(d, 7, 2) || substr(d, 5, 2) || substr(d, 3, 2) || substr(d, 1, 2);

-- A real platform id has a non-zero low byte and a zero high byte (parsers/hwid.py).
create or replace macro hwid_plausible_platform(le8) as
    substr(le8, 1, 2) <> '00' and substr(le8, 7, 2) = '00';

-- 40 hex digits without separators: byte order or DWORD order, told by the platform id,
-- else byte order (parsers/hwid.py, DEFAULT_PLAIN_HEX_ORDER); FreeRDP's legacy HWID in either.
create or replace macro hwid_plain_hex(j) as
    case
        when j = '000000007319468847d7b1aee40dbf5dd963c999'
            or j = '0000000088461973aeb1d7475dbf0de499c963d9' then '000000007319468847d7b1aee40dbf5dd963c999'
        when hwid_plausible_platform(substr(j, 1, 8)) then j
        when hwid_plausible_platform(hwid_dword_le(substr(j, 1, 8)))
            then hwid_dword_le(substr(j, 1, 8)) || hwid_dword_le(substr(j, 9, 8))
                || hwid_dword_le(substr(j, 17, 8)) || hwid_dword_le(substr(j, 25, 8))
                || hwid_dword_le(substr(j, 33, 8))
        else j
    end;

-- Hex tokens of a HWID rendering: separators `-:,;._` and blanks, `0x` and `hex(3):` dropped.
create or replace macro hwid_tokens(s) as
    list_transform(
        list_filter(
            string_split_regex(
                regexp_replace(
                    regexp_replace(lower(trim(s)), '^[\s{}\[\]()"'']+|[\s{}\[\]()"'']+$', '', 'g'),
                    '^hex(\([0-9a-f]+\))?:', ''),
                '[\s,;:._-]+'),
            lambda t: t <> ''),
        lambda t: case when t like '0x_%' then substr(t, 3) else t end);

-- Canonical HWID (40 lower hex, the 20 bytes in registry order; parsers/hwid.py) from text:
-- 20 byte groups, five DWORDs (`0x00000002, 0x7d4eb2c0, ...` or `00000002-7D4EB2C0-...`,
-- each little-endian), or 40 hex digits in any case. Anything else: NULL.
create or replace macro hwid_from_tokens(tk) as
    case
        when tk is null or len(tk) = 0
            or not list_bool_and(list_transform(tk, lambda t: regexp_full_match(t, '[0-9a-f]+')))
            then null
        when len(tk) = 20 and list_bool_and(list_transform(tk, lambda t: len(t) <= 2))
            then array_to_string(list_transform(tk, lambda t: lpad(t, 2, '0')), '')
        when len(tk) = 5 and list_bool_and(list_transform(tk, lambda t: len(t) <= 8))
            then array_to_string(list_transform(tk, lambda t: hwid_dword_le(lpad(t, 8, '0'))), '')
        when len(array_to_string(tk, '')) = 40
            and list_bool_and(list_transform(tk, lambda t: len(t) % 2 = 0))
            then hwid_plain_hex(array_to_string(tk, ''))
    end;

create or replace macro hwid_from_text(s) as
    case when s is null then null else hwid_from_tokens(hwid_tokens(s)) end;

-- ---------------------------------------------------------------- the pattern table

-- How many capturing groups a regex has, as far as the text tells (escapes and character
-- classes skipped; `(?:`, `(?i)` do not count, `(?P<name>` and `(?<name>` do).
create or replace macro trace_regex_groups_in(t) as
    len(t) - len(replace(t, '(', '')) - (len(t) - len(replace(t, '(?', ''))) // 2
        + (len(t) - len(replace(t, '(?P<', ''))) // 4 + (len(t) - len(replace(t, '(?<', ''))) // 3;

create or replace macro trace_regex_groups(r) as
    trace_regex_groups_in(regexp_replace(regexp_replace(coalesce(r, ''), '\\.', '', 'g'),
        '\[\^?\]?[^\]]*\]', '', 'g'));

-- Defaults and user rows (the user's file may leave out columns; a user row replaces the
-- default of the same name). `problem` says why a row is not used.
create or replace view trace_patterns as
with rows as (
    select
        *,
        parse_filename(filename) = 'user_trace_patterns.csv' as from_user,
        row_number() over () as row_order
    from read_csv(
        [getvariable('ref_dir') || '/trace_patterns.csv',
         getvariable('ref_dir') || '/user_trace_patterns.csv'],
        header = true,
        all_varchar = true,
        union_by_name = true,
        filename = true,
        null_padding = true,  -- a row with more values than the header is still read
        quote = '"',
        escape = '"'
    )
),
clean as (
    select
        trim(name) as name,
        nullif(trim(module_regex), '') as module_regex,
        nullif(regex, '') as regex,
        nullif(groups_regex, '') as groups_regex,
        case when trim(coalesce(captures, '')) = '' then []::varchar[]
            else list_transform(string_split(captures, '|'), lambda c: lower(trim(c))) end as capture_list,
        nullif(trim(operation), '') as operation,
        coalesce(try_cast(nullif(trim(priority), '') as integer), case when from_user then 10 else 100 end)
            as priority,
        case when from_user then 'user' else 'default' end as origin,
        example,
        note,
        from_user,
        row_order
    from rows
    where nullif(trim(name), '') is not null
),
chosen as (
    -- a user row wins over a default of the same name (and the last user row over earlier ones)
    select * from clean
    qualify row_number() over (partition by name order by from_user desc, row_order desc) = 1
)
select
    name,
    module_regex,
    regex,
    groups_regex,
    array_to_string(capture_list, '|') as captures,
    capture_list,
    trace_regex_groups(coalesce(groups_regex, regex)) as regex_groups,
    operation,
    priority,
    origin,
    case
        when regex is null then 'disabled (no regex)'
        when try(regexp_matches('', regex)) is null then 'invalid regex'
        when groups_regex is not null and try(regexp_matches('', groups_regex)) is null
            then 'invalid groups_regex'
        when module_regex is not null and try(regexp_matches('', module_regex, 'i')) is null
            then 'invalid module_regex'
        when len(list_filter(capture_list, lambda c: c <> ''
            and c not in ('client_name', 'hwid', 'user', 'license_id', 'keypack_id', 'operation', 'result'))) > 0
            then 'unknown capture name: ' || array_to_string(list_filter(capture_list, lambda c: c <> ''
                and c not in ('client_name', 'hwid', 'user', 'license_id', 'keypack_id', 'operation', 'result')), ', ')
        when len(capture_list) > 9 then 'more than 9 captures'
        when operation is not null and trace_operation(operation) is null then 'unknown operation: ' || operation
    end as problem,
    example,
    note
from chosen
union all
-- a user file with rows of which none could be read (not comma or semicolon separated, no
-- header naming the columns, a quote left open...) is said so here, not silently ignored
select
    'user_trace_patterns.csv', null, null, null, '', []::varchar[], 0, null, null, 'user',
    'no row could be read: expected CSV with a header line (name, module_regex, regex, '
        || 'captures, operation, priority) and one pattern a line',
    null, null
from read_text(getvariable('ref_dir') || '/user_trace_patterns.csv') as f
where len(list_filter(string_split_regex(f.content, '\r?\n'), lambda l: trim(l) <> '')) > 1
    and not exists (select 1 from clean where from_user)
order by priority, name;

-- ---------------------------------------------------------------- matching

-- The text the patterns read: the message; tracerpt XML events add their named values
-- (EventData, UserData, DebugData items) as `Name=value` lines.
create or replace macro trace_match_text(message, fields, parser) as
    concat_ws(
        chr(10),
        message,
        case when parser like 'tracerpt_xml/%' then nullif(array_to_string(list_transform(
            list_filter(map_entries(fields), lambda e: e.value is not null and not regexp_matches(
                e.key,
                '^(System|RenderingInfo|ExtendedTracingInfo|Header|UserData)(\.|\[|$)|^(tat_line|SequenceNumber|Binary|BinaryEventData|Message|Function|FileLine|LevelName|FlagsName)$')),
            lambda e: e.key || '=' || e.value), chr(10)), '') end
    );

-- Every trace message with the text the patterns read. msg_id numbers the rows of one
-- evaluation only (it is no stable key: use file_sha256 and line).
create or replace view trace_pattern_input as
select
    row_number() over () as msg_id,
    t.ts,
    t.provider,
    t.message,
    trace_match_text(t.message, t.fields, t.parser) as match_text,
    t.line,
    t.source_path,
    t.file_sha256
from trace_events as t;

-- The trace rows trace_licensing reads (a session points it at the runs whose facts are not
-- kept yet: see trace_licensing below).
create or replace view trace_licensing_input as
select * from trace_events;

-- Modules matched by a pattern's module_regex (the licensing modules).
create or replace view trace_licensing_modules as
select distinct i.provider
from (select distinct provider from trace_events where provider is not null) as i
join trace_patterns as p
    on p.problem is null and p.module_regex is not null
    and regexp_matches(i.provider, p.module_regex, 'i');

-- The usable patterns, numbered k in the order they are tried: (priority, name).
create or replace view trace_patterns_active as
select row_number() over (order by priority, name) as k, *
from trace_patterns
where problem is null;

-- The pattern table's values the matching reads, in k order (each a list; read when the
-- session opens). The matching views below read them with getvariable(...)[k]: DuckDB folds
-- such a value into a constant, so each regex is compiled once per query, where a regex
-- read from a column is compiled again for every row (80 times slower on a real trace).
-- After editing a pattern file in an open DuckDB shell, open the lake again.
set variable trace_regexes = (select coalesce(list(regex order by k), []) from trace_patterns_active);
set variable trace_group0_regexes = (
    select coalesce(list('(' || regex || ')' order by k), []) from trace_patterns_active);
-- a pattern's groups_regex over the whole match: plain, and as group 0 (NULL: none)
set variable trace_groups_regexes = (
    select coalesce(list('^(?:' || groups_regex || ')$' order by k), [])
    from trace_patterns_active);
set variable trace_group0_groups_regexes = (
    select coalesce(list('^(' || groups_regex || ')$' order by k), [])
    from trace_patterns_active);
set variable trace_names = (select coalesce(list(name order by k), []) from trace_patterns_active);
set variable trace_priorities = (
    select coalesce(list(priority order by k), []) from trace_patterns_active);
set variable trace_captures = (
    select coalesce(list(capture_list order by k), []) from trace_patterns_active);
set variable trace_operations = (
    select coalesce(list(operation order by k), []) from trace_patterns_active);
set variable trace_constant_operations = (
    select coalesce(list(trace_operation(operation) order by k), []) from trace_patterns_active);
set variable trace_module_regexes = (
    select coalesce(list(module_regex order by module_regex), [])
    from (select distinct module_regex from trace_patterns_active where module_regex is not null));

-- Every (message, pattern) match with the pattern's groups 1..n. Its query has one branch
-- per pattern: the loader writes it from the pattern table (caltrail/pipeline/
-- trace_query.py, pattern_hits); the statement here gives its columns.
-- generated: trace_pattern_hits
create or replace view trace_pattern_hits as
select
    null::bigint as msg_id,
    null::timestamptz as ts,
    null::varchar as provider,
    null::varchar as message,
    null::bigint as line,
    null::varchar as source_path,
    null::varchar as file_sha256,
    null::varchar as name,
    null::integer as priority,
    null::varchar[] as capture_list,
    null::varchar as operation,
    null::varchar[] as groups
where false;

-- One row per (message, field, candidate value); the best is first by (priority, name, group).
-- A pattern's constant operation comes after its captured one (group 99).
create or replace view trace_pattern_values as
with hits as materialized (
    select * from trace_pattern_hits
),
numbered as (
    -- one row per group the pattern names (1..n of its capture list)
    select
        h.* exclude (operation),
        unnest(range(1, len(h.capture_list) + 1)) as group_no
    from hits as h
),
captured as (
    select
        h.* exclude (capture_list, groups, group_no),
        h.group_no,
        h.capture_list[h.group_no] as field,
        trace_value(h.groups[h.group_no]) as value
    from numbered as h
    where h.capture_list[h.group_no] <> ''
),
constant_ops as (
    select h.* exclude (capture_list, groups, operation), 99 as group_no, 'operation' as field,
        h.operation as value
    from hits as h
    where h.operation is not null
)
select * from captured where value is not null
union all
select * from constant_ops;

-- The extraction trace_licensing runs, one row per message of a licensing module: each
-- field the first non-empty value in (priority, name, group) order, as trace_pattern_values
-- and a per-message aggregation would choose it, without a row per (message, pattern) hit;
-- a pattern is tried only on the messages where it can still change the fact. The loader
-- writes its query from the pattern table (caltrail/pipeline/trace_query.py,
-- licensing_messages); the statement here gives its columns. A message's fact is the one
-- trace_pattern_values gives (tests/queries/test_trace_licensing.py).
-- generated: trace_licensing_messages
create or replace view trace_licensing_messages as
select
    null::timestamptz as ts,
    null::varchar as message,
    null::bigint as line,
    null::varchar as source_path,
    null::varchar as file_sha256,
    null::varchar as run_id,
    null::varchar as client_name_raw,
    null::varchar as hwid_raw,
    null::varchar as keypack_id,
    null::varchar as license_id,
    null::varchar as operation,
    null::varchar as result,
    null::varchar as user_name,
    null::varchar as pattern
where false;

-- trace_licensing: the licensing facts of the trace messages. A message's fact depends on its
-- row and the patterns only, so the facts are kept per ingest run of each trace file: a
-- session computes those of the runs not kept yet (this view, over trace_licensing_input
-- pointed at them) and reads the others from LAKE/_derived (caltrail/pipeline/per_run.py).
-- After a batch, the CAL facts of the devices it touched are read from the facts of their
-- names and of the batch's files, and the facts naming no computer (a line naming a license
-- id alone may be any touched license's); the parts are written in name order, so those
-- rows are found without reading the others (caltrail/pipeline/patch.py).
-- materialize: run
-- per device: 'name' client_name, 'file' file_sha256
-- read with every device: client_name is null
create or replace view trace_licensing as
with per_message as (
    select * from trace_licensing_messages
),
facts as (
    select *
    from per_message
    where coalesce(client_name_raw, hwid_raw, user_name, license_id, keypack_id) is not null
),
hwids as (
    -- each HWID rendering read once (one device's HWID recurs in many messages)
    select hwid_raw, hwid_from_tokens(hwid_tokens(hwid_raw)) as hwid
    from (select distinct hwid_raw from facts where hwid_raw is not null)
),
names as (
    -- and each client name (one device's name recurs too)
    select client_name_raw, norm_name(client_name_raw) as client_name
    from (select distinct client_name_raw from facts where client_name_raw is not null)
)
select
    f.ts::timestamptz as ts,
    f.operation::varchar as operation,
    f.client_name_raw::varchar as client_name_raw,
    n.client_name::varchar as client_name,
    h.hwid::varchar as hwid,
    f.hwid_raw::varchar as hwid_raw,
    f.user_name::varchar as user_name,
    f.license_id::varchar as license_id,
    f.keypack_id::varchar as keypack_id,
    f.result::varchar as result,
    f.pattern::varchar as pattern,
    f.message::varchar as message,
    f.line::bigint as line,
    f.source_path::varchar as source_path,
    f.file_sha256::varchar as file_sha256,
    f.run_id::varchar as run_id
from facts as f
left join hwids as h using (hwid_raw)
left join names as n using (client_name_raw);

-- Each usable pattern tried on its own `example`: did it match, and what would it take from
-- it (a quick check while writing a pattern, without a trace). Few rows: the regex is taken
-- from the column here.
create or replace view trace_pattern_check as
with reading as (
    -- the text and regex the groups are read from: the match and groups_regex, if given
    select
        p.*,
        case when p.groups_regex is null then p.example
            else regexp_extract(p.example, p.regex, 0) end as group_text,
        coalesce('^(?:' || p.groups_regex || ')$', p.regex) as group_regex
    from trace_patterns as p
    where p.problem is null and p.example is not null
),
tried as (
    select
        p.* exclude (group_text, group_regex),
        p.example is not null and regexp_matches(p.example, p.regex) as matched,
        [regexp_extract(p.group_text, p.group_regex, 1),
         regexp_extract(p.group_text, p.group_regex, 2),
         regexp_extract(p.group_text, p.group_regex, 3),
         regexp_extract(p.group_text, p.group_regex, 4),
         regexp_extract(p.group_text, p.group_regex, 5),
         regexp_extract(p.group_text, p.group_regex, 6),
         regexp_extract(p.group_text, p.group_regex, 7),
         regexp_extract(p.group_text, p.group_regex, 8),
         regexp_extract(p.group_text, p.group_regex, 9)] as groups
    from reading as p
),
fields as (
    select
        t.name,
        t.capture_list[g.i] as field,
        first(trace_value(t.groups[g.i]) order by g.i)
            filter (where trace_value(t.groups[g.i]) is not null) as value
    from tried as t, (select unnest(range(1, 10)) as i) as g
    where t.matched and g.i <= len(t.capture_list) and t.capture_list[g.i] <> ''
    group by all
)
select
    t.name,
    t.origin,
    t.example,
    t.matched,
    norm_name(any_value(f.value) filter (where f.field = 'client_name')) as client_name,
    hwid_from_text(any_value(f.value) filter (where f.field = 'hwid')) as hwid,
    any_value(f.value) filter (where f.field = 'user') as user_name,
    any_value(f.value) filter (where f.field = 'license_id') as license_id,
    any_value(f.value) filter (where f.field = 'keypack_id') as keypack_id,
    coalesce(trace_operation(any_value(f.value) filter (where f.field = 'operation')),
        trace_operation(t.operation)) as operation,
    any_value(f.value) filter (where f.field = 'result') as result
from tried as t
left join fields as f on f.name = t.name
group by t.name, t.origin, t.example, t.matched, t.operation, t.priority
order by t.priority, t.name;

-- The shape of a message: quoted strings, `=value`s, GUIDs, hex and numbers masked, blanks
-- collapsed; messages of one wording share a shape.
create or replace macro trace_message_shape(m) as
    trim(regexp_replace(regexp_replace(regexp_replace(regexp_replace(regexp_replace(regexp_replace(
        regexp_replace(coalesce(m, ''),
            '"[^"]*"|''[^'']*''', '<s>', 'g'),
            '\{?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\}?', '<guid>', 'g'),
            '=[ \t]*[^\s,;]+', '=<v>', 'g'),
            '\b0[xX][0-9a-fA-F]+\b', '<hex>', 'g'),
            '\b[0-9a-fA-F]{8,}\b', '<hex>', 'g'),
            '[0-9]+', '<n>', 'g'),
            '\s+', ' ', 'g'));

-- Messages of licensing modules that gave no licensing fact, by shape, most frequent first:
-- the wordings a pattern could be written for.
create or replace view trace_unmatched as
with facts as (
    select distinct file_sha256, line, message from trace_licensing
),
unmatched as (
    select i.*, trace_message_shape(i.message) as shape
    from trace_events as i
    semi join trace_licensing_modules as m on m.provider = i.provider
    anti join facts as f
        on f.file_sha256 = i.file_sha256 and f.line = i.line and f.message is not distinct from i.message
)
select
    shape,
    count(*) as n,
    first(message order by ts, source_path, line) as example,
    list(distinct provider order by provider) as modules,
    min(ts) as first_ts,
    max(ts) as last_ts,
    first(source_path || ':' || line order by ts, source_path, line) as example_at
from unmatched
group by shape
order by n desc, shape;
