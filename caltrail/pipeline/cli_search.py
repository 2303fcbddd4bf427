"""`caltrail search`: find EVTX and trace records by event id, provider, computer, text or
regular expression, in a time window, without writing SQL (mounted on the app by
caltrail/pipeline/cli.py; the query is the table macro search_hits of
caltrail/queries/60_search.sql, every value bound)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from caltrail.pipeline import output
from caltrail.pipeline.cli_common import (
    DEFAULT_LAKE,
    FormatOpt,
    FromOpt,
    MaxRowsOpt,
    OutputOpt,
    ReadLakeOpt,
    ToOpt,
    prepare_output,
    say,
    usage,
)
from caltrail.pipeline.cli_query import check_format, open_session, query_rows, window

SOURCES = {"all": None, "evtx": ["evtx"], "trace": ["trace"]}
TEXT_CELL = 240  # a record's text is what a search is read for: cut later than other cells

SEARCH = """
select *
from search_hits($from, $to, $text, $regex, $event_ids, $providers, $computers, $sources)
order by ts nulls last, source, source_path, record_id
"""


def search_cmd(
    text: Annotated[
        str | None,
        typer.Argument(
            metavar="[TEXT]",
            help="Text the record holds, any case (an EVTX record's EventData, a trace "
            "record's message).",
            show_default=False,
        ),
    ] = None,
    lake: ReadLakeOpt = DEFAULT_LAKE,
    event_id: Annotated[
        list[int] | None,
        typer.Option("--event-id", "-e", metavar="ID", help="Event id (repeatable)."),
    ] = None,
    provider: Annotated[
        list[str] | None,
        typer.Option(
            "--provider",
            metavar="NAME",
            help="Provider or trace module, a part of its name, any case (repeatable).",
        ),
    ] = None,
    computer: Annotated[
        list[str] | None,
        typer.Option(
            "--computer",
            metavar="NAME",
            help="Computer whose log holds the record: its name or FQDN (repeatable; "
            "trace records carry none, so this searches EVTX only).",
        ),
    ] = None,
    regex: Annotated[
        str | None,
        typer.Option(
            "--regex", "-r", metavar="RE", help="Regular expression (RE2) the text matches."
        ),
    ] = None,
    source: Annotated[
        str, typer.Option("--source", metavar="SOURCE", help="all, evtx or trace.")
    ] = "all",
    time_from: FromOpt = None,
    time_to: ToOpt = None,
    fmt: FormatOpt = "table",
    max_rows: MaxRowsOpt = output.DEFAULT_MAX_ROWS,
    out: OutputOpt = None,
) -> None:
    """Search the events and trace records, oldest first: every filter given must match.

    \b
    Example:  caltrail search BER-PC0042 --from 2025-03-01 --to 2025-03-07
    Example:  caltrail search -e 1004 -e 1011 --provider licensing --computer LS01 -f csv
    Example:  caltrail search --source trace -r "HWID=\\(0x0+2," -f json -o hits.jsonl
    """
    import duckdb

    check_format(fmt)
    if source not in SOURCES:
        usage(f"{source!r}: choose all, evtx or trace", "--source")
    if source == "trace" and computer:
        usage("trace records carry no computer name; drop --computer or search evtx", "--computer")
    span = window(time_from, time_to)
    target = prepare_output(out, "--output")
    con = open_session(lake)
    if regex is not None:
        try:
            con.execute("select regexp_matches('', $r)", {"r": regex}).fetchall()
        except duckdb.Error as exc:
            usage(f"not a regular expression (RE2): {regex!r}: {exc}", "--regex")
    params = {
        **span.params(),
        "text": text if text else None,
        "regex": regex,
        "event_ids": list(event_id) if event_id else None,
        "providers": list(provider) if provider else None,
        "computers": list(computer) if computer else None,
        "sources": SOURCES[source],
    }
    with output.output_stream(target, sys.stdout) as stream:
        count = query_rows(con, SEARCH, params, fmt, stream, max_rows, max_cell=TEXT_CELL)
    if count == 0:
        say("No record matches" + (f" in {span.describe()}" if span else "") + ".")
    if target is not None:
        say(f"Wrote {target}")


__all__ = ["search_cmd"]
