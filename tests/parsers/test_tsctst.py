"""TSCTST output -> client HWIDs and stored CAL fields (caltrail.parsers.client.tsctst)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caltrail.parsers.base import ClientHwidRecord, Item, ParseIssue
from caltrail.parsers.client import tsctst
from caltrail.parsers.errors import InvalidSignatureError, ParseError
from tests.parsers.items import notes, parse_bytes

DATA = Path(__file__).parent / "data" / "exports"
UTC = dt.UTC
HWID1 = "02000000c0b24e7d10a9ff372b54eb75f67a7087"


def run(data: bytes, **options: object) -> list[Item]:
    return parse_bytes(tsctst, data, **options)


def records(items: list[Item]) -> list[ClientHwidRecord]:
    return [i for i in items if isinstance(i, ClientHwidRecord)]


def test_sample_two_blocks() -> None:
    data = (DATA / "CL-01_tsctst.txt").read_bytes()
    assert tsctst.sniff(data, "x.txt")
    items = run(data, tz=ZoneInfo("Europe/Berlin"))
    first, second = records(items)
    assert first == ClientHwidRecord(
        client_name="CL-01",
        client_name_source="data",
        hwid=HWID1,
        hwid_raw="0x00000002, 0x7d4eb2c0, 0x37ffa910, 0x75eb542b, 0x87707af6",
        hwid_flag=None,
        source_kind="tsctst",
        key_path=None,
        deleted=False,
        store_license_count=None,
        license_id="A02-5.02-S",
        issuer="SBTR",
        scope="CON",
        issued_to_user="SYSTEM",
        valid_from=dt.datetime(2023, 10, 25, 7, 0, tzinfo=UTC),  # CEST
        # the text beside its reading (docs/ARCHITECTURE.md: UTC, raw kept)
        valid_from_raw="25.10.2023 09:00:00",
        expires_on=dt.datetime(2023, 12, 23, 8, 0, tzinfo=UTC),  # CET
        expires_on_raw="23.12.2023 09:00:00",
        line=4,
        platform_id="0x000000ff",
    )
    # spacing and label case vary; "..." is no date; an unreadable date is a warning
    assert second.hwid == "0200000011111111222222223333333344444444"
    assert (second.license_id, second.valid_from, second.expires_on) == ("A02-6.00-S", None, None)
    assert (second.valid_from_raw, second.expires_on_raw) == ("...", "sometime")
    warnings = [i for i in items if isinstance(i, ParseIssue)]
    assert [(i.kind, i.quarantined) for i in warnings] == [("bad_date", False)]
    assert notes(items)["date_order"].startswith("dmy (inferred")


def test_repeated_hwid_starts_a_block_and_options_win() -> None:
    text = "\n".join([
        "HWID: 0x00000002, 0x7d4eb2c0, 0x37ffa910, 0x75eb542b, 0x87707af6",
        "Issued to machine: CL-01",
        "Valid from: 10/5/2023 12:34:56 PM",
        "HWID : 0x00000000, 0x88461973, 0xaeb1d747, 0x5dbf0de4, 0x99c963d9",
        "Issued to machine: LINUX-THIN",
        "Expires on: Thu Oct 05 12:34:56 2023",
    ])  # fmt: skip
    items = run(text.encode("utf-8-sig"), client_name="forced")
    first, second = records(items)
    assert {(r.client_name, r.client_name_source) for r in (first, second)} == {
        ("forced", "option")
    }
    assert first.valid_from == dt.datetime(2023, 10, 5, 12, 34, 56, tzinfo=UTC)
    assert second.hwid_flag == "freerdp_legacy"
    assert second.expires_on == dt.datetime(2023, 10, 5, 12, 34, 56, tzinfo=UTC)
    assert second.line == 4
    assert "guess" in notes(items)["date_order"]


def test_utf16_and_client_name_fallback_to_file_name() -> None:
    text = "TS Certificate Version: 0x00050001\r\nHWID: 0x2,0x1,0x2,0x3,0x4\r\nLicense ID: X\r\n"
    items = run(b"\xff\xfe" + text.encode("utf-16-le"), file_name="cases/PC-5/tsctst.txt")
    (rec,) = records(items)
    assert (rec.client_name, rec.client_name_source) == ("PC-5", "folder name")
    assert rec.hwid == "0200000001000000020000000300000004000000"


def test_unconvertible_hwid_is_kept() -> None:
    (rec,) = records(run(b"HWID: 0x00000002, 0x7d4eb2c0\nIssued to machine: CL-01\n"))
    assert (rec.hwid, rec.hwid_flag) == (None, "unconvertible")


def test_not_tsctst() -> None:
    assert not tsctst.sniff(b"[0]0AF4.0C64::07/25/2003-14:55:39.998 [x]HWID: 0x00000002", "x")
    with pytest.raises(InvalidSignatureError):
        run(b"nothing to see here\n")


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=500))
def test_random_bytes_raise_only_parse_errors(junk: bytes) -> None:
    sample = (DATA / "CL-01_tsctst.txt").read_bytes()
    for data in (junk, sample + junk, junk + sample):
        try:
            run(data)
        except ParseError:
            pass
