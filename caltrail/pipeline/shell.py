"""The DuckDB shell beside a lake: where the shell is, and whether the lake's init script
(`LAKE/caltrail.sql`) opens the lake as it is now with nothing left to compute.

That is all `caltrail shell` asks before it hands over to the shell, so this module loads
neither DuckDB nor pyarrow (the shell should open at once; loading them would take longer
than the whole check). The script is written by caltrail/pipeline/session.py, which brings
a lake up to date first when it is not; its first lines say what it was written for:

    -- state: <kept.fingerprint of the lake>
    -- kept: <the `lake`-kind views it reads from their kept files>
    -- computed on opening: <those it computes when the shell opens, else "none">
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from caltrail.pipeline import kept

INIT_SCRIPT = "caltrail.sql"
# The environment variable with which `caltrail shell` tells the init script where the lake
# is (the script finds it by itself otherwise: see session.init_script_text).
SHELL_LAKE_ENV = "CALTRAIL_SHELL_LAKE"
# The script's header lines (see above), each followed by its value.
STATE_LINE = "-- state: "
KEPT_LINE = "-- kept: "
COMPUTED_LINE = "-- computed on opening: "
NONE = "none"
HEADER_LINES = 8  # the header is in the script's first lines (read no further)


def header(script: Path) -> dict[str, str]:
    """The header lines of `script` (STATE_LINE, KEPT_LINE, COMPUTED_LINE) that it has, each
    with its value; empty when the script cannot be read."""
    try:
        with open(script, encoding="utf-8") as handle:
            head = [handle.readline() for _ in range(HEADER_LINES)]
    except (OSError, UnicodeDecodeError):
        return {}
    found: dict[str, str] = {}
    for line in head:
        for key in (STATE_LINE, KEPT_LINE, COMPUTED_LINE):
            if line.startswith(key) and key not in found:
                found[key] = line[len(key) :].strip()
    return found


def written_for(script: Path) -> str | None:
    """The state of the lake (kept.fingerprint) `script` was written for, if it says."""
    return header(script).get(STATE_LINE)


def current_script(lake: Path) -> Path | None:
    """The lake's init script when it opens the lake as it is now with nothing to compute:
    written for the lake's present state, with every `lake`-kind view read from its kept
    file, each of them there. None otherwise (an ingest since, a script of an older caltrail,
    a kept file removed): the lake is then brought up to date and the script written again
    (session.shell_script)."""
    script = lake / INIT_SCRIPT
    found = header(script)
    stamp = kept.fingerprint(lake.resolve())
    if (
        found.get(STATE_LINE) != stamp
        or found.get(COMPUTED_LINE) != NONE
        or KEPT_LINE not in found
    ):
        return None
    views = [] if found[KEPT_LINE] == NONE else found[KEPT_LINE].split()
    if all(kept.view_file(lake, view, stamp).is_file() for view in views):
        return script
    return None


def duckdb_cli() -> str | None:
    """The DuckDB shell installed with caltrail (PyPI duckdb-cli), else one on PATH."""
    beside = Path(sys.executable).parent / "duckdb"
    if beside.exists():
        return str(beside)
    return shutil.which("duckdb")


__all__ = [
    "COMPUTED_LINE",
    "INIT_SCRIPT",
    "KEPT_LINE",
    "NONE",
    "SHELL_LAKE_ENV",
    "STATE_LINE",
    "current_script",
    "duckdb_cli",
    "header",
    "written_for",
]
