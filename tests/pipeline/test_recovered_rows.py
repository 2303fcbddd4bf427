"""Records recovered from EVTX chunk slack, through ingest, the lake and the views: the
`recovered` flag, --no-recover, a recovered copy of a record another file holds allocated,
and lakes written before the column existed."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow.parquet as pq
from typer.testing import CliRunner

from caltrail import queries
from caltrail.fixtures.evtx_writer import EvtxWriter, write_evtx
from caltrail.parsers.base import FileNote
from caltrail.parsers.evtx.recovery import CANDIDATES_FORM, NOTE, REASONS, REJECTED_NOTE
from caltrail.pipeline.cli import app
from caltrail.pipeline.ingest import IngestOptions, ingest
from caltrail.pipeline.session import connect
from tests.parsers.test_evtx_recover import licensing, parse

runner = CliRunner(env={"TERMINAL_WIDTH": "120", "NO_COLOR": "1", "COLUMNS": "120"})
OLD, NEW = 80, 20  # long events filling one chunk, then short ones written over it


def rewritten_log(path: Path) -> set[int]:
    """A license server log whose one chunk was written over: the ids of the old records
    left in its slack."""
    with EvtxWriter(path, max_chunks=1) as writer:
        writer.add_all([licensing(i, 200) for i in range(OLD)])
        writer.add_all([licensing(OLD + i, 0) for i in range(NEW)])
    return {s.record_id for s in writer.slack}


def rows(lake: Path, sql: str) -> list[tuple[object, ...]]:
    with connect(lake, through="30_licensing_events") as con:
        return con.execute(sql).fetchall()


def test_recovered_rows_are_flagged_in_events_and_licensing_events(tmp_path: Path) -> None:
    log = tmp_path / "LS01_Microsoft-Windows-TerminalServices-Licensing%4Admin.evtx"
    slack = rewritten_log(log)
    lake = tmp_path / "lake"
    summary = ingest([log], IngestOptions(lake=lake))
    assert summary.records_seen == summary.records_ok  # recovered rows are rows like any
    flagged = rows(lake, "select record_id from events where recovered order by 1")
    assert {r for (r,) in flagged} == slack
    assert rows(lake, "select count(*) from events where recovered is null") == [(0,)]
    licensing_rows = rows(
        lake, "select recovered, count(*) from licensing_events group by all order by all"
    )
    assert licensing_rows == [(False, summary.records_ok - len(slack)), (True, len(slack))]
    (note,) = rows(lake, "select notes['carve_candidates'] from ingest_files")[0]
    assert note.startswith(f"{len(slack)} found, {len(slack)} recovered")
    assert rows(lake, "select count(*) from ingest_accounting where not balanced") == [(0,)]


def test_no_recover_reads_the_allocated_records_only(tmp_path: Path) -> None:
    log = tmp_path / "Admin.evtx"
    slack = rewritten_log(log)
    lake = tmp_path / "lake"
    result = runner.invoke(app, ["ingest", str(log), "--lake", str(lake), "--no-recover", "--json"])
    assert result.exit_code == 0, result.output
    allocated = parse(log.read_bytes(), recover=False)[0]
    assert json.loads(result.output)["rows"]["events"] == len(allocated)
    assert rows(lake, "select count(*) from events where recovered") == [(0,)]
    assert not slack & {r for (r,) in rows(lake, "select record_id from events")}
    (note,) = rows(lake, "select notes['carve_candidates'] from ingest_files")[0]
    assert note == "not searched (recovery turned off)"
    (options,) = rows(lake, "select options['recover'] from runs")[0]
    assert options == "False"
    assert "--no-recover" in runner.invoke(app, ["run", "--help"]).output


def test_a_recovered_copy_of_a_record_allocated_in_another_file_is_shown_once(
    tmp_path: Path,
) -> None:
    """The log before it was written over (its old records allocated) and after (the same
    records in slack): each record once in `events`, the allocated copy shown, both
    counted in dup_count; the same in licensing_events."""
    before = tmp_path / "before.evtx"
    write_evtx(before, [licensing(i, 200) for i in range(OLD)])
    after = tmp_path / "after.evtx"
    slack = rewritten_log(after)
    lake = tmp_path / "lake"
    ingest([before, after], IngestOptions(lake=lake))
    shown = rows(
        lake,
        "select record_id, recovered, dup_count, source_path from events "
        "where record_id <= 80 order by record_id",
    )
    assert {r for r, *_ in shown} == set(range(1, OLD + 1))
    for record_id, recovered, dup_count, source in shown:
        assert recovered is False
        if record_id in slack:
            assert source == str(before)  # the copy the log still counted, not after's
            assert dup_count == 2
    licensing_shown = rows(
        lake, "select count(*), bool_or(recovered) from licensing_events where record_id <= 80"
    )
    assert licensing_shown == [(OLD, False)]
    assert rows(lake, "select count(*) from events_all where recovered") == [(len(slack),)]


def test_a_lake_written_before_the_column_reads_it_as_false(tmp_path: Path) -> None:
    log = tmp_path / "Admin.evtx"
    buf = io.BytesIO()
    write_evtx(buf, [licensing(i) for i in range(30)])
    log.write_bytes(buf.getvalue())
    lake = tmp_path / "lake"
    ingest([log], IngestOptions(lake=lake))
    for part in (lake / "events").glob("*.parquet"):
        if part.name.startswith("_"):
            continue
        table = pq.read_table(part)
        pq.write_table(table.drop_columns(["recovered"]), part)  # as an older caltrail wrote
        assert "recovered" not in pq.read_schema(part).names
    assert rows(lake, "select count(*), count(recovered), bool_or(recovered) from events") == [
        (30, 30, False)
    ]
    assert rows(lake, "select count(*) from licensing_events where not recovered") == [(30,)]


def test_counts_of_the_parts_of_a_split_file_add_up() -> None:
    first = FileNote.counted(
        NOTE,
        {
            "found": 12,
            "recovered": 3,
            "partly": 1,
            "duplicates": 1,
            "rejected": 8,
            "not examined": 0,
        },
        CANDIDATES_FORM,
        ("not examined",),
    )
    second = FileNote.counted(
        NOTE,
        {
            "found": 2,
            "recovered": 0,
            "partly": 0,
            "duplicates": 0,
            "rejected": 2,
            "not examined": 5,
        },
        CANDIDATES_FORM,
        ("not examined",),
    )
    assert first.value == "12 found, 3 recovered, 1 without payload, 1 duplicates, 8 rejected"
    assert first.plus(second).value == (
        "14 found, 3 recovered, 1 without payload, 1 duplicates, 10 rejected, 5 not examined"
    )
    rejected = FileNote.counted(REJECTED_NOTE, {"size": 3, "template gone": 52}, "", REASONS)
    other = FileNote.counted(REJECTED_NOTE, {"size": 1}, "", REASONS)
    assert rejected.value == "3 size, 52 template gone"  # in the order of REASONS
    assert rejected.plus(other).value == "4 size, 52 template gone"


# What the `events` view shows, written as the one window over every record that it was
# before it sorted only the records with several copies: the reference the view must equal.
REFERENCE_DEDUP = """
select * exclude (rn)
from (
    select *, count(*) over w as dup_count,
        row_number() over (w order by recovered, source_path, "offset") as rn
    from events_all
    window w as (partition by computer, channel, record_id, time_created)
)
where rn = 1
"""


# Copies of a few records whose computer, record id or time is missing (NULL keys group
# together, as a window's partition does), added to the committed records: the views above
# read events_all by name, so a temp table of that name shadows it.
NULL_KEY_COPIES = """
select * replace (null::varchar as computer, "offset" + 1 as "offset")
from main.events_all where record_id <= 3
union all
select * replace (null::ubigint as record_id) from main.events_all
where record_id between 4 and 6
union all
select * replace (null::ubigint as record_id) from main.events_all
where record_id between 4 and 6
union all
select * replace (null::timestamptz as time_created) from main.events_all
where record_id = 7
"""


def copies_lake(tmp_path: Path) -> Path:
    """A lake whose records have copies in two files, recovered and allocated."""
    before = tmp_path / "before.evtx"
    write_evtx(before, [licensing(i, 200) for i in range(OLD)])
    after = tmp_path / "after.evtx"
    rewritten_log(after)
    lake = tmp_path / "lake"
    ingest([before, after], IngestOptions(lake=lake))
    return lake


def test_events_shows_each_record_once_as_one_window_over_all_records_would(
    tmp_path: Path,
) -> None:
    """Copies in two files, recovered and allocated, and copies with NULL key parts: the
    view keeps the same row of each record and counts the same copies."""
    with connect(copies_lake(tmp_path), through="10_sources") as con:
        con.execute(
            f"create temp table events_all as select * from main.events_all "
            f"union all {NULL_KEY_COPIES}"
        )
        (copies,) = con.execute(
            "select count(*) from (select 1 from events_all group by "
            "computer, channel, record_id, time_created having count(*) > 1)"
        ).fetchall()
        assert copies[0] > 10  # several records have copies
        shown = con.execute("select * from events order by all").fetchall()
        reference = con.execute(f"select * from ({REFERENCE_DEDUP}) order by all").fetchall()
        assert [d[0] for d in con.execute("select * from events limit 0").description] == [
            d[0] for d in con.execute(f"select * from ({REFERENCE_DEDUP}) limit 0").description
        ]
    assert shown == reference


def test_licensing_events_read_per_copy_equal_the_fields_read_after_deduplication(
    tmp_path: Path,
) -> None:
    """licensing_events reads the catalog's fields out of every copy of a record
    (licensing_records, kept per ingest run), then shows each record once as `events` does.
    It equals reading them out of `events` (each record once already): records whose copies
    disagree on the event id (in both directions) or on the provider (one copy of no
    licensing family), copies with NULL key parts, copies in two files. licensing_problems
    is its problem rows."""
    with connect(copies_lake(tmp_path), derive=False, through="30_licensing_events") as con:
        # event 9 is a problem (the database renamed); the ids and providers of a record's
        # copies in the two files disagree for some records
        con.execute(
            f"""
            create temp table events_all as
            with every_copy as (
                select * from main.events_all union all {NULL_KEY_COPIES}
            )
            select * replace (
                case
                    when record_id % 3 = 0 then 9
                    when record_id % 5 = 1 and source_path like '%after.evtx' then 9
                    when record_id % 5 = 2 and source_path like '%before.evtx' then 9
                    else event_id end as event_id,
                case
                    when record_id % 7 = 3 and source_path like '%after.evtx' then 'Other'
                    when record_id % 7 = 4 and source_path like '%before.evtx' then 'Other'
                    else provider end as provider)
            from every_copy
            """
        )
        for disagreeing in ("event_id", "provider"):
            (count,) = con.execute(
                "select count(*) from (select 1 from events_all group by "
                "computer, channel, record_id, time_created "
                f"having count(distinct {disagreeing}) > 1)"
            ).fetchall()
            assert count[0] > 0
        (declared,) = [s for s in queries.statements() if s.creates == "licensing_records"]
        # the declared records over `events` (each record once): the fields read after
        # deduplicating, with the copies `events` counted
        con.execute(
            declared.sql_as("records_once_first").replace(
                "from licensing_records_input", "from events"
            )
        )
        columns = "* exclude (data), data::varchar"
        reference = """
            select r.* exclude (run_id, data) replace (e.dup_count as dup_count),
                r.data::varchar
            from records_once_first as r
            join events as e
                on e.computer is not distinct from r.logged_by
                and e.channel is not distinct from r.channel
                and e.record_id is not distinct from r.record_id
                and e.time_created is not distinct from r.time_created
        """
        shown = f"select {columns} from licensing_events"
        (count,) = con.execute(f"select count(*) from ({shown})").fetchall()
        assert count[0] > 50
        for query in (f"{shown} except all {reference}", f"{reference} except all {shown}"):
            assert con.execute(f"select count(*) from ({query})").fetchall() == [(0,)]
        problems = f"select {columns} from licensing_problems"
        (count,) = con.execute(f"select count(*) from ({problems})").fetchall()
        assert count[0] > 10
        filtered = f"{reference} where action in ('server-problem', 'revoke-refused') or problem is not null"
        for query in (f"{problems} except all {filtered}", f"{filtered} except all {problems}"):
            assert con.execute(f"select count(*) from ({query})").fetchall() == [(0,)]
