"""Helpers the parser tests share: run a parser on bytes, and sort what it yielded."""

from __future__ import annotations

import io
from types import ModuleType

from caltrail.parsers.base import FileNote, Item, ParseIssue, ParseOptions, TraceRecord


def parse_bytes(module: ModuleType, data: bytes, **options: object) -> list[Item]:
    """Everything `module.parse` yields for `data`, with ParseOptions(**options)."""
    return list(module.parse(io.BytesIO(data), ParseOptions(**options)))  # type: ignore[arg-type]


def trace_records(items: list[Item]) -> list[TraceRecord]:
    return [i for i in items if isinstance(i, TraceRecord)]


def all_issues(items: list[Item]) -> list[ParseIssue]:
    return [i for i in items if isinstance(i, ParseIssue)]


def notes(items: list[Item]) -> dict[str, str]:
    """The FileNotes of a parse, as a dict."""
    return {i.key: i.value for i in items if isinstance(i, FileNote)}
