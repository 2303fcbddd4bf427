"""The trace matching queries, written by the loader from the pattern table.

caltrail/queries/35_trace_licensing.sql declares two views `-- generated: <name>`; the
loader (caltrail/pipeline/materialize.py) defines each with the query `GENERATORS[name]`
writes. The query's shape follows the pattern table (one branch or step per pattern, one
value per group it captures); every value of the table (each regex, name, capture list,
operation) stays in the DuckDB variables the SQL file sets from the table
(`trace_regexes`, `trace_names`, ...), read with `getvariable(...)[k]`. DuckDB folds such a
value into a constant, so each regex is compiled once per query; a regex taken from a
column is compiled again for every row (80 times slower on a real trace). Nothing of the
user's pattern file is written into SQL text: only our own identifiers and numbers.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass

import duckdb

FIELDS = {  # capture name -> the column of the fact
    "client_name": "client_name_raw",
    "hwid": "hwid_raw",
    "user": "user_name",
    "license_id": "license_id",
    "keypack_id": "keypack_id",
    "result": "result",
    "operation": "operation",
}
CONSTANT_OPERATION_GROUP = 99  # a constant operation comes after the groups


@dataclass(frozen=True)
class Pattern:
    """The shape of one usable pattern (k: its place in trace_patterns_active)."""

    k: int
    captures: tuple[str, ...]
    regex_groups: int
    module: int | None  # its module regex's place in trace_module_regexes, None: any module
    constant_operation: bool
    # its groups are read from the match by a regex of their own (the table's groups_regex)
    groups_from_match: bool = False

    @property
    def search(self) -> str:
        if not self.captures:
            return "match"
        # the regex may have fewer groups than captures named: one search per group
        return "per-group" if self.regex_groups != len(self.captures) else "groups"

    @property
    def regex(self) -> str:
        return f"getvariable('trace_regexes')[{self.k}]"

    def group(self, text: str, g: int) -> str:
        """Group g of the pattern's match in `text` ('' when it did not take part)."""
        return self._read(text, "trace_regexes", "trace_groups_regexes", str(g))

    def groups(self, text: str) -> str:
        """The struct g0 (the whole match), g1..gn of one search in `text` (each '' when
        it did not take part, or there is no match)."""
        names = ", ".join(f"'g{g}'" for g in range(0, len(self.captures) + 1))
        return self._read(text, "trace_group0_regexes", "trace_group0_groups_regexes", f"[{names}]")

    def _read(self, text: str, regexes: str, groups_regexes: str, what: str) -> str:
        """regexp_extract of `what` from `text` with the pattern's regex in the variable
        `regexes`; for a pattern with a groups regex, from its match with the regex in
        `groups_regexes` (RE2 finds the match with its DFA whatever the regex's size; only
        reading groups grows with it, and is done with the smaller regex)."""
        if self.groups_from_match:
            text, regexes = self.match(text), groups_regexes
        return f"regexp_extract({text}, getvariable('{regexes}')[{self.k}], {what})"

    def match(self, text: str) -> str:
        """The text the pattern's regex matched in `text` ('' when none)."""
        return f"regexp_extract({text}, {self.regex}, 0)"


#: The views `patterns` reads (with the macros of the query files): what a connection
#: needs to write the generated queries (materialize.pattern_session).
PATTERN_VIEWS = ("trace_patterns", "trace_patterns_active")


# A connection's patterns, read once: each generated query asks for them, and the pattern
# table is read from the lake's reference files, fixed for a connection's session.
_READ: weakref.WeakKeyDictionary[duckdb.DuckDBPyConnection, tuple[list[Pattern], bool]] = (
    weakref.WeakKeyDictionary()
)


def patterns(con: duckdb.DuckDBPyConnection) -> tuple[list[Pattern], bool]:
    """The usable patterns, and whether one of them reads every module."""
    if con not in _READ:
        _READ[con] = _patterns(con)
    found, any_module = _READ[con]
    return list(found), any_module


def _patterns(con: duckdb.DuckDBPyConnection) -> tuple[list[Pattern], bool]:
    rows = con.execute(
        """
        select
            a.k,
            a.capture_list,
            a.regex_groups,
            m.j,
            trace_operation(a.operation) is not null,
            a.groups_regex is not null
        from trace_patterns_active as a
        left join (
            select module_regex, row_number() over (order by module_regex) as j
            from (select distinct module_regex from trace_patterns_active)
            where module_regex is not null
        ) as m using (module_regex)
        order by a.k
        """
    ).fetchall()
    found = [
        Pattern(int(k), tuple(str(c) for c in captures), int(groups), j, bool(op), bool(two))
        for k, captures, groups, j, op, two in rows
    ]
    return found, any(p.module is None for p in found)


