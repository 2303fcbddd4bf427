-- caltrail: shared macros. Loaded first; every later file may use them.
-- Variables set by the loader: lake (absolute lake path), ref_dir (folder of the data tables).

-- Computer names: upper case, trailing "$" and DNS suffix stripped; IPv4 addresses kept.
-- (docs/ARCHITECTURE.md, "Rules that hold": normalised, raw kept.)
create or replace macro norm_name(n) as
    case
        when n is null or trim(n) = '' then null
        when regexp_matches(trim(n), '^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$') then trim(n)
        else nullif(upper(split_part(rtrim(trim(n), '$'), '.', 1)), '')
    end;

-- First non-null value of a MAP among '|'-separated candidate keys ("param2|EventXML.Param2").
-- The event catalog names fields this way so one row covers classic and manifest renderings.
create or replace macro data_field(data, fields) as
    case
        when fields is null or fields = '' then null
        else list_filter(list_transform(string_split(fields, '|'), lambda k: data[k]), lambda v: v is not null)[1]
    end;

-- FILETIME: 100 ns ticks since 1601-01-01 UTC.
create or replace macro filetime_to_ts(ft) as
    timestamptz '1601-01-01 00:00:00+00' + to_microseconds((ft // 10)::bigint);

-- Fill %1..%9 of a catalog message with the event's param values.
create or replace macro render_message(template, data) as
    case when template is null or template = '' then null else
    replace(replace(replace(replace(replace(replace(replace(replace(replace(template,
        '%9', coalesce(data['param9'], '')), '%8', coalesce(data['param8'], '')),
        '%7', coalesce(data['param7'], '')), '%6', coalesce(data['param6'], '')),
        '%5', coalesce(data['param5'], '')), '%4', coalesce(data['param4'], '')),
        '%3', coalesce(data['param3'], '')), '%2', coalesce(data['param2'], '')),
        '%1', coalesce(data['param1'], ''))
    end;

-- A reference table (caltrail/queries/*.csv, copied to LAKE/_ref where a user may edit it),
-- every value as text: the view reading it types and checks each column.
create or replace macro reference_table(file_name) as table
select *
from read_csv(
    getvariable('ref_dir') || '/' || file_name,
    header = true,
    all_varchar = true,
    quote = '"'
);
