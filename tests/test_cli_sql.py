"""`caltrail sql`: several statements, a query from stdin or a file, a bounded table, streamed
CSV/JSON to stdout or a file, a time window, and a clear word for what changed nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from caltrail.pipeline.cli import app
from caltrail.pipeline.ingest import IngestOptions, ingest

runner = CliRunner(env={"NO_COLOR": "1", "COLUMNS": "160"})
SAMPLES = Path(__file__).resolve().parents[1] / "caltrail" / "fixtures" / "samples"


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled sample collection, ingested once."""
    path = tmp_path_factory.mktemp("sql") / "lake"
    ingest([SAMPLES], IngestOptions(lake=path, tz=ZoneInfo("Europe/Berlin")))
    return path


def sql(lake: Path, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, ["sql", *args, "--lake", str(lake)], input=stdin)
    return result.exit_code, result.stdout, result.stderr


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("caltrail: error: ")
    assert "Traceback" not in stderr
    return lines[0]


def test_every_statement_runs_and_shows_its_rows(lake: Path) -> None:
    code, out, _ = sql(lake, "select 1 as first; select 2 as second")
    assert code == 0
    assert "first" in out
    assert "second" in out
    assert out.count("1 row\n") == 2
    code, out, _ = sql(lake, "select 1 as a; select 'x' as b", "-f", "csv")
    assert out == "a\n1\n\nb\nx\n"
    code, out, _ = sql(lake, "select 1 as a; select 'x' as b", "-f", "json")
    assert [json.loads(line) for line in out.splitlines()] == [{"a": 1}, {"b": "x"}]


def test_a_later_statement_sees_what_an_earlier_one_made(lake: Path) -> None:
    code, out, err = sql(
        lake, "create temp table t as select 42 as answer; select answer from t", "-f", "csv"
    )
    assert code == 0, err
    assert out == "answer\n42\n"
    assert "statement 1 (CREATE) changed this session only" in err


def test_a_statement_that_changes_nothing_persistent_says_so(lake: Path) -> None:
    code, out, err = sql(lake, "drop view events")
    assert code == 0
    assert out == ""
    assert "nothing in the lake changed" in err
    assert "Success" not in out + err
    code, out, _ = sql(lake, "select count(*) > 0 as still from events", "-f", "csv")
    assert out == "still\ntrue\n"


def test_copy_says_what_it_wrote(lake: Path, tmp_path: Path) -> None:
    target = tmp_path / "ids.csv"
    code, _, err = sql(
        lake, "copy (select 1 as a union all select 2) to $path", "-p", f"path={target}"
    )
    assert code == 0, err
    assert "wrote 2 rows" in err
    assert target.read_text(encoding="utf-8").splitlines() == ["a", "1", "2"]


def test_query_from_stdin_and_from_a_file(lake: Path, tmp_path: Path) -> None:
    code, out, _ = sql(lake, "-", "-f", "csv", stdin="select 'from stdin' as q\n")
    assert (code, out) == (0, "q\nfrom stdin\n")
    query = tmp_path / "q.sql"
    query.write_text("-- the licensing actions\nselect 'from a file' as q;\n", encoding="utf-8")
    code, out, _ = sql(lake, "--file", str(query), "-f", "csv")
    assert (code, out) == (0, "q\nfrom a file\n")
    code, _, err = sql(lake, "select 1", "--file", str(query))
    assert code == 2
    one_error_line(err)


def test_a_query_may_start_with_a_comment(lake: Path) -> None:
    code, out, err = sql(lake, "-- why: the count\nselect 7 as n", "-f", "csv")
    assert (code, out) == (0, "n\n7\n"), err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("",), "the query is empty"),
        (("   \n",), "the query is empty"),
        (("-- only a comment",), "no statement"),
        (("--fromat=csv",), "no such option: --fromat"),
        ((), "give a query"),
        (("select $pc",), "give its value with -p pc=VALUE"),
        (("select 1", "-p", "pc=LS01"), "the query has no $pc"),
        (("select 1", "-p", "novalue"), "expected NAME=VALUE"),
        (("select 1", "--format", "xml"), "choose table, csv or json"),
        (("select 1", "--max-rows", "-1"), "--max-rows"),
        (("select 1 as n", "--from", "2025-01-01"), "no TIMESTAMP or DATE column"),
        (("select 1", "--from", "yesterday"), "not an ISO date or time"),
        (("select 1", "--from", "2025-02-01", "--to", "2025-01-01"), "ends before it starts"),
    ],
)
def test_usage_errors_are_one_line_exit_2(lake: Path, args: tuple[str, ...], expected: str) -> None:
    code, out, err = sql(lake, *args)
    assert code == 2, out + err
    assert expected in one_error_line(err)


