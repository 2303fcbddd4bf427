"""The whole EVTX record conversion in DuckDB (tools/evtx_route.sql), timed against the
reader's own conversion of the same records and checked against it field by field
(`make bench BENCH_ARGS="--only routes"`, through tools/bench_routes.py).

The question: with the rules written as cheap tests first, does DuckDB turn pyevtx-rs's
JSON text into `events` columns faster than the reader's Python (decode, `record_from_json`,
the Arrow columns), and for how many records can it be sure? Both sides start from the same
rendered texts, one thread each; the records the SQL marks odd would still need the Python.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from tools.bench_routes import best_cpu_and_result, chunk_renders

SQL = Path(__file__).with_name("evtx_route.sql")
STRUCTURE = (
    '{"Event": {"System": {"Provider": {"#attributes": {"Name": "JSON", "Guid": "JSON", '
    '"EventSourceName": "JSON"}}, "EventID": "JSON", "Version": "JSON", "Level": "JSON", '
    '"Task": "JSON", "Opcode": "JSON", "Keywords": "JSON", '
    '"TimeCreated": {"#attributes": {"SystemTime": "JSON"}}, '
    '"Correlation": {"#attributes": {"ActivityID": "JSON", "RelatedActivityID": "JSON"}}, '
    '"Execution": {"#attributes": {"ProcessID": "JSON", "ThreadID": "JSON"}}, '
    '"Channel": "JSON", "Computer": "JSON", "Security": {"#attributes": {"UserID": "JSON"}}}, '
    '"EventData": "JSON", "UserData": "JSON"}}'
)


@dataclass
class RouteResult:
    records: int
    sql_seconds: float  # CPU, best of the runs
    python_seconds: float
    odd: int  # records the SQL is not sure of
    mismatched: int  # records the SQL read, with a value other than the reader's
    example: str  # the first mismatch, for the report


def rendered(path: Path) -> tuple[Any, list[tuple[Any, int, int]]]:
    """Each framed record's JSON text as pyevtx-rs renders it chunk by chunk (as the reader
    does, not indented), with its framing: an Arrow table for the SQL, and (record, chunk,
    offset) for the reader's conversion."""
    import pyarrow as pa

    columns: dict[str, list[Any]] = {
        name: [] for name in ("text", "filetime", "record_id", "chunk", "offset")
    }
    framing: list[tuple[Any, int, int]] = []
    current, pending = None, {}
    for chunk, out in chunk_renders(path):
        if chunk is not current:
            current, pending = chunk, {rec.record_id: rec for rec in chunk.records}
        rec = pending.pop(out["event_record_id"], None)
        if rec is None:
            continue
        offset = chunk.file_offset + rec.offset
        values = (out["data"], rec.filetime, rec.record_id, chunk.index, offset)
        for name, value in zip(columns, values, strict=True):
            columns[name].append(value)
        framing.append((rec, chunk.index, offset))
    table = pa.table(columns)
    return table.append_column("pos", pa.array(range(len(table)), pa.int64())), framing


def compare(path: Path, repeat: int = 3) -> RouteResult:
    import duckdb
    import orjson

    from caltrail.parsers.base import EventRecord
    from caltrail.parsers.evtx.reader import record_from_json
    from caltrail.pipeline.lake import column_array
    from caltrail.pipeline.schemas import ALL_SCHEMAS

    table, framing = rendered(path)
    con = duckdb.connect(":memory:", config={"threads": 1})
    con.register("rendered", table)
    con.execute("set variable route_structure = $s", {"s": STRUCTURE})
    con.execute(SQL.read_text(encoding="utf-8"))
    sql_seconds, out = best_cpu_and_result(
        lambda: con.sql("select * from route_events order by pos").to_arrow_table(), repeat
    )
    con.close()
    texts = table["text"].to_pylist()
    schema = ALL_SCHEMAS["events"]
    names = [f.name for f in fields(EventRecord) if f.name != "recovered"]

    def python() -> list[EventRecord]:
        records = [
            record_from_json(orjson.loads(text), rec, chunk, offset)
            for text, (rec, chunk, offset) in zip(texts, framing, strict=True)
        ]
        for name in names:  # the Arrow columns the lake's buffer builds from them
            column_array([getattr(r, name) for r in records], schema.field(name).type)
        return records

    python_seconds, reference = best_cpu_and_result(python, repeat)
    odd = mismatched = 0
    example = ""
    for row, ref in zip(out.to_pylist(), reference, strict=True):
        if row["odd"]:
            odd += 1
            continue
        for name in names:
            got, want = row[name], getattr(ref, name)
            if name == "data":
                got, want = list(got or []), list(want.items())
            if got != want:
                mismatched += 1
                example = example or f"record {ref.record_id} {name}: {got!r} != {want!r}"
                break
    return RouteResult(len(framing), sql_seconds, python_seconds, odd, mismatched, example)


if __name__ == "__main__":
    import sys

    for arg in sys.argv[1:]:
        print(arg, compare(Path(arg), repeat=1))
