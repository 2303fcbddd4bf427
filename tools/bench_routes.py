"""What a vectorised EVTX record path would cost: DuckDB's and Arrow's JSON readers on the
JSON text pyevtx-rs writes, per record, against pyevtx-rs's own iteration (`make bench`,
section "routes").

The question it answers: can the per-record Python that turns a rendered record into an
`events` row (decode, normalise, build the row) move into the engines caltrail already
ships, so that ingest comes within 3x of pyevtx-rs? Each figure is one step such a path
cannot skip, timed alone on every record of a file (CPU seconds, best of three, one
thread), as microseconds per record and as a multiple of pyevtx-rs iterating the same
file's records to JSON in the same run:

- DuckDB `json_extract_string` of the 19 System values caltrail keeps (one list of paths:
  the record is parsed once);
- DuckDB's cast of `EventData` to MAP(VARCHAR, JSON) (the data map keeps each record's own
  names, in order, with JSON nulls: a STRUCT inferred over many records cannot);
- DuckDB `from_json` of the record to the typed structure caltrail reads (System values,
  EventData map, UserData): everything in one typed read;
- the EventData map rebuilt with every value normalised as the reader does (one value per
  row, plain vectorised expressions, then grouped back per record): the part of the
  conversion that is caltrail's own rules rather than reading;
- DuckDB `read_json` of all records as newline-delimited JSON into a table (the bulk
  reader, schema detected: the naive pipeline's engine);
- pyarrow's JSON reader on the same lines (Arrow's C++ reader; its inferred STRUCT loses
  the per-record order of EventData names and cannot tell a JSON null from an absent
  name; it refuses a file whose records give one value different JSON types, as EventID
  is a number in most records and an object where it has Qualifiers).

Two more steps no record path can skip, timed the same way:

- the reader's framing and pyevtx-rs rendering each chunk behind a synthetic file header,
  the JSON text collected, not indented (as the reader asks for it) and not decoded: what a
  vectorised path would hand to DuckDB, and the texts the DuckDB and Arrow steps read;
- writing the file's `events` rows to zstd Parquet from an Arrow table already built (the
  rows caltrail's ingest gives for the file, read back from a lake).

Their sum with the two reading steps (System values, EventData map) is the floor of any
such path (`floor_steps`): below it is the reading alone, before a single normalisation
rule, recovery from chunk slack, hashing or the manifest.

The normalisation caltrail applies to values (hex, GUID and date forms that the two
backends print differently), the data map's repeated names and nested UserData come on top
of these, and so do recovery, hashing and the manifest.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

SYSTEM_PATHS = [
    "$.Event.System.EventID",
    '$.Event.System.EventID."#text"',
    '$.Event.System.EventID."#attributes".Qualifiers',
    "$.Event.System.Version",
    "$.Event.System.Level",
    "$.Event.System.Task",
    "$.Event.System.Opcode",
    "$.Event.System.Keywords",
    '$.Event.System.Provider."#attributes".Name',
    '$.Event.System.Provider."#attributes".Guid',
    '$.Event.System.Provider."#attributes".EventSourceName',
    "$.Event.System.Channel",
    "$.Event.System.Computer",
    '$.Event.System.Security."#attributes".UserID',
    '$.Event.System.Correlation."#attributes".ActivityID',
    '$.Event.System.Correlation."#attributes".RelatedActivityID',
    '$.Event.System.Execution."#attributes".ProcessID',
    '$.Event.System.Execution."#attributes".ThreadID',
    '$.Event.System.TimeCreated."#attributes".SystemTime',
]
ATTRS = '"#attributes"'
RECORD_STRUCTURE = (
    '{"Event": {"System": {"EventID": "JSON", "Version": "JSON", "Level": "JSON", '
    '"Task": "JSON", "Opcode": "JSON", "Keywords": "JSON", '
    f'"Provider": {{{ATTRS}: {{"Name": "JSON", "Guid": "JSON", "EventSourceName": "JSON"}}}}, '
    '"Channel": "JSON", "Computer": "JSON", '
    f'"Security": {{{ATTRS}: {{"UserID": "JSON"}}}}, '
    f'"Correlation": {{{ATTRS}: {{"ActivityID": "JSON", "RelatedActivityID": "JSON"}}}}, '
    f'"Execution": {{{ATTRS}: {{"ProcessID": "JSON", "ThreadID": "JSON"}}}}, '
    f'"TimeCreated": {{{ATTRS}: {{"SystemTime": "JSON"}}}}}}, '
    '"EventData": "MAP(VARCHAR, JSON)", "UserData": "JSON"}}'
)


# The EventData map rebuilt with each value normalised as the EVTX reader's `_norm` does
# (blanks, 0x numbers, booleans, GUIDs, dates to milliseconds), one value per row: the
# normalisation as plain vectorised expressions (regular expressions with constant
# patterns), not lambdas. A cost figure only: the reader's rules have more cases (dates
# rounding into the next second, repeated names, nested elements).
NORMALISED_MAP = r"""
with maps as (
    select row_number() over () as pos,
           try_cast(json_extract(text, '$.Event.EventData') as MAP(VARCHAR, VARCHAR)) as m
    from rendered
), items as (
    select pos, unnest(map_keys(m)) as k, unnest(map_values(m)) as v from maps
), normalised as (
    select pos, k, case
        when v is null or v = '' or v = '(NULL)' or regexp_full_match(v, '\s+') then null
        when starts_with(v, '0x') and regexp_full_match(v, '0x[0-9a-fA-F]+')
            then '0x' || coalesce(nullif(ltrim(lower(substr(v, 3)), '0'), ''), '0')
        when v in ('True', 'False', 'true', 'false') then lower(v)
        when length(v) in (36, 38) and regexp_full_match(v,
            '\{?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\}?')
            then '{' || lower(trim(v, '{}')) || '}'
        when length(v) between 19 and 35 and substr(v, 5, 1) = '-' and regexp_full_match(v,
            '[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-]00:00)?')
            then replace(left(v, 19), ' ', 'T') || '.'
                 || lpad(round_even(rpad(coalesce(nullif(regexp_extract(v, '\.([0-9]+)', 1), ''),
                                                  '0'), 6, '0')[:6]::INTEGER / 1000, 0)
                         ::INTEGER::VARCHAR, 3, '0') || 'Z'
        else v end as value
    from items
)
select count(*) from (select pos, map(list(k), list(value)) from normalised group by pos)
"""


SYSTEM_STEP = "DuckDB json_extract_string, 19 System values"
MAP_STEP = "DuckDB EventData to MAP(VARCHAR, JSON)"
RENDER_STEP = "framing, and pyevtx-rs rendering each chunk (JSON text, not decoded)"
WRITE_STEP = "zstd Parquet of the file's events rows (from Arrow)"
# The steps whose sum is the floor of a vectorised record path.
FLOOR_STEPS = (RENDER_STEP, SYSTEM_STEP, MAP_STEP, WRITE_STEP)


def floor_steps(steps: list[tuple[str, float | str]]) -> float | None:
    """The CPU seconds of the steps no vectorised path can skip, added up (None when one of
    them could not run)."""
    timed = {label: seconds for label, seconds in steps if isinstance(seconds, float)}
    if any(label not in timed for label in FLOOR_STEPS):
        return None
    return sum(timed[label] for label in FLOOR_STEPS)


def chunk_renders(path: Path) -> Iterator[tuple[Any, dict[str, Any]]]:
    """The reader's chunk walk, and each chunk's records rendered by pyevtx-rs as JSON text
    behind a synthetic file header, not indented (as caltrail/parsers/evtx/reader.py hands a
    chunk to it and asks for JSON): (the chunk, pyevtx-rs's record), the text not decoded;
    records it cannot render are skipped."""
    import io

    from evtx import PyEvtxParser

    from caltrail.parsers.evtx import structs
    from caltrail.parsers.evtx.reader import walk_chunks

    header = structs.synthetic_file_header()
    with open(path, "rb") as stream:
        for chunk in walk_chunks(stream):
            if not isinstance(chunk, structs.ChunkSlice) or not chunk.records:
                continue
            records = cast(
                "Iterator[dict[str, Any]]",
                PyEvtxParser(
                    io.BytesIO(header + chunk.data), number_of_threads=1, indent=False
                ).records_json(),
            )
            while True:
                try:
                    out = next(records)
                except StopIteration:
                    break
                except RuntimeError:
                    continue
                yield chunk, out


def rendered_by_chunk(path: Path) -> int:
    """How many records `chunk_renders` gives (the rendering step, timed)."""
    return sum(1 for _ in chunk_renders(path))


def events_table(path: Path, work: Path) -> Any:
    """The `events` rows caltrail's ingest gives for `path`, as one Arrow table."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from caltrail.pipeline.ingest import IngestOptions, ingest

    lake = work / f"routes-lake-{path.stem}"
    shutil.rmtree(lake, ignore_errors=True)
    ingest([path], IngestOptions(lake=lake))
    table = pa.concat_tables(pq.read_table(f) for f in sorted((lake / "events").glob("*.parquet")))
    shutil.rmtree(lake, ignore_errors=True)
    return table


def json_texts(path: Path) -> list[str]:
    """Every record pyevtx-rs renders of `path`, as its JSON text (one thread)."""
    from evtx import PyEvtxParser  # like the bench's own sections: loaded when measured

    texts: list[str] = []
    records = cast(
        "Iterator[dict[str, Any]]", PyEvtxParser(str(path), number_of_threads=1).records_json()
    )
    while True:
        try:
            texts.append(str(next(records)["data"]))
        except StopIteration:
            return texts
        except RuntimeError:
            continue


def best_cpu(fn: Callable[[], Any], repeat: int = 3) -> float:
    return best_cpu_and_result(fn, repeat)[0]


def best_cpu_and_result(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, Any]:
    """The best CPU seconds of `repeat` runs of `fn` (this process), and its last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.process_time()
        result = fn()
        best = min(best, time.process_time() - started)
    return best, result


def route_costs(path: Path, work: Path) -> tuple[int, float, list[tuple[str, float | str]]]:
    """(records, pyevtx-rs CPU seconds, [(step, CPU seconds or why it cannot run)]) for
    the steps above."""
    # loaded when this section runs, as the bench's other sections load what they measure
    import duckdb
    import pyarrow as pa
    import pyarrow.json as pa_json

    # the texts the render step gives (unindented, chunk by chunk, as the reader renders);
    # the reference is pyevtx-rs's own iteration with its defaults, as elsewhere in the bench
    texts = [str(out["data"]) for _, out in chunk_renders(path)]
    reference = best_cpu(lambda: json_texts(path))
    lines = work / f"{path.stem}.jsonl"
    lines.write_text("\n".join(t.replace("\n", " ") for t in texts) + "\n", encoding="utf-8")
    con = duckdb.connect(":memory:", config={"threads": 1})
    con.register("rendered", pa.table({"text": pa.array(texts, pa.string())}))
    paths = ", ".join(f"'{p}'" for p in SYSTEM_PATHS)
    queries = [
        (
            SYSTEM_STEP,
            f"select sum(len(json_extract_string(text, [{paths}]))) from rendered",
        ),
        (
            MAP_STEP,
            "select sum(cardinality(try_cast(json_extract(text, '$.Event.EventData') "
            "as MAP(VARCHAR, JSON)))) from rendered",
        ),
        (
            "DuckDB from_json, the record's typed structure",
            f"select count(from_json(text, '{RECORD_STRUCTURE}')) from rendered",
        ),
        ("DuckDB EventData map with its values normalised", NORMALISED_MAP),
    ]
    steps: list[tuple[str, float | str]] = []

    def bulk() -> None:
        con.execute(
            "create or replace temp table bulk as select * from "
            "read_json(?, format = 'newline_delimited')",
            [str(lines)],
        )

    def query(sql: str) -> Callable[[], Any]:
        return lambda: con.execute(sql).fetchall()

    runs: list[tuple[str, Callable[[], Any]]] = [(label, query(sql)) for label, sql in queries]
    runs.append(("DuckDB read_json, newline-delimited, into a table", bulk))
    for label, run in runs:
        try:
            steps.append((label, best_cpu(run)))
        except duckdb.Error as exc:  # e.g. a record whose JSON repeats a name
            steps.append((label, f"cannot read them: {str(exc).splitlines()[0][:120]}"))
    steps.append((RENDER_STEP, best_cpu(lambda: rendered_by_chunk(path))))
    import pyarrow.parquet as pq

    from caltrail.pipeline.lake import COMPRESSION

    events = events_table(path, work)
    target = work / f"{path.stem}-events.parquet"
    steps.append(
        (WRITE_STEP, best_cpu(lambda: pq.write_table(events, target, compression=COMPRESSION)))
    )
    target.unlink()
    options = pa_json.ReadOptions(use_threads=False, block_size=1 << 24)
    label = "pyarrow JSON reader, same lines"
    try:
        steps.append((label, best_cpu(lambda: pa_json.read_json(lines, read_options=options))))
    except pa.ArrowInvalid as exc:
        steps.append((label, f"cannot read them: {str(exc).splitlines()[0][:120]}"))
    con.close()
    lines.unlink()
    return len(texts), reference, steps
