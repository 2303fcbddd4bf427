"""The report's layout in a real browser: headless Chromium opens a report at 800 and 1400 px
wide and a small script, added to a copy of the report, measures what overflows (the page,
a table, a chart, a chart's label) and whether a HWID or a name wraps anywhere but where the
report allows it; the result is read back from the DOM (--dump-dom). A screenshot at each
width is kept beside the test's temporary files for a person to look at (compared for
overflow by the script, never pixel by pixel).

`make test` installs Chromium when it can (root with apt-get); elsewhere these tests skip
and say so."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from caltrail.pipeline.diagnose import open_case
from caltrail.pipeline.report import render_report
from tests.pipeline.test_report import hostile_lake, report_html  # noqa: F401 (fixtures)

WIDTHS = (800, 1400)
BROWSERS = ("chromium", "chromium-browser", "google-chrome")

MEASURE = """
<script>
(function () {
  const width = document.documentElement.clientWidth;  // the window less its scroll bar
  const out = [];
  const note = (what, el) => out.push(what + ': ' + (el.id || el.tagName) + ' '
      + (el.textContent || '').trim().slice(0, 60));
  if (document.documentElement.scrollWidth > width + 1) {
    out.push('page: ' + document.documentElement.scrollWidth + ' > ' + width);
  }
  for (const el of document.querySelectorAll('body *')) {
    if (el.closest('svg') && el.tagName !== 'svg') continue;
    const r = el.getBoundingClientRect();
    if (r.width && r.right > width + 1) note('past the right edge', el);
  }
  for (const wrap of document.querySelectorAll('.table-wrap')) {
    if (wrap.scrollWidth > wrap.clientWidth + 1) note('table wider than the page', wrap);
  }
  for (const svg of document.querySelectorAll('svg')) {
    const box = svg.getBoundingClientRect();
    for (const t of svg.querySelectorAll('text')) {
      const r = t.getBoundingClientRect();
      if (r.right > box.right + 1 || r.left < box.left - 1) note('label clipped', t);
    }
  }
  const lines = (node) => {
    const range = document.createRange();
    range.selectNodeContents(node);
    return new Set(Array.from(range.getClientRects()).map((r) => Math.round(r.top))).size;
  };
  for (const code of document.querySelectorAll('code.hwid')) {
    for (const part of code.childNodes) {
      if (part.nodeType === 3 && lines(part) > 1) note('HWID broken inside a DWORD', code);
    }
  }
  for (const name of document.querySelectorAll('span.name')) {
    if (lines(name) > 1) note('name broken', name);
  }
  const result = document.createElement('pre');
  result.id = 'layout-result';
  result.textContent = JSON.stringify({width: window.innerWidth, problems: out});
  document.body.appendChild(result);
})();
</script>
"""


def browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(
        "headless Chromium is not installed (make test installs it with apt-get when run as "
        "root; or: apt-get install chromium)"
    )


def run_browser(page: Path, width: int, profile: Path, *extra: str) -> str:
    done = subprocess.run(
        [
            browser(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--disable-sync",
            f"--user-data-dir={profile}",
            f"--window-size={width},2400",
            *extra,
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def measured(html: str, width: int, work: Path) -> dict[str, object]:
    """Open a copy of the report with the measuring script (the report's own policy forbids
    scripts, so the copy drops it) and read back what it found."""
    page = work / f"report-{width}.html"
    probe = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", html)
    page.write_text(probe.replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    dom = run_browser(page, width, work / f"profile-{width}", "--dump-dom")
    found = re.search(r'<pre id="layout-result">(.*?)</pre>', dom, re.S)
    assert found, "the measuring script did not run"
    result: dict[str, object] = json.loads(found.group(1).replace("&quot;", '"'))
    shot = work / f"report-{width}.png"
    run_browser(page, width, work / f"profile-{width}", f"--screenshot={shot}")
    result["screenshot"] = str(shot)
    return result


@pytest.mark.parametrize("width", WIDTHS)
def test_report_holds_its_layout(report_html: str, width: int, tmp_path: Path) -> None:  # noqa: F811
    result = measured(report_html, width, tmp_path)
    assert result["width"] == width
    assert result["problems"] == [], f"{result['problems'][:10]} (see {result['screenshot']})"  # type: ignore[index]
    assert Path(str(result["screenshot"])).stat().st_size > 10_000


def test_the_measure_finds_an_overflow(tmp_path: Path) -> None:
    """The script is no rubber stamp: a page with a too wide table and a clipped label fails."""
    bad = (
        "<!doctype html><html><body><div class=table-wrap style='overflow-x:auto'>"
        "<table><tr><td style='white-space:nowrap'>" + "x" * 400 + "</td></tr></table></div>"
        '<svg viewBox="0 0 100 20" width="100"><text x="90" y="10">a long label</text></svg>'
        "</body></html>"
    )
    result = measured(bad, 800, tmp_path)
    problems = " ".join(result["problems"])  # type: ignore[arg-type]
    assert "table wider than the page" in problems
    assert "label clipped" in problems


def test_an_empty_lake_report_holds_too(tmp_path: Path) -> None:
    from caltrail.pipeline.ingest import IngestOptions, ingest

    empty = tmp_path / "in"
    empty.mkdir()
    (empty / "notes.txt").write_text("nothing here\n", encoding="utf-8")
    lake = tmp_path / "lake"
    ingest([empty], IngestOptions(lake=lake))
    con = open_case(lake)
    html = render_report(con, lake)
    con.close()
    result = measured(html, 800, tmp_path)
    assert result["problems"] == []
