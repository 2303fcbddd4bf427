"""Licensing facts from trace dumps: queries/35_trace_licensing.sql and its pattern tables."""

from __future__ import annotations

import csv
import datetime as dt
import os
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import pytest

from caltrail.parsers.hwid import (
    FREERDP_LEGACY_HWID,
    normalize_hwid,
    render_dwords,
    render_registry_hex,
    render_wmi,
)
from caltrail.pipeline.ingest import IngestOptions, ingest
from caltrail.pipeline.session import connect
from caltrail.queries import QUERIES_DIR
from tests.conftest import corpus_path

DATA = Path(__file__).parent / "data"
BIN = Path(sys.executable).parent
CALTRAIL = str(BIN / "caltrail")
TSCTST_HWID = "02000000c0b24e7d10a9ff372b54eb75f67a7087"  # 0x00000002, 0x7d4eb2c0, ...
COLUMNS = [
    ("ts", "TIMESTAMP WITH TIME ZONE"),
    ("operation", "VARCHAR"),
    ("client_name_raw", "VARCHAR"),
    ("client_name", "VARCHAR"),
    ("hwid", "VARCHAR"),
    ("hwid_raw", "VARCHAR"),
    ("user_name", "VARCHAR"),
    ("license_id", "VARCHAR"),
    ("keypack_id", "VARCHAR"),
    ("result", "VARCHAR"),
    ("pattern", "VARCHAR"),
    ("message", "VARCHAR"),
    ("line", "BIGINT"),
    ("source_path", "VARCHAR"),
    ("file_sha256", "VARCHAR"),
    ("run_id", "VARCHAR"),
]


def connect_35(lake: Path) -> duckdb.DuckDBPyConnection:
    """A session with only the layers up to this one (00..35), nothing kept: the later files
    (timelines, findings) take seconds to define and are not needed here."""
    return connect(lake, derive=False, through="35_trace_licensing")


def scalar(con: duckdb.DuckDBPyConnection, sql: str) -> Any:
    row = con.execute(sql).fetchone()
    assert row is not None
    return row[0]


def rows(con: duckdb.DuckDBPyConnection, sql: str, params: Any = None) -> list[dict[str, Any]]:
    cur = con.execute(sql, params or [])
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def tracefmt(lines: list[str], module: str = "lserver") -> str:
    """tracefmt text, one record per message, a second apart from 2023-10-05 12:00:00."""
    start = dt.datetime(2023, 10, 5, 12, 0, 0, tzinfo=dt.UTC)
    out = []
    for i, message in enumerate(lines):
        t = start + dt.timedelta(seconds=i)
        out.append(f"[0]0A1C.0C30::{t:%m/%d/%Y-%H:%M:%S}.{i:06d} [{module}]{message}")
    return "\r\n".join(out) + "\r\n"


# The facts as the pattern hits give them (trace_pattern_values, one row per message, pattern
# and field, aggregated per message): trace_licensing extracts them without the hit rows and
# must give the same rows.
FACTS_FROM_VALUES = """
with per_message as (
    select
        msg_id,
        any_value(ts) as ts,
        any_value(message) as message,
        any_value(line) as line,
        any_value(source_path) as source_path,
        any_value(file_sha256) as file_sha256,
        first(name order by priority, name, group_no)
            filter (where field <> 'operation' or operation_value is not null) as pattern,
        first(value order by priority, name, group_no) filter (where field = 'client_name') as client_name_raw,
        first(value order by priority, name, group_no) filter (where field = 'hwid') as hwid_raw,
        first(value order by priority, name, group_no) filter (where field = 'user') as user_name,
        first(value order by priority, name, group_no) filter (where field = 'license_id') as license_id,
        first(value order by priority, name, group_no) filter (where field = 'keypack_id') as keypack_id,
        first(operation_value order by priority, name, group_no)
            filter (where operation_value is not null) as operation,
        first(value order by priority, name, group_no) filter (where field = 'result') as result
    from (
        select *, case when field = 'operation' then trace_operation(value) end as operation_value
        from trace_pattern_values
    )
    group by msg_id
)
select ts::timestamptz, operation, client_name_raw, hwid_raw, user_name, license_id, keypack_id,
    result, pattern, message, line::bigint, source_path, file_sha256
from per_message
where coalesce(client_name_raw, hwid_raw, user_name, license_id, keypack_id) is not null
"""
FACTS_COLUMNS = (
    "ts, operation, client_name_raw, hwid_raw, user_name, license_id, keypack_id, result, "
    "pattern, message, line, source_path, file_sha256"
)