def _module_test(column: str, j: int) -> str:
    return (
        f"{column} is not null and "
        f"regexp_matches({column}, getvariable('trace_module_regexes')[{j}], 'i')"
    )


def _input_filter(any_module: bool) -> str:
    # only the messages some pattern may read: those of licensing modules, unless a pattern
    # reads any module
    return "true" if any_module else "t.provider in (select provider from trace_licensing_modules)"


# ---------------------------------------------------------------------------
# trace_pattern_hits: every (message, pattern) match with its groups 1..n
# ---------------------------------------------------------------------------


def pattern_hits(con: duckdb.DuckDBPyConnection) -> str:
    found, any_module = patterns(con)
    source = (
        "with input as materialized (select row_number() over () as msg_id, t.ts, t.provider, "
        "t.message, trace_match_text(t.message, t.fields, t.parser) as match_text, t.line, "
        f"t.source_path, t.file_sha256 from trace_events as t where {_input_filter(any_module)}) "
    )
    columns = "i.msg_id, i.ts, i.provider, i.message, i.line, i.source_path, i.file_sha256"
    if not found:
        return (
            source + f"select {columns}, null::varchar as name, null::integer as priority, "
            "null::varchar[] as capture_list, null::varchar as operation, "
            "null::varchar[] as groups from input as i where false"
        )
    return source + " union all ".join(_hits_branch(p, columns) for p in found)


def _hits_branch(p: Pattern, columns: str) -> str:
    k, n = p.k, len(p.captures)
    where = "true" if p.module is None else _module_test("i.provider", p.module)
    where += f" and regexp_matches(i.match_text, {p.regex})"
    values = (
        f"getvariable('trace_names')[{k}]::varchar as name, "
        f"getvariable('trace_priorities')[{k}]::integer as priority, "
        f"getvariable('trace_captures')[{k}]::varchar[] as capture_list, "
        f"getvariable('trace_operations')[{k}]::varchar as operation"
    )
    if p.search == "match":
        groups, inner = "[]::varchar[]", "select i.*"
    elif p.search == "per-group":
        searches = ", ".join(p.group("i.match_text", g) for g in range(1, n + 1))
        groups, inner = f"[{searches}]::varchar[]", "select i.*"
    else:  # one search gives every group
        groups = "[" + ", ".join(f"i.x.g{g}" for g in range(1, n + 1)) + "]::varchar[]"
        inner = f"select i.*, {p.groups('i.match_text')} as x"
    return (
        f"select {columns}, {values}, {groups} as groups "
        f"from ({inner} from input as i where {where}) as i"
    )


# ---------------------------------------------------------------------------
# trace_licensing_messages: one row per message, each field the first non-empty value in
# (priority, name, group) order, as trace_pattern_values + a per-message aggregation would
# choose it, without a row per (message, pattern) hit. Module regexes are tried once each per
# message. The patterns are tried one after the other in that order, and each only on the
# messages where it can still change the fact: where a field it gives (operation included)
# has no value from an earlier pattern. Where every such field has one, an earlier pattern
# also named the fact, so the pattern's match could change nothing (on a trace where the
# Key=Value patterns match, the bare-HWID and operation patterns are rarely tried).
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Candidate:
    """A value a field may take: a pattern's group (a column of its step), or (g 99) its
    constant operation."""

    k: int
    g: int
    field: str
    column: str


def _cells(p: Pattern) -> list[_Candidate]:
    return [
        _Candidate(p.k, g, field, f"{'o' if field == 'operation' else 'v'}{p.k}_{g}")
        for g, field in enumerate(p.captures, start=1)
        if field
    ]


