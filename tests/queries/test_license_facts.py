"""license_facts: a license's values taken from its earliest fact do not depend on the order
DuckDB's threads meet the facts in; two facts at one time give the first value in order."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb

from caltrail import queries
from caltrail.pipeline.ingest import IngestOptions, ingest
from caltrail.pipeline.session import connect

T0 = dt.datetime(2025, 5, 1, 8, 0, tzinfo=dt.UTC)


def _license_facts(facts: list[dict[str, object]], columns_from: Path) -> list[tuple[object, ...]]:
    """The `license_facts` statement run over `facts` (a `cal_events` of these rows alone,
    its other columns NULL)."""
    ingest([], IngestOptions(lake=columns_from))
    lake = connect(columns_from)
    try:
        columns = lake.execute("describe select * from cal_events").fetchall()
    finally:
        lake.close()
    con = duckdb.connect()
    con.execute(f"create table cal_events ({', '.join(f'{c[0]} {c[1]}' for c in columns)})")
    for row in facts:
        names = list(row)
        con.execute(
            f"insert into cal_events by name select {', '.join(f'${n} as {n}' for n in names)}",
            row,
        )
    (statement,) = [s for s in queries.statements() if s.creates == "license_facts"]
    con.execute(statement.sql)
    return con.execute(
        "select license_key, client_name, user_name from license_facts order by license_key"
    ).fetchall()


def test_facts_at_one_time_give_the_first_name_in_order(tmp_path: Path) -> None:
    common = {"license_key": "LS01|7", "ts": T0, "source": "trace"}
    facts = [
        # the issue facts of license 7: one time, two computers and two users, the greater
        # of each met first
        {**common, "fact": "issued", "client_name": "PC-B", "user_name": "zoe"},
        {**common, "fact": "issued", "client_name": "PC-A", "user_name": "anna"},
        # an earlier fact of another kind does not name the license's computer
        {**common, "ts": T0 - dt.timedelta(hours=1), "fact": "seen", "client_name": "PC-C"},
    ]
    assert _license_facts(facts, tmp_path / "lake") == [("LS01|7", "PC-A", "anna")]
    assert _license_facts(facts[::-1], tmp_path / "lake2") == [("LS01|7", "PC-A", "anna")]