def assert_facts_as_pattern_values(con: duckdb.DuckDBPyConnection) -> None:
    """trace_licensing gives, message by message, the fact the pattern hits give."""
    ours = f"select {FACTS_COLUMNS} from trace_licensing"
    for a, b in ((ours, FACTS_FROM_VALUES), (FACTS_FROM_VALUES, ours)):
        assert scalar(con, f"select count(*) from (({a}) except all ({b}))") == 0


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, NO_COLOR="1")
    return subprocess.run(
        [CALTRAIL, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


# --------------------------------------------------------------------------- the simulator

Sim = tuple[Path, dict[str, Any], duckdb.DuckDBPyConnection]


@pytest.fixture(scope="module")
def simulated(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, dict[str, Any], duckdb.DuckDBPyConnection]:
    """A simulated bundle ingested whole (trace read in the simulator's zone), and a
    connection with every view (pipeline.session.connect)."""
    from caltrail.fixtures.simulator import simulate

    base = tmp_path_factory.mktemp("sim")
    result = simulate(base / "bundle", seed=11, devices=80, days=180)
    lake = base / "lake"
    tz = result.truth["window"]["tz"]
    ingest([result.out], IngestOptions(lake=lake, tz=ZoneInfo(tz)))
    return lake, result.truth, connect(lake)


def test_simulated_trace_gives_exactly_the_truth(simulated: Sim) -> None:
    _, truth, con = simulated
    assert_facts_as_pattern_values(con)
    facts = truth["trace_facts"]
    assert len(facts) > 1000  # 2,500 trace lines over 180 days, a DST change among them
    got = rows(con, "select * from trace_licensing order by line")
    assert len(got) == len(facts)

    def key(f: dict[str, Any]) -> tuple[Any, ...]:
        return (
            f["line"],
            f["time"],
            f["operation"],
            f["name"],
            f["hwid"],
            None if f["license_id"] is None else str(f["license_id"]),
            None if f["keypack_id"] is None else str(f["keypack_id"]),
            f["user"],
            f["result"],
        )

    expected = sorted(key(f) for f in facts)
    actual = sorted(
        (
            r["line"],
            r["ts"].astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            r["operation"],
            r["client_name_raw"],
            r["hwid"],
            r["license_id"],
            r["keypack_id"],
            r["user_name"],
            r["result"],
        )
        for r in got
    )
    assert actual == expected
    # every HWID rendering the simulator writes was read, and names are normalised
    assert {f["hwid_form"] for f in facts} >= {"hex40", "dwords-paren", "dwords-colon"}
    assert all(r["client_name"] == r["client_name_raw"].upper() for r in got)
    assert {r["pattern"] for r in got} == {"simulator"}
    assert all(r["source_path"].endswith("_lserver_trace.txt") for r in got)


def test_columns_and_types(simulated: Sim) -> None:
    described = simulated[2].execute("describe trace_licensing").fetchall()
    assert [(r[0], r[1]) for r in described] == COLUMNS


def test_simulator_noise_is_reported_unmatched(simulated: Sim) -> None:
    got = rows(simulated[2], "select * from trace_unmatched")
    shapes = [r["shape"] for r in got]
    assert "WorkManager: idle threads=<v> queued=<v>" in shapes
    assert [r["n"] for r in got] == sorted((r["n"] for r in got), reverse=True)
    assert all(r["modules"] == ["lserver"] for r in got)  # jetblue / rpc are not licensing
    assert not any("TLS" in s for s in shapes)


def test_shell_sees_the_same_table(simulated: Sim) -> None:
    lake, truth, con = simulated
    out = run_cli(
        "shell",
        "--lake",
        str(lake),
        "-c",
        "select 'N=' || count(*) || ' U=' || (select count(*) from trace_unmatched) from trace_licensing",
    )
    assert out.returncode == 0, out.stderr
    found = re.search(r"N=(\d+) U=(\d+)", out.stdout)
    assert found, out.stdout
    unmatched = con.execute("select count(*) from trace_unmatched").fetchone()
    assert (int(found[1]), int(found[2])) == (len(truth["trace_facts"]), unmatched and unmatched[0])


# --------------------------------------------------------------------------- user patterns


def test_custom_pattern_makes_a_new_wording_extractable(tmp_path: Path) -> None:
    trace = tmp_path / "custom_lserver.txt"
    trace.write_bytes((DATA / "custom_wording_trace.txt").read_bytes())
    lake = tmp_path / "lake"
    ingest([trace], IngestOptions(lake=lake))
    con = connect_35(lake)
    assert_facts_as_pattern_values(con)
    assert rows(con, "select * from trace_licensing") == []
    unmatched = rows(con, "select shape, n, example from trace_unmatched")
    granted = [u for u in unmatched if u["shape"].startswith("Granted")]
    assert granted[0] == {
        "shape": "Granted permanent license <n> to workstation WS-<n> from key pack <n>",
        "n": 2,
        "example": "Granted permanent license 1234 to workstation WS-17 from key pack 7",
    }
    assert unmatched[0] == granted[0]  # most frequent first
    assert not any(
        "NOT-LICENSING" in u["example"] for u in unmatched
    )  # [rpc] is no licensing module

    ingest([trace], IngestOptions(lake=lake, patterns=DATA / "custom_patterns.csv"))
    con = connect_35(lake)
    assert_facts_as_pattern_values(con)
    got = rows(
        con,
        "select operation, client_name_raw, client_name, license_id, keypack_id, pattern, line"
        " from trace_licensing order by line",
    )
    assert got == [
        {
            "operation": "issue-permanent",
            "client_name_raw": "WS-17",
            "client_name": "WS-17",
            "license_id": "1234",
            "keypack_id": "7",
            "pattern": "granted",
            "line": 2,
        },
        {
            "operation": "issue-temporary",
            "client_name_raw": "ws-18.corp.example",
            "client_name": "WS-18",
            "license_id": "1235",
            "keypack_id": "3",
            "pattern": "granted",
            "line": 3,
        },
        {
            "operation": "issue-permanent",
            "client_name_raw": "WS-19",
            "client_name": "WS-19",
            "license_id": "1240",
            "keypack_id": "7",
            "pattern": "granted",
            "line": 4,
        },
    ]
    shapes = [u["shape"] for u in rows(con, "select shape from trace_unmatched")]
    assert not any(s.startswith("Granted") for s in shapes)
    assert any(s.startswith("Service starting") for s in shapes)
    user = rows(con, "select * from trace_patterns where origin = 'user'")
    assert [(u["name"], u["priority"], u["problem"]) for u in user] == [("granted", 10, None)]


def test_custom_pattern_through_the_cli(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    out = run_cli(
        "ingest",
        str(DATA / "custom_wording_trace.txt"),
        "--lake",
        str(lake),
        "--patterns",
        str(DATA / "custom_patterns.csv"),
        "--json",
    )
    assert out.returncode == 0, out.stderr
    assert (lake / "_ref" / "user_trace_patterns.csv").read_bytes() == (
        DATA / "custom_patterns.csv"
    ).read_bytes()
    con = connect_35(lake)
    assert_facts_as_pattern_values(con)
    got = con.execute(
        "select client_name, license_id from trace_licensing order by line"
    ).fetchall()
    assert got == [("WS-17", "1234"), ("WS-18", "1235"), ("WS-19", "1240")]
    # a later plain ingest keeps the user's table (user_* files are never overwritten)
    out = run_cli("ingest", str(DATA / "custom_wording_trace.txt"), "--lake", str(lake), "--json")
    assert out.returncode == 0, out.stderr
    assert connect_35(lake).execute("select count(*) from trace_licensing").fetchone() == (3,)
    # the DuckDB shell reads the same user table
    out = run_cli(
        "shell",
        "--lake",
        str(lake),
        "-c",
        "select 'N=' || count(*) from trace_licensing where pattern = 'granted'",
    )
    assert "N=3" in out.stdout, out.stdout + out.stderr


def test_user_rows_replace_disable_and_report(tmp_path: Path) -> None:
    trace = tmp_path / "t_lserver.txt"
    trace.write_text(
        tracefmt(
            [
                "cached client 02000000c0b24e7d10a9ff372b54eb75f67a7087",
                "ClientName=PC-01 Result=Success",
                "Granted to PC-09",
                "Owner='CORP\\bob'",
            ]
        )
        # a line in no known prefix: kept as a raw record without a module
        + "2023-10-05 12:00:09 Handed out to PC-10\r\n",
        encoding="utf-8",
    )
    patterns = tmp_path / "p.csv"
    with patterns.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["name", "module_regex", "regex", "captures", "operation", "priority"])
        w.writerow(["hwid-hex40", "", "", "", "", ""])  # switch a default off
        w.writerow(["broken", "", "(unclosed", "client_name", "", ""])
        w.writerow(["odd", "", "x(.)", "colour", "", ""])
        w.writerow(["badop", "", "x", "", "sideways", ""])
        w.writerow(["success-means-permanent", "lserver", r"Result=Success", "", "permanent", "5"])
        w.writerow(["short", "lserver", r"^Granted to (\S+)", "client_name|user", "", ""])
        w.writerow(["anywhere", "", r"Handed out to (\S+)", "client_name", "", ""])
        w.writerow(["o'quote", "lserver", r"Owner='([^']+)'", "user", "", ""])  # quotes: no SQL
    lake = tmp_path / "lake"
    ingest([trace], IngestOptions(lake=lake, patterns=patterns))
    con = connect_35(lake)
    assert_facts_as_pattern_values(con)
    problems = dict(
        con.execute("select name, problem from trace_patterns where origin = 'user'").fetchall()
    )
    assert problems == {
        "hwid-hex40": "disabled (no regex)",
        "broken": "invalid regex",
        "odd": "unknown capture name: colour",
        "badop": "unknown operation: sideways",
        "success-means-permanent": None,
        "short": None,  # two captures named, one group: the second stays empty
        "anywhere": None,
        "o'quote": None,
    }
    got = rows(
        con,
        "select client_name, hwid, operation, user_name, pattern from trace_licensing order by line",
    )
    assert got == [
        {
            "client_name": "PC-01",
            "hwid": None,
            "operation": "issue-permanent",
            "user_name": None,
            "pattern": "success-means-permanent",
        },
        {
            "client_name": "PC-09",
            "hwid": None,
            "operation": None,
            "user_name": None,
            "pattern": "short",
        },
        {
            "client_name": None,
            "hwid": None,
            "operation": None,
            "user_name": "CORP\\bob",
            "pattern": "o'quote",
        },
        {
            "client_name": "PC-10",
            "hwid": None,
            "operation": None,
            "user_name": None,
            "pattern": "anywhere",
        },
    ]


def test_unreadable_user_file_is_reported(tmp_path: Path) -> None:
    trace = tmp_path / "t_lserver.txt"
    trace.write_text(tracefmt(["ClientName=PC-01 Result=Success"]), encoding="utf-8")
    patterns = tmp_path / "p.csv"
    patterns.write_text('name,regex,captures\nq,"open quote,client_name\n', encoding="utf-8")
    lake = tmp_path / "lake"
    ingest([trace], IngestOptions(lake=lake, patterns=patterns))
    con = connect_35(lake)
    assert_facts_as_pattern_values(con)
    user = rows(con, "select name, problem from trace_patterns where origin = 'user'")
    assert len(user) == 1
    assert user[0]["problem"].startswith("no row could be read")
    assert scalar(con, "select client_name from trace_licensing") == "PC-01"  # defaults still work


# --------------------------------------------------------------------------- forms

FORMS: list[tuple[str, dict[str, Any]]] = [
    (
        "ClientName=PC-01 HWID=02000000c0b24e7d10a9ff372b54eb75f67a7087 LicenseId=12",
        {"client_name_raw": "PC-01", "hwid": TSCTST_HWID, "license_id": "12"},
    ),
    (
        "Client Name: PC-02, HardwareId: 0x00000002, 0x7d4eb2c0, 0x37ffa910, 0x75eb542b, "
        "0x87707af6, License ID: 13",
        {"client_name_raw": "PC-02", "hwid": TSCTST_HWID, "license_id": "13"},
    ),
    (
        "Machine 'PC-03' ClientHWID '00000002-7D4EB2C0-37FFA910-75EB542B-87707AF6' KeyPackId '4'",
        {"client_name_raw": "PC-03", "hwid": TSCTST_HWID, "keypack_id": "4"},
    ),
    (
        'MachineName "PC 04" User "CORP\\anna" License ID "14" Operation "temporary"',
        {
            "client_name_raw": "PC 04",
            "user_name": "CORP\\anna",
            "license_id": "14",
            "operation": "issue-temporary",
        },
    ),
    (
        "Computer=pc-05.corp.example Operation=Upgrade Result=0x0",
        {
            "client_name_raw": "pc-05.corp.example",
            "client_name": "PC-05",
            "operation": "upgrade",
            "result": "0x0",
        },
    ),
    (
        "computer: PC-06 hwid: 02,00,00,00,c0,b2,4e,7d,10,a9,ff,37,2b,54,eb,75,f6,7a,70,87 op: Revoked",
        {"client_name_raw": "PC-06", "hwid": TSCTST_HWID, "operation": "revoke"},
    ),
    (
        "Key pack id = 9, license number = 77, machine = PC-07.",
        {"client_name_raw": "PC-07", "keypack_id": "9", "license_id": "77"},
    ),
    (
        "Denied request of Client Name 'PC-08' (HWID (0x00000002, 0x7d4eb2c0, 0x37ffa910, "
        "0x75eb542b, 0x87707af6)), status: denied",
        {"client_name_raw": "PC-08", "hwid": TSCTST_HWID, "result": "denied"},
    ),
    (
        "cached client 02000000c0b24e7d10a9ff372b54eb75f67a7087 for reuse",
        {"hwid": TSCTST_HWID, "pattern": "hwid-hex40"},
    ),
    (
        "license blob for 0x00000002, 0x7d4eb2c0, 0x37ffa910, 0x75eb542b, 0x87707af6 stored",
        {"hwid": TSCTST_HWID, "pattern": "hwid-dwords"},
    ),
    (
        "Issued to machine: CL-01 Issued to user: SYSTEM",
        {"client_name_raw": "CL-01", "user_name": "SYSTEM"},
    ),
    (
        "ClientName=(null) HWID=000000007319468847d7b1aee40dbf5dd963c999",
        {"client_name_raw": None, "hwid": "000000007319468847d7b1aee40dbf5dd963c999"},
    ),
    (
        "HWID=00000002" + "7d4eb2c037ffa91075eb542b87707af6" + " Op=request",
        {"hwid": TSCTST_HWID, "operation": "request"},
    ),
]
FORMS += [
    (
        "Issued license to CL-01 HWID 0x00000002, 0x7d4eb2c0",
        {"client_name_raw": "CL-01", "hwid": None, "operation": None, "pattern": "issued-to"},
    ),
    (
        "Issued a temporary license to client 'PC-30'",
        {"client_name_raw": "PC-30", "operation": "issue-temporary", "pattern": "issued-to"},
    ),
]
NOT_FACTS = [
    "Certificate thumbprint 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b loaded",
    "AnnounceServer: status=0x0 retry=3",
    "Policy module settings:\n    MaxTemporaryDays=90",
    "Operation=renew Result=Success",
    "Machine name resolution failed: error 0x5",
    "Computer is not in the domain",
]


def test_key_value_colon_and_quoted_forms(tmp_path: Path) -> None:
    lines = [m for m, _ in FORMS] + NOT_FACTS
    trace = tmp_path / "forms.txt"
    trace.write_text(tracefmt(lines), encoding="utf-8")
    lake = tmp_path / "lake"
    ingest([trace], IngestOptions(lake=lake))
    con = connect_35(lake)
    assert_facts_as_pattern_values(con)
    got = {r["message"]: r for r in rows(con, "select * from trace_licensing")}
    for message, expected in FORMS:
        assert message in got, message
        for column, value in expected.items():
            assert got[message][column] == value, (message, column)
    assert set(got) == {m for m, _ in FORMS}


def test_tracerpt_xml_and_csv(tmp_path: Path) -> None:
    event = (
        '<Event xmlns="http://schemas.microsoft.com/win/2004/08/events/event"><System>'
        '<Provider Name="Microsoft-Windows-TerminalServices-Licensing"/><EventID>1</EventID>'
        '<TimeCreated SystemTime="2023-10-05T12:34:56.1234567Z"/></System>'
        "<EventData>{data}</EventData></Event>"
    )
    wpp = (
        '<Event xmlns="http://schemas.microsoft.com/win/2004/08/events/event"><System>'
        '<Provider Guid="{{a489f3d1-f149-4968-bdce-4f7d93516da8}}"/><EventID>0</EventID>'
        '<TimeCreated SystemTime="2023-10-05T12:35:00Z"/></System><DebugData>'
        "<Function>TLSIssueLicense</Function><Message>{msg}</Message></DebugData></Event>"
    )
    other = (
        '<Event xmlns="http://schemas.microsoft.com/win/2004/08/events/event"><System>'
        '<Provider Name="Microsoft-Windows-WLAN-AutoConfig"/><EventID>1</EventID>'
        '<TimeCreated SystemTime="2023-10-05T12:36:00Z"/></System>'
        '<EventData><Data Name="ClientName">NOT-ME</Data></EventData></Event>'
    )
    xml = (
        "<Events>"
        + "".join(
            [
                event.format(
                    data='<Data Name="ClientName">PC-20</Data>'
                    '<Data Name="HWID">0x00000002, 0x7d4eb2c0, 0x37ffa910, 0x75eb542b, 0x87707af6</Data>'
                    '<Data Name="LicenseId">20</Data>'
                ),
                wpp.format(msg="Operation: permanent ClientName: PC-21 KeyPackId: 5"),
                other,
            ]
        )
        + "</Events>"
    )
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "trace.xml").write_text(xml, encoding="utf-8")
    header = DATA.parents[1] / "parsers" / "data" / "traces" / "tracerpt_sample.csv"
    head = header.read_text(encoding="utf-8").splitlines()[:2]
    head.append(
        "  lserver,  Info, 0, 0, 0, 4, 0, 0, 0x0, 0x00000A1C, 0x00000C30, 2, , , "
        "{00000000-0000-0000-0000-000000000000}, , 133410849570000000, 0, 0, "
        "ClientName=PC-22, HWID=0x00000002, 0x7d4eb2c0, 0x37ffa910, 0x75eb542b, 0x87707af6"
    )
    (tmp_path / "in" / "trace.csv").write_text("\r\n".join(head) + "\r\n", encoding="utf-8")
    lake = tmp_path / "lake"
    ingest([tmp_path / "in"], IngestOptions(lake=lake))
    con = connect_35(lake)
    assert_facts_as_pattern_values(con)
    got = rows(
        con,
        "select client_name, hwid, license_id, keypack_id, operation, ts"
        " from trace_licensing order by client_name",
    )
    assert [
        (r["client_name"], r["hwid"], r["license_id"], r["keypack_id"], r["operation"]) for r in got
    ] == [
        ("PC-20", TSCTST_HWID, "20", None, None),
        ("PC-21", None, None, "5", "issue-permanent"),
        ("PC-22", TSCTST_HWID, None, None, None),
    ]
    assert got[0]["ts"] == dt.datetime(2023, 10, 5, 12, 34, 56, 123456, tzinfo=dt.UTC)


def test_every_default_example_is_extracted(tmp_path: Path) -> None:
    with (QUERIES_DIR / "trace_patterns.csv").open(encoding="utf-8", newline="") as fh:
        defaults = list(csv.DictReader(fh))
    assert len(defaults) >= 10
    with (QUERIES_DIR / "user_trace_patterns.csv").open(encoding="utf-8", newline="") as fh:
        user = list(csv.reader(fh))
    assert user == [list(defaults[0].keys())]  # the empty user table: the same header
    trace = tmp_path / "examples.txt"
    trace.write_text(tracefmt([d["example"] for d in defaults]), encoding="utf-8")
    lake = tmp_path / "lake"
    ingest([trace], IngestOptions(lake=lake))
    con = connect_35(lake)
    assert_facts_as_pattern_values(con)
    assert rows(con, "select name, problem from trace_patterns where problem is not null") == []
    captured = set(
        con.execute(
            "select line, name, field from trace_pattern_values where group_no < 99"
        ).fetchall()
    )
    # the same through trace_pattern_check (no trace needed)
    checked = {r["name"]: r for r in rows(con, "select * from trace_pattern_check")}
    assert set(checked) == {d["name"] for d in defaults}
    for d in defaults:
        assert checked[d["name"]]["matched"], d["name"]
        for field in {c for c in d["captures"].split("|") if c}:
            column = "user_name" if field == "user" else field
            assert checked[d["name"]][column] is not None, (d["name"], field)
    for line, d in enumerate(defaults, start=1):
        fields = {c for c in d["captures"].split("|") if c}
        for field in fields:
            assert (line, d["name"], field) in captured, (d["name"], d["example"])


# --------------------------------------------------------------------------- real excerpts


def test_real_excerpts_give_no_facts(tmp_path: Path) -> None:
    samples = corpus_path("etl", "text-samples")
    lake = tmp_path / "lake"
    out = run_cli("ingest", str(samples), "--lake", str(lake), "--json")
    assert out.returncode in (0, 4), out.stderr
    con = connect_35(lake)
    assert_facts_as_pattern_values(con)
    assert scalar(con, "select count(*) from trace_events") > 20
    assert rows(con, "select * from trace_licensing") == []
    assert rows(con, "select * from trace_unmatched") == []  # no licensing module among them

    # The same real wording as if a licensing module had written it: still no fact.
    relabelled = tmp_path / "relabelled"
    relabelled.mkdir()
    for path in sorted(samples.iterdir()):
        if path.suffix != ".txt" or not path.is_file():
            continue
        text = path.read_bytes().decode("utf-8", errors="replace")
        text = re.sub(r"\]\s*\[[^\]\r\n]*\]", "] [lserver]", text)
        text = re.sub(
            r"(::\s*\S+(?: \S+)?\s+(?:[0-9a-fA-F]{8}\s+)?)\[[^\]\r\n]*\]", r"\1[lserver]", text
        )
        (relabelled / f"{path.stem}_relabelled.txt").write_text(text, encoding="utf-8")
    lake2 = tmp_path / "lake2"
    ingest([relabelled], IngestOptions(lake=lake2))
    con = connect_35(lake2)
    licensing = scalar(con, "select count(*) from trace_events where provider = 'lserver'")
    assert licensing > 20
    assert rows(con, "select message, pattern from trace_licensing") == []
    assert scalar(con, "select sum(n) from trace_unmatched") == licensing


# --------------------------------------------------------------------------- macros


def test_hwid_from_text_agrees_with_the_parser(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    ingest([], IngestOptions(lake=lake))
    con = connect_35(lake)
    assert_facts_as_pattern_values(con)
    rng = random.Random(5)
    cases: list[str] = ["", "zz", "0x1, 0x2", "02000000c0b24e7d10a9ff372b54eb75f67a70", None]  # type: ignore[list-item]
    for _ in range(200):
        platform = rng.choice([0, 2, 0xFF, 0x00020001, rng.randrange(2**32)])
        raw = platform.to_bytes(4, "little") + bytes(rng.randrange(256) for _ in range(16))
        h = raw.hex()
        dwords = render_dwords(h)
        cases += [
            h,
            h.upper(),
            dwords,
            f"({dwords})",
            render_wmi(h),
            render_registry_hex(h),
            "hex:" + render_registry_hex(h),
            "".join(render_wmi(h).split("-")),
        ]
    legacy = FREERDP_LEGACY_HWID
    cases += [legacy, render_dwords(legacy), "".join(render_wmi(legacy).split("-"))]
    got = dict(
        con.execute(
            "select s, hwid_from_text(s) from unnest($cases::varchar[]) as t(s)", {"cases": cases}
        ).fetchall()
    )
    for s in cases:
        expected = None if s is None else normalize_hwid(s).hwid
        assert got[s] == expected, s


def test_operation_words(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    ingest([], IngestOptions(lake=lake))
    con = connect_35(lake)
    assert_facts_as_pattern_values(con)
    words = {
        "request": "request",
        "TLSRequestLicense": "request",
        "issue-temporary": "issue-temporary",
        "Temporary": "issue-temporary",
        "IssuePermanent": "issue-permanent",
        "upgrade": "upgrade",
        "Upgraded": "upgrade",
        "renewal": "renew",
        "Revoked": "revoke",
        "deny": "deny",
        "Denied": "deny",
        "rejected": "deny",
        "issue": None,
        "": None,
        "TLSIssueLicense": None,
    }
    got = dict(
        con.execute(
            "select w, trace_operation(w) from unnest($w::varchar[]) as t(w)", {"w": list(words)}
        ).fetchall()
    )
    assert got == words


# --------------------------------------------------------------------------- tried in order


def test_patterns_tried_in_order_give_the_facts_of_every_hit(tmp_path: Path) -> None:
    """trace_licensing tries a pattern only on the messages where a field it gives has no value
    yet from an earlier one (priority, name). Wherever that skipped a pattern it should not
    have, its facts would differ from the ones every hit gives (trace_pattern_values)."""
    patterns = tmp_path / "p.csv"
    with patterns.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["name", "module_regex", "regex", "captures", "operation", "priority"])
        # '(null)' is no value: the later patterns giving a client name are still tried
        w.writerow(["null-name", "lserver", r"Name=(\S+)", "client_name", "", "1"])
        # no module_regex: any module, and lines without one; a user only after a name
        w.writerow(["host", "", r"(?i)host[=:](\S+)(?: as (\S+))?", "client_name|user", "", "2"])
        # no captures, a constant operation; the module regex is case-insensitive
        w.writerow(["granted-const", "^LSERVER$", r"^granted\b", "", "permanent", "3"])
        w.writerow(["op-word", "lserver", r"\bop=(\w*)", "operation", "", "4"])
        # fewer groups than captures named
        w.writerow(["short", "lserver", r"^Granted to (\S+)", "client_name|user|hwid", "", "5"])
        w.writerow(["lic", "lserver", r"(?i)LICENSE\s+#(\d+)", "license_id", "", "6"])
        w.writerow(["skip-first", "lserver", r"\b(res)=(\w+)", "|result", "", "7"])
        # after the defaults: two groups for one field, a bare HWID between the default ones,
        # and a regex that matches every message, mostly empty (its operation still counts)
        w.writerow(
            ["twice", "lserver", r"\b(?:K1=(\w+)|K2=(\w+))", "keypack_id|keypack_id", "", "60"]
        )
        w.writerow(["hex-late", "lserver", r"\b([0-9a-f]{40})\b", "hwid", "", "85"])
        w.writerow(["empty-match", "lserver", r"(q*)", "user", "temporary", "95"])
    lines = [
        "Name=(null) host=PC-7 as bob",
        "Name=PC-8 host=PC-9 as carol",
        "Name=PC-10 User=dave",
        "granted op=renew Name=PC-11",
        "op=x Name=PC-12",
        "op= Name=PC-13",
        "Granted to PC-14",
        "granted to PC-15, license #77, op=revoked",
        "License #88 K2=5 KeyPack=3",
        "K2=6 host:PC-16",
        "K1=- K2=7 Name=PC-17",
        "cached 02000000c0b24e7d10a9ff372b54eb75f67a7087 hwid 0x00000002, 0x7d4eb2c0, "
        "0x37ffa910, 0x75eb542b, 0x87707af6",
        "cached 02000000c0b24e7d10a9ff372b54eb75f67a7087",
        "blob 0x00000002, 0x7d4eb2c0, 0x37ffa910, 0x75eb542b, 0x87707af6 op=deny",
        "Result=Success",
        "res=ok Name=-",
        "qqq Name=PC-18",
        "Name=ZOË host=Ünïcode as jürgen ClientName=PC-19",
        "ClientName=PC-20 Operation=Renew Name=PC-21",
    ]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a_lserver.txt").write_text(tracefmt(lines), encoding="utf-8")
    (tmp_path / "in" / "b_lserver.txt").write_text(
        tracefmt(["host=PC-30 as erin", "granted Name=PC-31"], module="LSERVER"), encoding="utf-8"
    )
    (tmp_path / "in" / "c_rpc.txt").write_text(
        tracefmt(["host=PC-40 as eve", "Name=PC-41 ClientName=PC-42"], module="rpc")
        + "2023-10-05 12:00:09 host=PC-43\r\n",
        encoding="utf-8",
    )
    lake = tmp_path / "lake"
    ingest([tmp_path / "in"], IngestOptions(lake=lake, patterns=patterns))
    con = connect_35(lake)
    assert rows(con, "select name, problem from trace_patterns where problem is not null") == []
    assert_facts_as_pattern_values(con)
    got = {
        r["message"]: r
        for r in rows(
            con,
            "select message, client_name_raw, user_name, operation, hwid, license_id, keypack_id,"
            " result, pattern from trace_licensing",
        )
    }

    def fact(message: str, **expected: Any) -> None:
        assert message in got, message
        assert {k: got[message][k] for k in expected} == expected, message

    fact("Name=(null) host=PC-7 as bob", client_name_raw="PC-7", user_name="bob", pattern="host")
    fact("Name=PC-8 host=PC-9 as carol", client_name_raw="PC-8", user_name="carol")
    fact("granted op=renew Name=PC-11", operation="issue-permanent", pattern="null-name")
    fact("op=x Name=PC-12", operation="issue-temporary")  # from the empty match
    fact("Granted to PC-14", client_name_raw="PC-14", user_name=None, pattern="short")
    fact("License #88 K2=5 KeyPack=3", license_id="88", keypack_id="3", pattern="lic")
    fact("K1=- K2=7 Name=PC-17", keypack_id="7")
    fact("cached 02000000c0b24e7d10a9ff372b54eb75f67a7087", hwid=TSCTST_HWID, pattern="hex-late")
    fact("qqq Name=PC-18", user_name="qqq", operation="issue-temporary")
    fact("ClientName=PC-20 Operation=Renew Name=PC-21", client_name_raw="PC-20", operation="renew")
    fact("host=PC-30 as erin", client_name_raw="PC-30", user_name="erin")
    fact("host=PC-40 as eve", client_name_raw="PC-40", operation=None)  # any module
    fact("2023-10-05 12:00:09 host=PC-43", client_name_raw="PC-43")  # no module
    assert "Result=Success" not in got  # a result alone is no fact
    assert "res=ok Name=-" not in got
    assert "Name=PC-41 ClientName=PC-42" not in got  # [rpc] is no licensing module


# Every form the default `hwid` row reads, and lines where its regex and the smaller one
# its groups are read with could part: no separator, an empty or "nothing" value, two
# mentions, a shape one DWORD too long, a key spelled another way.
HWID_FORMS = [
    "HWID=02000000c0b24e7d10a9ff372b54eb75f67a7087",
    "HardwareId: 0x00000002, 0x7d4eb2c0, 0x37ffa910, 0x75eb542b, 0x87707af6",
    'Client HWID = "02 00 00 00 c0 b2 4e 7d 10 a9 ff 37 2b 54 eb 75 f6 7a 70 87" Client=PC-1',
    "HW-ID: '00000002-7D4EB2C0-37FFA910-75EB542B-87707AF6'",
    "Hardware ID (0x2 0x7d4eb2c0 0x37ffa910 0x75eb542b 0x87707af6)",
    'sHardwareId "abc" ClientName=PC-2',
    'HWID="" cached 02000000c0b24e7d10a9ff372b54eb75f67a7087',
    'HWID="x" HWID=02000000c0b24e7d10a9ff372b54eb75f67a7087',
    "HWID=0x1 0x2 0x3 0x4 0x5 0x6 ClientName=PC-3",
    "HWID=02:00:00:00:c0:b2:4e:7d:10:a9:ff:37:2b:54:eb:75:f6:7a:70:87",
    "hwid: 0x00000002,0x7d4eb2c0,0x37ffa910,0x75eb542b,0x87707af6 ClientName=PC-4",
    "HWID=(null) ClientName=PC-5",
    "HWID: 'none' ClientName=PC-6",
    "HWID=zz ClientName=PC-7",
    "HWID=0x00000002; 0x7d4eb2c0; 0x37ffa910; 0x75eb542b; 0x87707af6x ClientName=PC-8",
    "HWID 02000000c0b24e7d10a9ff372b54eb75f67a7087",
    "ClientHWID=02000000C0B24E7D10A9FF372B54EB75F67A7087 User=anna",
    "Client_Hardware_ID = 0x00000002-0x7d4eb2c0-0x37ffa910-0x75eb542b-0x87707af6",
    "HWID:\t(0x00000002, 0x7d4eb2c0, 0x37ffa910, 0x75eb542b, 0x87707af6",
    "xHWID=02000000c0b24e7d10a9ff372b54eb75f67a7087 ClientName=PC-9",
]


def test_groups_read_from_the_match_are_the_regex_groups(tmp_path: Path) -> None:
    """The default `hwid` row reads its groups from its match with a smaller regex
    (groups_regex): the same facts as its own groups give, on every form it reads."""
    with (QUERIES_DIR / "trace_patterns.csv").open(encoding="utf-8", newline="") as fh:
        defaults = {row["name"]: row for row in csv.DictReader(fh)}
    assert defaults["hwid"]["groups_regex"]
    plain = tmp_path / "plain.csv"
    with plain.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(defaults["hwid"]))
        w.writeheader()
        w.writerow(defaults["hwid"] | {"groups_regex": ""})
    trace = tmp_path / "forms_lserver.txt"
    trace.write_text(tracefmt(HWID_FORMS), encoding="utf-8")
    facts = []
    for name, patterns in (("with", None), ("without", plain)):
        lake = tmp_path / name
        ingest([trace], IngestOptions(lake=lake, patterns=patterns))
        con = connect_35(lake)
        used = scalar(
            con, "select groups_regex is not null from trace_patterns where name = 'hwid'"
        )
        assert used == (patterns is None)
        assert_facts_as_pattern_values(con)
        facts.append(rows(con, "select * exclude (run_id) from trace_licensing order by line"))
    assert facts[0] == facts[1]
    assert len(facts[0]) == len(HWID_FORMS)  # each names a computer or an HWID
    got = {r["message"]: r for r in facts[0]}
    assert got[HWID_FORMS[0]]["hwid"] == TSCTST_HWID
    assert got[HWID_FORMS[2]]["hwid"] == TSCTST_HWID  # 20 bytes, quoted
    assert got[HWID_FORMS[6]]["pattern"] == "hwid-hex40"  # the empty value is none
    assert got[HWID_FORMS[7]]["hwid_raw"] == "x"  # the first mention
    assert got[HWID_FORMS[8]]["hwid_raw"] == "0x1 0x2 0x3 0x4 0x5"  # five DWORDs at most


def test_a_user_pattern_reads_its_groups_from_the_match(tmp_path: Path) -> None:
    patterns = tmp_path / "p.csv"
    with patterns.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(
            ["name", "module_regex", "regex", "groups_regex", "captures", "operation", "example"]
        )
        # the match is 'pair=PC-50/frank': its groups read with a regex of their own
        w.writerow(
            ["pair", "", r"\bpair=\S+", r"pair=([^/]+)/(.+)", "client_name|user", "", "pair=A/b"]
        )
        # fewer groups than captures named (a search per group), and a constant operation
        w.writerow(["trio", "", r"\btrio:\S+", r"trio:(\S+)", "client_name|user", "renew", ""])
        w.writerow(["broken", "", r"x", r"(", "user", "", ""])
    trace = tmp_path / "t_lserver.txt"
    trace.write_text(
        tracefmt(["pair=PC-50/frank", "trio:PC-51", "pair=PC-52 trio:PC-53"]), encoding="utf-8"
    )
    lake = tmp_path / "lake"
    ingest([trace], IngestOptions(lake=lake, patterns=patterns))
    con = connect_35(lake)
    assert rows(con, "select name, problem from trace_patterns where origin = 'user'") == [
        {"name": "broken", "problem": "invalid groups_regex"},
        {"name": "pair", "problem": None},
        {"name": "trio", "problem": None},
    ]
    assert_facts_as_pattern_values(con)
    got = rows(
        con,
        "select client_name_raw, user_name, operation, pattern from trace_licensing order by line",
    )
    assert got == [
        {"client_name_raw": "PC-50", "user_name": "frank", "operation": None, "pattern": "pair"},
        {"client_name_raw": "PC-51", "user_name": None, "operation": "renew", "pattern": "trio"},
        # 'pair=PC-52' is matched, but its groups regex does not read it: trio names the
        # computer, and pair's match gives nothing
        {"client_name_raw": "PC-53", "user_name": None, "operation": "renew", "pattern": "trio"},
    ]
    # the pattern's own example, read the same way
    check = rows(con, "select * from trace_pattern_check where name = 'pair'")
    assert [(r["matched"], r["client_name"], r["user_name"]) for r in check] == [(True, "A", "b")]


def test_trace_value_is_the_plain_definition(tmp_path: Path) -> None:
    """trace_value skips lower() on long values: the same values as the plain definition."""
    lake = tmp_path / "lake"
    ingest([], IngestOptions(lake=lake))
    con = connect_35(lake)
    cases = ["", " ", "null", " NULL ", "(None)", "<null>", "-", " n/a", "None", "x", "nul",
             "nulls", "\u00a0null\u3000", " " * 40 + "none" + " " * 40, "\tnull", "(null)x",
             "İ", "K" * 6, "\u212a" * 6, "\U0001f600" * 6, "\U0001f600" * 7, "N/A ", "none" * 7,
             "ſ", None]  # fmt: skip
    plain = """case when v is null then null
        when lower(trim(v)) in ('', '(null)', 'null', '<null>', '-', 'n/a', 'none', '(none)', '<none>')
        then null else trim(v) end"""
    got = con.execute(
        f"select v, trace_value(v), {plain} from unnest($c::varchar[]) as t(v)", {"c": cases}
    ).fetchall()
    assert len(got) == len(cases)
    assert all(r[1] == r[2] for r in got), [r for r in got if r[1] != r[2]]


def test_shell_filters_on_facts(simulated: Sim) -> None:
    """A filter on trace_licensing stays above the extraction (pushed into its steps it would
    copy their expressions into each other: minutes to plan in the DuckDB shell)."""
    lake, _, con = simulated
    query = (
        "select count(*) from trace_licensing where operation = 'renew' and hwid is not null"
        " and client_name_raw like '%0%' and user_name is not null"
    )
    out = run_cli("shell", "--lake", str(lake), "-c", f"select 'N=' || ({query})")
    assert out.returncode == 0, out.stderr
    found = re.search(r"N=(\d+)", out.stdout)
    assert found, out.stdout + out.stderr
    assert int(found[1]) == scalar(con, query) > 0
