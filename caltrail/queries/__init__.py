"""caltrail's SQL: views and macros in `*.sql` files, data tables in `*.csv` files.

The .sql files are loaded in file-name order (layers: 00 macros, 10 sources, 20 reference
data, 30 licensing facts, 40 timelines, 50 findings and plans). They read the lake through
the DuckDB variables `lake` and `ref_dir`, which the loader sets with bound parameters, so
no path is ever spliced into SQL text by Python.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

QUERIES_DIR = Path(str(resources.files(__name__)))


def sql_files() -> list[Path]:
    """The view/macro files in load order."""
    return sorted(QUERIES_DIR.glob("*.sql"))


def data_files() -> list[Path]:
    """The reference data tables (CSV) the SQL reads from `ref_dir`."""
    return sorted(QUERIES_DIR.glob("*.csv"))


__all__ = ["QUERIES_DIR", "data_files", "sql_files"]
