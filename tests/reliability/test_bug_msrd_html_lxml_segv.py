"""Regression: a mutated MSRD-Collect HTML export crashed the MSRD HTML reader inside lxml.

The input (data/msrd_html_lxml_segv.html, 1,216 bytes) made `parsers.wmi.html` die with a
segmentation fault inside lxml/libxml2 whenever tracemalloc was tracing (the fuzz tests'
memory check); the fuzz campaign died on it after ~23,000 inputs and saved nothing.

Cause: after each `</tr>` the reader removed the row from the tree, tail text included. But
libxml2 may still be appending text to that tail (text after `</tr>` that arrives with the
next block, or at close), and it remembers the length of the text node it appends to; with
the node unlinked, the parent's last child is an earlier text node, which libxml2 extends
at the stale length: a heap overflow. tracemalloc (and any garbage collection in between)
only changed when the freed memory was reused. docs/GUARANTEES.md ("Native crashes found") has
the analysis and the lxml-only reproduction.

Fix (parsers/wmi/html.py `_drop_read`): a row read is cleared, its tail kept; the siblings
before it are deleted (libxml2 is done with them). Independently, a parser that still dies
in native code costs only its file (test_bug_native_crash_ends_run.py).
"""

from __future__ import annotations

import gc
import io
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from caltrail.parsers.base import ParseIssue, ParseOptions
from caltrail.parsers.wmi import html
from caltrail.pipeline import runner
from caltrail.pipeline.ingest import IngestOptions, ingest
from tests.reliability import fuzzlib as F

DATA = Path(__file__).parent / "data"
REPRO = DATA / "msrd_html_lxml_segv.html"
# Shapes the old reader crashed on within a few parses when a collection ran per row (both
# made by shrinking the reproducer): text before a row, the row, text after it, then "<&"
# (held back by libxml2 until close: it may be a tag), which libxml2 appends at close.
SHAPES = {
    "shrunk": b"><tr></tr>\x9b\xa1\xa7\x9a\x80\xdaody><&l",
    "text around a row": b"x<tr><td>1</td></tr>" + b"y" * 40 + b"<&",
}


PARSES = 20


def stressed(case: F.Case) -> F.Outcome:
    """Parse `case` PARSES times with a garbage collection before each row is read (what
    made the crash likely under tracemalloc). Runs in a child: a crash costs that child."""
    real_row = html._Reader.row

    def row(self: html._Reader, tr: object, line: int) -> object:
        gc.collect()
        return real_row(self, tr, line)  # type: ignore[arg-type]

    html._Reader.row = row  # type: ignore[assignment,method-assign]
    try:  # (the child runs other tests' parses after this one)
        outcome = F.Outcome()
        for _ in range(PARSES):
            outcome = F.run_parser(html, case.data, F.options_for("wmi_html"), memory=None)
        return outcome
    finally:
        html._Reader.row = real_row  # type: ignore[method-assign]


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_shapes_that_overflowed_libxml2s_text_node(shape: str) -> None:
    outcome = F.parse_isolated("wmi_html", SHAPES[shape], work=stressed)
    assert outcome.records == 0


def test_the_reproducer_under_tracemalloc() -> None:
    """As the fuzz tests run it (tracemalloc on), many times; each time the same outcome."""
    data = REPRO.read_bytes()
    outcomes = {
        (o.records, o.issues, o.quarantined)
        for o in (F.parse_isolated("wmi_html", data) for _ in range(10))
    }
    assert outcomes == {(0, 1, 1)}
    with io.BytesIO(data) as stream:
        options = ParseOptions(file_name="LS01_rdls_IssuedLicenses.html")
        issues = [i for i in html.parse(stream, options) if isinstance(i, ParseIssue)]
    assert [i.kind for i in issues] == ["no_license_table"]


@pytest.mark.parametrize("mode", ["1 worker", "2 workers", "in process, traced"])
def test_the_reproducer_is_ingested_in_every_mode(
    mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(REPRO, folder / "LS01_rdls_IssuedLicenses.html")
    shutil.copy(DATA.parent.parent / "parsers" / "data" / "exports" / "msrd_issued.html", folder)
    monkeypatch.setenv("PYTHONTRACEMALLOC", "1")  # the parsing child traces, as fuzz tests do
    if mode.startswith("in process"):
        monkeypatch.setenv(runner.IN_PROCESS_ENV, "1")
        import tracemalloc

        tracemalloc.start()
    try:
        summary = ingest(
            [folder], IngestOptions(lake=tmp_path / "lake", workers=2 if "2" in mode else 1)
        )
    finally:
        if mode.startswith("in process"):
            tracemalloc.stop()
    assert "error" not in summary.files
    rows = [
        r
        for p in sorted((tmp_path / "lake" / "ingest_files").glob("*.parquet"))
        for r in pq.read_table(p).to_pylist()
    ]
    files = {r["path"].rsplit("/", 1)[-1]: r for r in rows}
    repro = files["LS01_rdls_IssuedLicenses.html"]
    assert (repro["status"], repro["records_ok"], repro["records_bad"]) == ("quarantined", 0, 1)
    assert files["msrd_issued.html"]["records_ok"] > 0  # the run went on with the next file