def licensing_messages(con: duckdb.DuckDBPyConnection) -> str:
    found, any_module = patterns(con)
    # in the order the first non-empty value wins: by pattern, then group
    candidates = sorted(
        [c for p in found for c in _cells(p)]
        + [
            _Candidate(p.k, CONSTANT_OPERATION_GROUP, "operation", f"c{p.k}")
            for p in found
            if p.constant_operation
        ],
        key=lambda c: (c.k, c.g),
    )
    modules = sorted({p.module for p in found if p.module is not None})
    flags = "".join(f", {_module_test('t.provider', j)} as m{j}" for j in modules)
    steps: list[str] = []
    previous = "i"
    for p in found:
        needed = _needed(p, candidates)
        if needed is None:
            continue  # a pattern naming no field gives nothing
        steps.append(_step(p, needed, previous))
        previous = f"z{p.k}"
    fields = ", ".join(
        f"{alias} := " + _first_of([c.column for c in candidates if c.field == field])
        for field, alias in sorted(FIELDS.items(), key=lambda item: item[1])
    )
    chosen = [
        f"case when ({' or '.join(f'{c.column} is not null' for c in by_k)}) "
        f"then getvariable('trace_names')[{k}] end"
        for k in sorted({c.k for c in candidates})
        if (by_k := [c for c in candidates if c.k == k])
    ]
    pattern = f"coalesce({', '.join(chosen)})" if chosen else "null::varchar"
    return (
        "with i as (select t.ts, t.message, t.line, t.source_path, t.file_sha256, t.run_id, "
        f"trace_match_text(t.message, t.fields, t.parser) as match_text{flags} "
        f"from trace_licensing_input as t where {_input_filter(any_module)})"
        + "".join(f", {step}" for step in steps)
        # the row as one struct unnested: a filter on a column cannot be pushed down into
        # the steps (it would copy their expressions, each step's into the next: slow to plan)
        + " select unnest([struct_pack(ts := i.ts, message := i.message, line := i.line, "
        "source_path := i.source_path, file_sha256 := i.file_sha256, run_id := i.run_id, "
        f"{fields}, pattern := {pattern})], recursive := true) from {previous} as i"
    )


def _first_of(columns: list[str]) -> str:
    return f"coalesce({', '.join(columns)})" if columns else "null::varchar"


def _needed(p: Pattern, candidates: list[_Candidate]) -> str | None:
    """The condition to try pattern `p`: some field it gives still has no value from an
    earlier pattern ('' when nothing earlier gives one of its fields: always tried); None
    when it gives no field."""
    fields = sorted({c.field for c in candidates if c.k == p.k})
    if not fields:
        return None
    earlier = {
        field: [c.column for c in candidates if c.field == field and c.k < p.k] for field in fields
    }
    if any(not columns for columns in earlier.values()):
        return ""
    return "(" + " or ".join(f"coalesce({', '.join(earlier[f])}) is null" for f in fields) + ")"


def _step(p: Pattern, needed: str, previous: str) -> str:
    """y<k>: the search (NULL where the pattern was not tried); z<k>: its values (a group
    that did not take part, or no match, gives '': no value); of an operation, its letters
    first (x<k>), then the operation they name."""
    k, n = p.k, len(p.captures)
    conditions = [c for c in (needed, None if p.module is None else f"i.m{p.module}") if c]
    if p.search == "per-group":
        conditions.append(f"regexp_matches(i.match_text, {p.regex})")
    if p.search == "match":
        search = f"regexp_matches(i.match_text, {p.regex})"
    elif p.search == "per-group":
        search = (
            "struct_pack("
            + ", ".join(f"g{g} := {p.group('i.match_text', g)}" for g in range(1, n + 1))
            + ")"
        )
    else:  # the whole regex made group g0
        search = p.groups("i.match_text")
    step = (
        f"y{k} as (select i.*, case when {' and '.join(conditions) or 'true'} then {search} "
        f"end as y{k} from {previous} as i)"
    )
    cells = _cells(p)
    letters = any(c.field == "operation" for c in cells)
    values = "".join(
        f", trace_operation_letters({_value(k, c.g)}) as l{k}_{c.g}"
        if c.field == "operation"
        else f", {_value(k, c.g)} as {c.column}"
        for c in cells
    )
    if p.constant_operation:
        operation = f"getvariable('trace_constant_operations')[{k}]"
        matched = {
            "match": f"i.y{k}",
            "per-group": f"i.y{k} is not null",
            # an empty g0 is an empty match or none: the regex is asked again
            "groups": f"i.y{k}.g0 <> '' then {operation} "
            f"when i.y{k} is not null and regexp_matches(i.match_text, {p.regex})",
        }[p.search]
        values += f", case when {matched} then {operation} end as c{k}"
    step += f", {'x' if letters else 'z'}{k} as (select i.*{values} from y{k} as i)"
    if letters:
        operations = "".join(
            f", trace_operation_of_letters(i.l{k}_{c.g}) as {c.column}"
            for c in cells
            if c.field == "operation"
        )
        step += f", z{k} as (select i.*{operations} from x{k} as i)"
    return step


def _value(k: int, g: int) -> str:
    return f"trace_value(nullif(i.y{k}.g{g}, ''))"


GENERATORS: dict[str, Callable[[duckdb.DuckDBPyConnection], str]] = {
    "trace_pattern_hits": pattern_hits,
    "trace_licensing_messages": licensing_messages,
}

__all__ = ["GENERATORS", "Pattern", "licensing_messages", "pattern_hits", "patterns"]
