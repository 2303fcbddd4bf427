"""caltrail's SQL: views and macros in `*.sql` files, data tables in `*.csv` files.

The .sql files are loaded in file-name order (layers: 00 macros, 10 sources, 20 reference
data, 30-35 licensing facts, 40 CAL facts and licenses, 45 timelines, 50 findings, 55
plans). They read the lake through the DuckDB variables `lake` and `ref_dir`, which the
loader sets with bound parameters, so no path is ever spliced into SQL text by Python.

How a costly view is kept is declared beside it, in the comment right above its
`create view`, with one line:

    -- materialize: lake      computed once per state of the lake, kept in LAKE/_derived
    -- materialize: run       kept per ingest run of each input file (the trace facts)
    -- materialize: state     computed once, into a table of the session (`state.<view>`,
                              shown as the view), by a session that builds the kept views
                              of a new state of the lake (which read it), and not kept:
                              nothing reads it once they are

A view whose rows each belong to devices (a computer name, a HWID, a license, ...) says
which of its columns name them, on lines of their own (caltrail/pipeline/patch.py):

    -- per device: 'name' client_name, 'hwid' hwid, 'license' license_key
    -- patched per device: 'name' client_name, 'license' license_key

each pair a kind (a quoted kind, or a column holding one) and the column naming the device.
A row that names no device of a kind may still be one's (a trace line naming a license id
but no computer): a view read so declares, on a line of its own, the column whose NULL
says so, and its rows with a NULL there are read with every device's:

    -- read with every device: client_name is null

A `lake` view declared `patched per device` is not computed whole after a batch ingest: the
rows of the devices of those kinds the batch touched are computed again and the others are
kept from the state before. A `state` view so declared has only those rows computed (the
patched views above read no other). The views such a computation reads are restricted to the rows
of touched devices of the kinds it is patched by, through their `per device` columns (those
of `patched per device` when a view has no `per device` line); every other view below them
is read whole.

A view whose query has a shape that follows a data table (the trace matching: one branch
per pattern) is declared `-- generated: <view>`: its statement in the file gives the view's
columns, and the loader defines the view with the query caltrail/pipeline/trace_query.py
writes for it, the table's values read from DuckDB variables (never written into SQL text).

`statements()` gives every statement with what it creates and these declarations;
`caltrail.pipeline.materialize` acts on them. A view without a declaration stays a view.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

QUERIES_DIR = Path(str(resources.files(__name__)))
KINDS = ("lake", "run", "state")

_LEADING_COMMENTS = re.compile(r"\A(?:\s*--[^\n]*(?:\n|\Z))*\s*")
_CREATES = re.compile(
    r"create\s+(?:or\s+replace\s+)?(?:temp(?:orary)?\s+)?(view|macro|table)\s+(\w+)", re.IGNORECASE
)
_MATERIALIZE = re.compile(r"^\s*--\s*materialize:\s*(\w+)\s*$", re.MULTILINE)
_GENERATED = re.compile(r"^\s*--\s*generated:\s*(\w+)\s*$", re.MULTILINE)
_PER_DEVICE = re.compile(r"^\s*--\s*(patched )?per device:\s*(.*?)\s*$", re.MULTILINE)
_DEVICE_PAIR = re.compile(r"^('\w+'|\w+)\s+(\w+)$")
_EVERY_DEVICE = re.compile(r"^\s*--\s*read with every device:\s*(\w+) is null\s*$", re.MULTILINE)
# the kinds of device a row can belong to (caltrail/pipeline/patch.py's touched sets)
DEVICE_KINDS = ("name", "hwid", "license", "triple", "file")


class QueryFileError(ValueError):
    """A query file declares something the loader cannot act on (message says where)."""


@dataclass(frozen=True)
class Statement:
    """One statement of a query file.

    Attributes:
        file: the file's name ("40_cal_events.sql").
        sql: the statement, its leading comments included, without the final semicolon.
        creates: the name of the view, macro or table it creates, else None.
        object_kind: "view", "macro" or "table" (None when it creates nothing).
        materialize: how the view is kept ("lake", "run", "state"), None for a plain view.
        generated: the view whose query the loader writes (`-- generated: <view>`), else None.
        per_device: the (kind, column) pairs naming the devices of each row (`-- per device:`,
            else those of `-- patched per device:`; a kind is a quoted kind or a column
            holding one), by which a view computed for some devices reads it; else empty.
        patched_by: the pairs of `-- patched per device:`: the devices whose rows a batch
            computes again when it touches one (a `lake` view patched after a batch).
        every_device_when_null: the column of `-- read with every device: <column> is
            null`: the rows with a NULL there are read with every device's; else None.
    """

    file: str
    sql: str
    creates: str | None
    object_kind: str | None
    materialize: str | None
    generated: str | None = None
    name_span: tuple[int, int] | None = None
    per_device: tuple[tuple[str, str], ...] = ()
    patched_by: tuple[tuple[str, str], ...] = ()
    every_device_when_null: str | None = None

    @property
    def patched(self) -> bool:
        """Declared `patched per device` (see the module's notes)."""
        return bool(self.patched_by)

    def sql_as(self, name: str) -> str:
        """The statement creating `name` instead (a kept view's live definition, under a
        name of its own beside the kept one)."""
        if self.name_span is None:
            raise QueryFileError(f"{self.file}: the statement creates nothing to rename")
        start, end = self.name_span
        return self.sql[:start] + name + self.sql[end:]


def sql_files() -> list[Path]:
    """The view/macro files in load order."""
    return sorted(QUERIES_DIR.glob("*.sql"))


def data_files() -> list[Path]:
    """The reference data tables (CSV) the SQL reads from `ref_dir`."""
    return sorted(QUERIES_DIR.glob("*.csv"))


def statements(files: list[Path] | None = None, through: str | None = None) -> list[Statement]:
    """Every statement of `files` (default: `sql_files()`) in load order; `through` (a file
    name's stem, e.g. "15_accounting") stops after that file."""
    out: list[Statement] = []
    for path in files if files is not None else sql_files():
        if through is not None and path.stem > through:
            break
        out.extend(_file_statements(path.name, path.read_text(encoding="utf-8")))
    return out


@cache
def _file_statements(name: str, text: str) -> tuple[Statement, ...]:
    # DuckDB's own statement splitter; loaded here, not with the module: listing the files
    # (kept.fingerprint, on the way to the DuckDB shell) must not load DuckDB
    import duckdb

    out = []
    for parsed in duckdb.extract_statements(text):
        sql = parsed.query.strip().rstrip(";").strip()
        head = _LEADING_COMMENTS.match(sql)
        comments = sql[: head.end()] if head else ""
        created = _CREATES.match(sql, head.end() if head else 0)
        declared = _MATERIALIZE.findall(comments)
        kind = declared[-1].lower() if declared else None
        if kind is not None and kind not in KINDS:
            raise QueryFileError(f"{name}: unknown `materialize: {kind}` (one of {KINDS})")
        if kind is not None and (created is None or created.group(1).lower() != "view"):
            raise QueryFileError(f"{name}: `materialize: {kind}` stands above no create view")
        generated = _GENERATED.findall(comments)
        if generated and (created is None or created.group(2) != generated[-1]):
            raise QueryFileError(
                f"{name}: `generated: {generated[-1]}` stands above another statement"
            )
        devices = _PER_DEVICE.findall(comments)
        patched_by = _per_device(name, [pairs for patched, pairs in devices if patched])
        if patched_by and kind not in ("lake", "state"):
            raise QueryFileError(
                f"{name}: `patched per device:` stands above a view not computed per state"
            )
        per_device = _per_device(name, [pairs for patched, pairs in devices if not patched])
        every_device = _EVERY_DEVICE.findall(comments)
        if every_device and not (per_device or patched_by):
            raise QueryFileError(
                f"{name}: `read with every device:` stands above a view not read per device"
            )
        out.append(
            Statement(
                file=name,
                sql=sql,
                creates=created.group(2) if created else None,
                object_kind=created.group(1).lower() if created else None,
                materialize=kind,
                generated=generated[-1] if generated else None,
                name_span=created.span(2) if created else None,
                per_device=per_device or patched_by,
                patched_by=patched_by,
                every_device_when_null=every_device[-1] if every_device else None,
            )
        )
    return tuple(out)


def _per_device(name: str, declared: list[str]) -> tuple[tuple[str, str], ...]:
    """The pairs of a `-- per device:` line (checked: they go into SQL text, and come from our
    own files only)."""
    if not declared:
        return ()
    pairs = []
    for item in declared[-1].split(","):
        found = _DEVICE_PAIR.match(item.strip())
        if found is None:
            raise QueryFileError(
                f"{name}: `per device: {declared[-1]}`: expected kind column pairs"
            )
        device_kind, column = found.groups()
        if device_kind.startswith("'") and device_kind.strip("'") not in DEVICE_KINDS:
            raise QueryFileError(
                f"{name}: unknown device kind {device_kind} (one of {DEVICE_KINDS})"
            )
        pairs.append((device_kind, column))
    return tuple(pairs)


def declared(kind: str) -> list[str]:
    """The views declared `materialize: <kind>`, in load order."""
    return [s.creates for s in statements() if s.materialize == kind and s.creates]


__all__ = [
    "DEVICE_KINDS",
    "KINDS",
    "QUERIES_DIR",
    "QueryFileError",
    "Statement",
    "data_files",
    "declared",
    "sql_files",
    "statements",
]
