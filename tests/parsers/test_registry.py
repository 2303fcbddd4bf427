"""Registry exports of MSLicensing -> client HWIDs (caltrail.parsers.client.registry)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caltrail.parsers.base import ClientHwidRecord, Item, ParseIssue
from caltrail.parsers.client import registry
from caltrail.parsers.errors import InvalidSignatureError, ParseError
from caltrail.parsers.hwid import render_registry_hex
from tests.parsers.items import notes, parse_bytes

DATA = Path(__file__).parent / "data" / "exports"
HWID1 = "02000000c0b24e7d10a9ff372b54eb75f67a7087"
KEY = r"HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\MSLicensing\HardwareID"


def run(data: bytes, **options: object) -> list[Item]:
    return parse_bytes(registry, data, **options)


def records(items: list[Item]) -> list[ClientHwidRecord]:
    return [i for i in items if isinstance(i, ClientHwidRecord)]


def reg(*lines: str, header: str = "Windows Registry Editor Version 5.00") -> str:
    return "\r\n".join([header, "", *lines, "", ""])


def test_utf16_sample_with_continuation_and_store() -> None:
    path = DATA / "PC-0042_MSLicensing.reg"
    assert registry.sniff(path.read_bytes(), path.name)
    items = run(path.read_bytes(), file_name=f"bundle/{path.name}")
    (rec,) = records(items)
    assert rec == ClientHwidRecord(
        client_name="PC-0042",
        client_name_source="file name",
        hwid=HWID1,
        hwid_raw="hex:" + render_registry_hex(HWID1),
        hwid_flag=None,
        source_kind="registry",
        key_path=KEY,
        deleted=False,
        store_license_count=2,
        license_id=None,
        issuer=None,
        scope=None,
        issued_to_user=None,
        valid_from=None,
        valid_from_raw=None,
        expires_on=None,
        expires_on_raw=None,
        line=6,
    )
    assert notes(items)["store_license_count"] == "2"


def test_regedit4_tss_sample_deletions_and_folder_name() -> None:
    path = DATA / "TSS_PC-0099_251103-140000_RDSCli" / "Reg-HKLM-MSLicensing.txt"
    assert registry.sniff(path.read_bytes(), path.name)
    items = run(path.read_bytes(), file_name=str(path.relative_to(DATA)))
    mobile, value_deleted, key_deleted = records(items)
    assert mobile.hwid == "010002000040056a0e9d010800204fac10406000"  # hex(3): REG_BINARY
    assert not mobile.deleted
    assert (value_deleted.deleted, value_deleted.hwid) == (True, None)
    assert (
        value_deleted.key_path == r"HKEY_USERS\S-1-5-21-1\Software\Microsoft\MSLicensing\HardwareID"
    )
    assert key_deleted.deleted
    assert "Wow6432Node" in (key_deleted.key_path or "")
    assert {(r.client_name, r.client_name_source) for r in records(items)} == {
        ("PC-0099", "folder name")
    }
    assert {r.store_license_count for r in records(items)} == {None}  # export lacks Store


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16-le-bom", "cp1252"])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_encodings_and_line_ends(encoding: str, newline: str) -> None:
    text = reg(
        r"[HKLM\SOFTWARE\Microsoft\MSLicensing\HardwareID]",
        '"ClientHWID"=hex:02,00,00,00,c0,b2,4e,7d,10,a9,ff,37,\\',
        "  2b,54,eb,75,f6,7a,70,87",
        '"Other"="Käse"',
    ).replace("\r\n", newline)
    if encoding == "utf-16-le-bom":
        data = b"\xff\xfe" + text.encode("utf-16-le")
    else:
        data = text.encode(encoding)
    items = run(data, client_name="CL-01")
    (rec,) = records(items)
    assert (rec.hwid, rec.client_name, rec.client_name_source) == (HWID1, "CL-01", "option")
    assert rec.line == 4


@pytest.mark.parametrize(
    ("file_name", "expected"),
    [
        ("PC-0042_MSLicensing.reg", ("PC-0042", "file name")),
        ("PC-0042_Reg-HKLM-MSLicensing.txt", ("PC-0042", "file name")),
        ("PC-0042-MSLicensing.reg.txt", ("PC-0042", "file name")),
        ("cases\\123\\PC-7\\Reg-HKLM-MSLicensing.txt", ("PC-7", "folder name")),
        ("MSRD-Results-PC-8/MSLicensing.reg", ("PC-8", "folder name")),
        ("Reg-HKLM-MSLicensing.txt", (None, "unknown")),
        ("CL-01_tsctst.txt", ("CL-01", "file name")),
        ("", (None, "unknown")),
    ],
)
def test_client_name_from_file_name(file_name: str, expected: tuple[str | None, str]) -> None:
    assert registry.client_name_from_file_name(file_name) == expected


def test_reg_query_output() -> None:
    text = "\r\n".join([
        "",
        KEY,
        "    ClientHWID    REG_BINARY    02000000C0B24E7D10A9FF372B54EB75F67A7087",
        "",
        r"HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\MSLicensing\Store",
        "",
        r"HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\MSLicensing\Store\LICENSE000",
        "    ClientLicense    REG_BINARY    3082",
    ])  # fmt: skip
    data = text.encode("utf-8")
    assert registry.sniff(data, "x.txt")
    items = run(data)
    (rec,) = records(items)
    assert (rec.hwid, rec.store_license_count, rec.line) == (HWID1, 1, 3)
    assert notes(items)["registry_format"] == "reg query output"


def test_unconvertible_values_are_kept_and_flagged() -> None:
    text = reg(
        f"[{KEY}]",
        '"ClientHWID"=dword:00000002',
        '"ClientHWID"=hex:02,00',
        '"ClientHWID"=hex(2):02,00',
    )
    recs = records(run(text.encode()))
    assert [(r.hwid, r.hwid_flag) for r in recs] == [(None, "unconvertible")] * 3
    assert [r.hwid_raw for r in recs] == ["dword:00000002", "hex:02,00", "hex(2):02,00"]


def test_bad_clienthwid_line_is_quarantined() -> None:
    text = reg(f"[{KEY}]", "ClientHWID hex 02,00", '"ClientHWID"=hex:' + render_registry_hex(HWID1))
    items = run(text.encode())
    assert [r.hwid for r in records(items)] == [HWID1]
    bad = [i for i in items if isinstance(i, ParseIssue) and i.quarantined]
    assert [(i.kind, i.line) for i in bad] == [("bad_value", 4)]


def test_values_outside_hardwareid_are_ignored() -> None:
    text = reg(
        r"[HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\Other]",
        '"ClientHWID"=hex:' + render_registry_hex(HWID1),
        r"[HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\MSLicensing]",
    )
    items = run(text.encode())
    assert records(items) == []
    assert notes(items)["store_license_count"] == "0"


def test_not_a_registry_export() -> None:
    assert not registry.sniff(b"Windows Registry Editor Version 5.00\r\n[HKLM\\X]\r\n", "x.reg")
    assert not registry.sniff(b"just text mentioning MSLicensing", "x.txt")
    with pytest.raises(InvalidSignatureError):
        run(b"just text mentioning MSLicensing")
    with pytest.raises(InvalidSignatureError):
        run(b"")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=24), max_size=8), st.binary(max_size=300))
def test_every_value_is_a_record_and_junk_never_raises(values: list[bytes], junk: bytes) -> None:
    lines = [f"[{KEY}]"]
    lines += ['"ClientHWID"=hex:' + ",".join(f"{b:02x}" for b in value) for value in values]
    recs = records(run(reg(*lines).encode()))
    assert len(recs) == len(values)
    assert [r.hwid for r in recs] == [v.hex() if len(v) == 20 else None for v in values]
    try:
        run(reg(*lines).encode() + junk)
        run(junk)
    except ParseError:
        pass