def test_a_failing_query_is_one_line_exit_1(lake: Path) -> None:
    code, _, err = sql(lake, "select * from no_such_view")
    assert code == 1
    assert "query failed" in one_error_line(err)
    code, _, err = sql(lake, "selec 1")
    assert code == 1
    assert "syntax error" in one_error_line(err)


def test_table_is_bounded_csv_and_json_hold_every_row(lake: Path) -> None:
    total = int(sql(lake, "select count(*) from events", "-f", "csv")[1].split()[1])
    assert total > 50
    code, out, _ = sql(lake, "select record_id from events order by 1", "--max-rows", "10")
    assert code == 0
    assert out.rstrip().endswith(f"{total:,} rows (10 shown; --max-rows 0 shows all)")
    assert len(sql(lake, "select record_id from events", "-f", "csv")[1].splitlines()) == total + 1
    assert len(sql(lake, "select record_id from events", "-f", "json")[1].splitlines()) == total
    code, out, _ = sql(lake, "select record_id from events", "--max-rows", "0")
    assert out.rstrip().endswith(f"{total:,} rows")


def test_output_file_is_written_with_its_folder(lake: Path, tmp_path: Path) -> None:
    target = tmp_path / "new" / "deeper" / "events.jsonl"
    code, out, err = sql(lake, "select record_id from events", "-f", "json", "-o", str(target))
    assert code == 0, err
    assert out == ""
    assert f"Wrote {target}" in err
    rows = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert rows
    assert all("record_id" in r for r in rows)


def test_a_query_failing_while_streaming_leaves_no_file(lake: Path, tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    code, _, err = sql(
        lake,
        "select range, case when range = 9000 then error('boom') end from range(10000)",
        "-f",
        "csv",
        "-o",
        str(target),
    )
    assert code == 1
    assert "boom" in one_error_line(err)
    assert list(tmp_path.iterdir()) == []


def test_output_into_a_folder_is_refused_before_the_query(lake: Path, tmp_path: Path) -> None:
    code, _, err = sql(lake, "select 1", "-o", str(tmp_path))
    assert code == 2
    assert "is a directory" in one_error_line(err)


def test_time_window_on_the_result_and_as_parameters(lake: Path) -> None:
    days = sql(
        lake,
        "select distinct time_created::date as day from events order by 1",
        "-f",
        "csv",
    )[1].split()[1:]
    assert len(days) >= 3
    first, second = days[0], days[1]
    code, out, err = sql(
        lake,
        "select time_created, record_id from events",
        "--from",
        second,
        "--to",
        second,
        "-f",
        "json",
    )
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows
    assert {r["time_created"][:10] for r in rows} == {second}
    # a query that uses $from / $to itself is given them, not wrapped
    code, out, err = sql(
        lake,
        "select count(*) as n from events where time_created < $to",
        "--to",
        first,
        "-f",
        "csv",
    )
    assert code == 0, err
    in_first_day = int(out.split()[1])
    assert 0 < in_first_day < len(sql(lake, "select 1 from events", "-f", "csv")[1].split())
    # --time-column names the column
    code, out, err = sql(
        lake,
        "select record_id, time_created as t2, time_created from events",
        "--from",
        second,
        "--time-column",
        "t2",
        "-f",
        "csv",
    )
    assert code == 0, err
    assert all(line.split(",")[1][:10] >= second for line in out.splitlines()[1:])


def test_the_help_examples_run_as_written(lake: Path) -> None:
    """The parameter example of `sql -h` (single quotes: the shell leaves $pc alone) finds
    rows: computers are FQDNs, so it matches with LIKE."""
    import shlex

    text = runner.invoke(app, ["sql", "-h"]).stdout
    examples = [
        line.split("Example:", 1)[1].strip() for line in text.splitlines() if "Example:" in line
    ]
    assert len(examples) == 3
    with_parameter = next(e for e in examples if "$pc" in e)
    argv = shlex.split(with_parameter)[1:]  # (without "caltrail")
    result = runner.invoke(app, [*argv, "--lake", str(lake)])
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) > 1


@pytest.mark.parametrize("fmt", ["csv", "table"])
def test_a_reader_that_stops_early_ends_it_quietly(lake: Path, fmt: str) -> None:
    """`caltrail sql ... | head -1`: when the reader closes the pipe, caltrail stops without a
    word on stderr (no "Broken pipe" error, no traceback) and exit status 1."""
    command = [
        sys.executable, "-c", "from caltrail.pipeline.cli import main; main()",
        "sql", "select * from range(5000000)", "-f", fmt, "--max-rows", "0", "--lake", str(lake),
    ]  # fmt: skip
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as child:
        assert child.stdout is not None
        assert child.stderr is not None
        assert child.stdout.readline()
        child.stdout.close()
        stderr = child.stderr.read().decode()
        assert child.wait(timeout=120) == 1
    assert stderr == ""
