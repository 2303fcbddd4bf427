"""EVTX records recovered from chunk slack (docs/EVTX_RECOVERY.md) as CAL facts: they reach
cal_events, the timelines and the findings' evidence marked `recovered`, and the report says
"recovered from slack"; a recovered record whose payload could not be rendered is its event
id and time only, never a name or HWID fact.
"""

from __future__ import annotations

import datetime as dt
import struct
from pathlib import Path
from zoneinfo import ZoneInfo

from caltrail.fixtures.evtx_writer import CHUNK_SIZE, HEADER_SIZE, EventSpec
from caltrail.parsers.evtx import carve
from caltrail.pipeline.diagnose import dicts, open_case
from caltrail.pipeline.ingest import IngestOptions, ingest
from caltrail.pipeline.report import render_report
from tests.parsers.test_evtx_recover import rewritten

T0 = dt.datetime(2025, 3, 1, 9, 0, tzinfo=dt.UTC)
LICENSING = "Microsoft-Windows-TerminalServices-Licensing"
LOG_NAME = "LS01_Microsoft-Windows-TerminalServices-Licensing%4Admin.evtx"


def issued(i: int, pad: int = 0) -> EventSpec:
    """Event 4147: a per-device CAL issued to a computer (param1 the CAL type, param2 the
    computer), `pad` characters longer when asked (so that later short records leave the
    older ones' tails in slack)."""
    return EventSpec(
        provider=LICENSING,
        event_id=4147,
        time_created=T0 + dt.timedelta(minutes=i),
        computer="LS01",
        channel=f"{LICENSING}/Admin",
        data=["Windows Server 2019 : RDS Per Device CAL", f"PC-{i:05d}" + "x" * pad],
    )


def without_payload_template(data: bytes, record_offset: int) -> bytes:
    """The log with the payload (EventData) template that the slack record at
    `record_offset` of chunk 0 names changed where it points: the template is gone, so the
    recovered records that use it are emitted without their payload."""
    size = struct.unpack_from("<I", data, HEADER_SIZE + record_offset + 4)[0]
    body = data[HEADER_SIZE : HEADER_SIZE + CHUNK_SIZE]
    refs = carve.template_refs(body, record_offset + 24, record_offset + size - 4)
    assert refs is not None
    out = bytearray(data)
    at = HEADER_SIZE + refs[1].offset
    out[at + 4 : at + 8] = b"\xde\xad\xbe\xef"
    return bytes(out)


def _evtx_facts(lake: Path) -> list[dict[str, object]]:
    con = open_case(lake)
    try:
        return dicts(
            con,
            "select source_line, recovered, client_name, license_key, detail, fact "
            "from cal_events where source = 'evtx' order by source_line",
        )
    finally:
        con.close()


def test_recovered_records_are_facts_marked_as_recovered(tmp_path: Path) -> None:
    _, data, writer = rewritten(make=issued)
    slack = {s.record_id for s in writer.slack}
    log = tmp_path / LOG_NAME
    log.write_bytes(data)
    lake = tmp_path / "lake"
    ingest([log], IngestOptions(lake=lake, tz=ZoneInfo("UTC")))
    facts = _evtx_facts(lake)
    recovered = [f for f in facts if f["recovered"]]
    assert {f["source_line"] for f in recovered} == slack
    assert all(f["client_name"] and f["fact"] == "issued" for f in recovered)
    assert all(str(f["detail"]).endswith("; recovered from slack") for f in recovered)
    assert not any(f["recovered"] for f in facts if f["source_line"] not in slack)
    con = open_case(lake)
    try:
        # the activity behind timelines and evidence carries the flag too
        (flagged,) = con.execute("select count(*) from activity where recovered").fetchone()  # type: ignore[misc]
        assert flagged == len(slack)
        (life,) = con.execute(  # type: ignore[misc]
            "select count(*) from license_life where detail like '%recovered from slack%'"
        ).fetchone()
        assert life == len(slack)
    finally:
        con.close()


def test_a_record_recovered_without_payload_is_an_event_id_and_time_only(tmp_path: Path) -> None:
    _, data, writer = rewritten(make=issued)
    slack = {s.record_id for s in writer.slack}
    log = tmp_path / LOG_NAME
    log.write_bytes(without_payload_template(data, writer.slack[0].offset))
    lake = tmp_path / "lake"
    summary = ingest([log], IngestOptions(lake=lake, tz=ZoneInfo("UTC")))
    assert summary.records_seen == summary.records_ok  # a record without payload is a row
    facts = _evtx_facts(lake)
    lost = [f for f in facts if f["recovered"]]
    assert {f["source_line"] for f in lost} == slack
    for f in lost:
        # still an issuance at that time (the event id says so), naming no device
        assert f["fact"] == "issued"
        assert f["client_name"] is None
        assert f["license_key"] is None
        assert "without its payload: event id and time only" in str(f["detail"])
    con = open_case(lake)
    try:
        (named,) = con.execute(  # type: ignore[misc]
            "select count(*) from activity where recovered"
        ).fetchone()
        assert named == 0  # no name or HWID fact comes from them
    finally:
        con.close()


def test_the_report_says_which_evidence_was_recovered_from_slack(tmp_path: Path) -> None:
    """A refused revocation (event 81) read back from slack: the server finding's evidence
    row is marked, and the report says so next to what the finding says."""

    def refused(i: int, pad: int = 0) -> EventSpec:
        return EventSpec(
            provider=LICENSING,
            event_id=81,
            time_created=T0 + dt.timedelta(minutes=i),
            computer="LS01",
            channel="System",
            data=[
                f"PC-{i:05d}" + "x" * pad,
                "Windows Server 2019",
                "4",
                "20",
                "3/30/2025 9:00:00 AM",
            ],
        )

    _, data, _writer = rewritten(make=refused)
    log = tmp_path / "LS01_System.evtx"
    log.write_bytes(data)
    lake = tmp_path / "lake"
    ingest([log], IngestOptions(lake=lake, tz=ZoneInfo("UTC")))
    con = open_case(lake)
    try:
        found = dicts(con, "select evidence_rows from findings where cause = 'revocation-limit'")
        assert found
        rows = found[0]["evidence_rows"]
        assert any(r["recovered"] for r in rows)  # type: ignore[union-attr]
        assert "evidence rows recovered from slack" in render_report(con)
    finally:
        con.close()
