"""`caltrail verify`: the lake's accounting, checked over every file (view ingest_accounting)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from caltrail.pipeline.session import connect


def verify(lake: Path) -> dict[str, Any]:
    """Totals of the accounting view, and the files that do not balance."""
    # reads the accounting only (the layers above it not even defined); never writes the lake
    con = connect(lake, derive=False, through="15_accounting")
    files, seen, written, quarantined = con.execute(
        "select count(*), coalesce(sum(records_seen), 0), coalesce(sum(written), 0), "
        "coalesce(sum(quarantined), 0) from ingest_accounting"
    ).fetchone() or (0, 0, 0, 0)
    cursor = con.execute(
        "select path, records_seen, written, quarantined from ingest_accounting "
        "where not balanced order by path"
    )
    names = [d[0] for d in cursor.description or []]
    mismatches = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    return {
        "files": files,
        "records_seen": seen,
        "rows_written": written,
        "quarantined": quarantined,
        "mismatches": mismatches,
    }
