"""The per-file work bound (`--max-seconds-per-file`, pipeline/bounded.py): a file still being
read past it stops with one quarantined `budget_exceeded` issue, keeps the rows read before,
and its accounting balances; whatever the parser and however it reads (lxml's own reads
included). A clock that advances one second per read makes "slow" exact."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pytest

from caltrail.pipeline import bounded, runner
from caltrail.pipeline.bounded import WorkBoundReached, open_bounded
from caltrail.pipeline.ingest import IngestOptions, ingest
from caltrail.pipeline.session import connect
from caltrail.pipeline.verify import verify
from tools import bench

MB = 1024 * 1024
SAMPLES = Path(__file__).resolve().parents[1] / "parsers" / "data"


def read_clock() -> Callable[[], float]:
    """A clock that says one second more each time it is read."""
    ticks = itertools.count()
    return lambda: float(next(ticks))


def test_reads_stop_past_the_deadline_and_say_where(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    data = bytes(range(256)) * 8192  # 2 MiB
    path.write_bytes(data)
    with open_bounded(path, 1e9) as stream:
        assert stream.read() == data  # far from the deadline: the plain file
    got = bytearray()

    def read_all(stream: BinaryIO) -> None:
        while block := stream.read(100_000):
            got.extend(block)

    with (
        open_bounded(path, 3, clock=read_clock()) as stream,
        pytest.raises(WorkBoundReached) as stop,
    ):
        read_all(stream)
    assert 0 < len(got) < len(data)
    assert data.startswith(bytes(got))
    assert stop.value.offset == 3 * bounded.BUFFER_BYTES  # three reads, the fourth refused
    assert f"of {len(data):,}" in str(stop.value)


def wmi_csv(out: Path, size: int) -> None:
    bench.make_wmi_csv(SAMPLES / "exports" / "wmiobject_ps51_issued.csv", out, size)


def tracefmt_text(out: Path, size: int) -> None:
    lines = (SAMPLES / "traces" / "tracefmt_variants.txt").read_text(encoding="utf-8")
    with open(out, "w", encoding="utf-8") as handle:
        while handle.tell() < size:
            handle.write(lines)


MAKERS: dict[str, Callable[[Path, int], object]] = {
    "evtx": bench.write_large_evtx,
    "wmi_csv": wmi_csv,
    "wmi_html": bench.make_html,
    "tracerpt_xml": bench.make_tracerpt_xml,  # read by lxml's iterparse
    "tracerpt_csv": bench.make_tracerpt_csv,
    "tracefmt": tracefmt_text,
}
SUFFIX = {"evtx": ".evtx", "wmi_html": ".html", "tracerpt_xml": ".xml", "tracefmt": ".txt"}
# The WMI export parsers read a file twice (the first pass learns its date order): the bound
# is set so that the stop falls in the second pass.
PASSES = {"wmi_csv": 2, "wmi_html": 2}


def file_row(lake: Path) -> tuple[str, str, int, int, list[tuple[str, str]]]:
    """(kind, status, rows written, records quarantined, parse_errors) of a one-file lake."""
    con = connect(lake, derive=False, through="15_accounting")
    row = con.execute("select kind, status, records_ok, records_bad from ingest_files").fetchone()
    assert row is not None
    issues = con.execute("select kind, message from parse_errors").fetchall()
    con.close()
    return row[0], row[1], int(row[2]), int(row[3]), issues


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_a_slow_file_stops_keeps_its_rows_and_balances(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "in" / f"input{SUFFIX.get(kind, '.csv')}"
    path.parent.mkdir()
    MAKERS[kind](path, 3 * MB)

    whole = tmp_path / "whole"
    all_rows = ingest([path], IngestOptions(lake=whole)).records_ok
    assert file_row(whole)[:2] == (kind, "ok")

    reads_per_pass = path.stat().st_size // bounded.BUFFER_BYTES + 2
    limit = (PASSES.get(kind, 1) - 1) * reads_per_pass + 4
    monkeypatch.setattr(bounded, "CLOCK", read_clock())
    monkeypatch.setenv(runner.IN_PROCESS_ENV, "1")  # the patched clock is this process's
    lake = tmp_path / "bounded"
    summary = ingest([path], IngestOptions(lake=lake, max_seconds_per_file=limit))
    got_kind, status, rows, bad, stops = file_row(lake)
    assert (got_kind, status, bad) == (kind, "quarantined", 1)
    assert 0 < rows < all_rows  # the rows read before the stop are kept, the rest not read
    assert summary.records_ok == rows
    assert [kind for kind, _ in stops] == ["budget_exceeded"]
    assert "the rest of the file was not read" in stops[0][1]
    accounting = verify(lake)
    assert accounting["mismatches"] == []
    assert accounting["rows_written"] == rows


def test_the_cli_option_sets_the_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from caltrail.pipeline.cli import app

    path = tmp_path / "trace.csv"
    bench.make_tracerpt_csv(path, 2 * MB)
    monkeypatch.setattr(bounded, "CLOCK", read_clock())
    monkeypatch.setenv(runner.IN_PROCESS_ENV, "1")  # the patched clock is this process's
    lake = tmp_path / "lake"
    result = CliRunner().invoke(
        app, ["ingest", str(path), "--lake", str(lake), "--max-seconds-per-file", "2"]
    )
    assert result.exit_code == 0, result.output  # quarantined rows fail only under --strict
    _, status, rows, bad, stops = file_row(lake)
    assert (status, bad, [kind for kind, _ in stops]) == ("quarantined", 1, ["budget_exceeded"])
    assert rows > 0
