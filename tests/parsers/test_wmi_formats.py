"""ConvertTo-Xml, ConvertTo-Html and Checkmk forms, the dispatcher, and sniff exclusivity."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from types import ModuleType
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caltrail.parsers import reader_for
from caltrail.parsers.base import (
    IssuedLicenseRecord,
    Item,
    KeypackRecord,
    ParseIssue,
)
from caltrail.parsers.client import registry, tsctst
from caltrail.parsers.errors import InvalidSignatureError, MissingColumnError, ParseError
from caltrail.parsers.wmi import checkmk
from caltrail.parsers.wmi import csv as wmi_csv
from caltrail.parsers.wmi import html as wmi_html
from caltrail.parsers.wmi import xml as wmi_xml
from tests.parsers.items import notes, parse_bytes

DATA = Path(__file__).parent / "data" / "exports"
UTC = dt.UTC
HWID1 = "02000000c0b24e7d10a9ff372b54eb75f67a7087"
MODULES: tuple[ModuleType, ...] = (checkmk, wmi_xml, wmi_html, wmi_csv, registry, tsctst)


run = parse_bytes


def records(items: list[Item]) -> list[IssuedLicenseRecord | KeypackRecord]:
    return [i for i in items if isinstance(i, IssuedLicenseRecord | KeypackRecord)]


def issues(items: list[Item], quarantined: bool = True) -> list[ParseIssue]:
    return [i for i in items if isinstance(i, ParseIssue) and i.quarantined == quarantined]


# -- ConvertTo-Xml (psSDP) ------------------------------------------------------------------------


def test_xml_keypack_sample() -> None:
    data = (DATA / "pssdp_keypacks.xml").read_bytes()
    items = run(wmi_xml, data, file_name="LS01_Win32_TSLicenseKeyPack_20251103-0930.xml")
    builtin, volume = records(items)
    assert isinstance(builtin, KeypackRecord)
    assert isinstance(volume, KeypackRecord)
    assert builtin.keypack_id == 2
    assert builtin.total_unlimited
    assert builtin.available_unlimited
    assert builtin.expiration_never
    assert builtin.type_and_model == "Built-in TS Per Device CAL"
    assert builtin.license_server == "LS01"
    assert volume.keypack_id == 14
    assert (volume.total_licenses, volume.issued_licenses, volume.available_licenses) == (
        1050,
        731,
        319,
    )
    assert volume.expiration_date == dt.datetime(2038, 1, 1, 7, 11, 8, tzinfo=UTC)
    assert volume.product_version_name == "2016 (unconfirmed)"
    assert builtin.snapshot_time == dt.datetime(2025, 11, 3, 9, 30, tzinfo=UTC)
    assert notes(items)["snapshot_time_source"] == "file name"


def issued_xml(objects: list[dict[str, str]], decl: str = "utf-8") -> str:
    parts = [f'<?xml version="1.0" encoding="{decl}"?>', "<Objects>"]
    for obj in objects:
        parts.append('  <Object Type="System.Management.ManagementObject">')
        for name, value in obj.items():
            parts.append(f'    <Property Name="{name}" Type="System.String">{value}</Property>')
        parts.append("  </Object>")
    parts.append("</Objects>")
    return "\r\n".join(parts) + "\r\n"


def issued_obj(lid: str, issue: str = "20231005123456.000000+000") -> dict[str, str]:
    return {
        "__CLASS": "Win32_TSIssuedLicense",
        "LicenseId": lid,
        "KeyPackId": "3",
        "LicenseStatus": "2",
        "IssueDate": issue,
        "ExpirationDate": "20231203123456.000000+000",
        "sHardwareId": "00000002-7D4EB2C0-37FFA910-75EB542B-87707AF6",
        "sIssuedToComputer": "CL-01",
        "sIssuedToUser": "alice",
        "PSComputerName": "LS01",
    }


def test_xml_issued_utf16_with_utf8_declaration() -> None:
    text = issued_xml([issued_obj("5"), issued_obj("6", "bad"), issued_obj("7")])
    data = b"\xff\xfe" + text.encode("utf-16-le")
    assert wmi_xml.sniff(data, "x.xml")
    items = run(wmi_xml, data)
    assert [r.license_id for r in records(items)] == [5, 7]
    assert records(items)[0].hwid == HWID1
    assert records(items)[0].issue_date == dt.datetime(2023, 10, 5, 12, 34, 56, tzinfo=UTC)
    bad = issues(items)
    assert len(bad) == 1
    assert "IssueDate" in bad[0].message
    assert bad[0].line == 15  # the line of the second <Object>


def test_xml_truncated_file_keeps_what_came_before() -> None:
    text = issued_xml([issued_obj("5"), issued_obj("6")])
    items = run(wmi_xml, text[: text.rindex("<Property")].encode())
    assert [r.license_id for r in records(items)] == [5]
    assert [i.kind for i in issues(items)] == ["xml_syntax"]


def test_xml_object_on_the_line_of_a_break_is_kept() -> None:
    """An <Object> that ends on the line where the document breaks is whole: it is read
    (the reader used to drop the events of the line it was feeding when lxml raised)."""
    text = issued_xml([issued_obj("5"), issued_obj("6"), issued_obj("7")])
    second_end = text.index("</Object>", text.index("</Object>") + 1) + len("</Object>")
    broken = text[:second_end] + "\x01 junk" + text[second_end:]
    items = run(wmi_xml, broken.encode())
    assert [r.license_id for r in records(items)] == [5, 6]
    assert [i.kind for i in issues(items)] == ["xml_syntax"]


def test_xml_truncated_inside_an_object_gives_no_partial_row() -> None:
    text = issued_xml([issued_obj("5"), issued_obj("6")])
    cut = text.index("sIssuedToUser", text.index(">6<"))  # the second object, half read
    items = run(wmi_xml, text[:cut].encode())
    assert [r.license_id for r in records(items)] == [5]
    assert [i.kind for i in issues(items)] == ["xml_syntax"]


def test_xml_missing_column_and_not_xml() -> None:
    obj = issued_obj("5")
    del obj["sHardwareId"]
    with pytest.raises(MissingColumnError, match="sHardwareId"):
        run(wmi_xml, issued_xml([obj]).encode())
    with pytest.raises(InvalidSignatureError):
        run(wmi_xml, b"<Objs><Obj/></Objs>")
    with pytest.raises(InvalidSignatureError):
        run(wmi_xml, b"\x00\x01 not xml at all")


def test_xml_entities_are_not_resolved() -> None:
    text = issued_xml([issued_obj("5")]).replace(
        "<Objects>", '<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>\r\n<Objects>'
    )
    text = text.replace(">alice<", ">&e;<")
    items = run(wmi_xml, text.encode())
    user = records(items)[0].issued_to_user
    assert user is None or "root:" not in user


# -- ConvertTo-Html (MSRD-Collect) ----------------------------------------------------------------


def test_html_sample_en_us() -> None:
    data = (DATA / "msrd_issued.html").read_bytes()
    assert wmi_html.sniff(data, "LS01_rdls_IssuedLicenses.html")
    items = run(wmi_html, data, tz=ZoneInfo("America/New_York"))
    recs = records(items)
    assert [r.license_id for r in recs] == [5, 6]
    assert recs[0].issue_date == dt.datetime(2023, 10, 5, 16, 34, 56, tzinfo=UTC)
    assert recs[0].expiration_date == dt.datetime(2023, 12, 13, 17, 34, 56, tzinfo=UTC)
    assert recs[0].license_status_name == "Active"
    assert recs[0].hwid == HWID1
    assert recs[1].license_status_name == "Temporary"
    bad = issues(items)
    assert [(i.line, i.kind) for i in bad] == [(12, "bad_row"), (13, "bad_row")]
    assert "expected 9 cells, found 3" in bad[1].message
    assert notes(items)["date_order"].startswith("mdy (inferred")


def test_html_without_license_table() -> None:
    data = b"<html><body><h2>Issued licenses</h2><table></table></body></html>"
    assert wmi_html.sniff(data, "LS01_rdls_IssuedLicenses.html")
    assert not wmi_html.sniff(data, "report.html")
    items = run(wmi_html, data)
    assert records(items) == []
    (issue,) = issues(items)
    assert issue.kind == "no_license_table"
    assert issue.line == 1
    assert issue.excerpt.startswith("<html>")


def test_html_de_de_utf16_and_list_form() -> None:
    header = "".join(f"<th>{c}</th>" for c in ["LicenseId", "IssueDate", "ExpirationDate",
                                              "sIssuedToComputer", "sHardwareId"])  # fmt: skip
    row = "".join(f"<td>{c}</td>" for c in ["5", "05.10.2023 12:34:56", "24.12.2023 12:34:56",
                                           "CL-01", HWID1])  # fmt: skip
    text = f"<html><body><table><tr>{header}</tr><tr>{row}</tr></table></body></html>"
    items = run(wmi_html, b"\xff\xfe" + text.encode("utf-16-le"), tz=ZoneInfo("Europe/Berlin"))
    (rec,) = records(items)
    assert rec.issue_date == dt.datetime(2023, 10, 5, 10, 34, 56, tzinfo=UTC)
    assert rec.license_status is None
    listed = "".join(
        f"<table><tr><td>LicenseId:</td><td>{lid}</td></tr>"
        f"<tr><td>sHardwareId:</td><td>{HWID1}</td></tr>"
        "<tr><td>sIssuedToComputer:</td><td>CL-01</td></tr>"
        "<tr><td>IssueDate:</td><td>20231005123456.000000+000</td></tr>"
        "<tr><td>ExpirationDate:</td><td></td></tr></table>"
        for lid in ("8", "9")
    )
    items = run(wmi_html, f"<html><body>{listed}</body></html>".encode())
    assert [r.license_id for r in records(items)] == [8, 9]
    assert notes(items)["export_form"] == "ConvertTo-Html -As List"


# -- Checkmk --------------------------------------------------------------------------------------


def test_checkmk_sample() -> None:
    data = (DATA / "checkmk_rds_licenses.txt").read_bytes()
    assert checkmk.sniff(data, "agent.txt")
    items = run(checkmk, data)
    recs = records(items)
    assert [r.keypack_id for r in recs] == [13, 2, 14, 4]
    first = recs[0]
    assert isinstance(first, KeypackRecord)
    assert first.total_unlimited
    assert first.issued_licenses == 100
    assert first.expiration_never
    assert first.product_version == "Windows Server 2008 oder Windows Server 2008 R2"
    assert first.keypack_type_name == "temporary"
    last = recs[3]
    assert isinstance(last, KeypackRecord)
    assert (last.product_type_name, last.product_version_name) == ("per user", "2012")
    assert not issues(items)


def test_checkmk_short_rows_culture_dates_and_bad_rows() -> None:
    text = "\n".join([
        "<<<rds_licenses:sep(44)>>>",
        "KeyPackId,Description,KeyPackType,ProductType,ProductVersion,ProductVersionID,"
        "TotalLicenses,IssuedLicenses,AvailableLicenses,ExpirationDate",
        "14,A02-6.00-S,2,0,Windows Server 2008,2,1050,731,319,01/08/2023 00:00:00",
        "16,A02-6.00-S,2,0,Windows Server 2008,2,50,23,27,25/04/2026 00:00:00",
        "17,A02-6.00-S,2,0,Windows Server 2008,2,50,18,32",
        "18,too,few",
    ])  # fmt: skip
    items = run(checkmk, text.encode())
    recs = records(items)
    assert [r.keypack_id for r in recs] == [14, 16, 17]
    assert recs[0].expiration_date == dt.datetime(2023, 8, 1, tzinfo=UTC)  # dmy from 25/04
    assert recs[2].expiration_date is None
    assert [i.line for i in issues(items)] == [6]


def test_checkmk_without_section() -> None:
    with pytest.raises(InvalidSignatureError):
        run(checkmk, b"<<<uptime>>>\n123\n")


# -- dispatcher and sniff exclusivity -------------------------------------------------------------

SAMPLES = {
    "wmiobject_ps51_issued.csv": wmi_csv,
    "pssdp_keypacks.xml": wmi_xml,
    "msrd_issued.html": wmi_html,
    "checkmk_rds_licenses.txt": checkmk,
    "PC-0042_MSLicensing.reg": registry,
    "TSS_PC-0099_251103-140000_RDSCli/Reg-HKLM-MSLicensing.txt": registry,
    "CL-01_tsctst.txt": tsctst,
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_exactly_one_parser_sniffs_each_sample(name: str) -> None:
    head = (DATA / name).read_bytes()[:65536]
    accepted = [m for m in MODULES if m.sniff(head, name)]
    assert accepted == [SAMPLES[name]]


@pytest.mark.parametrize("name", [n for n, m in SAMPLES.items() if m not in (registry, tsctst)])
def test_detection_picks_the_wmi_reader(name: str) -> None:
    data = (DATA / name).read_bytes()
    module = reader_for(data[:65536], name)
    assert module is SAMPLES[name]
    assert records(run(module, data))


def test_wmi_readers_reject_others() -> None:
    data = (DATA / "PC-0042_MSLicensing.reg").read_bytes()
    assert reader_for(data, "x.reg") is registry
    assert not any(m.sniff(data, "x.reg") for m in (checkmk, wmi_xml, wmi_html, wmi_csv))


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=400), st.sampled_from(sorted(SAMPLES)))
def test_random_bytes_raise_only_parse_errors(junk: bytes, name: str) -> None:
    sample = (DATA / name).read_bytes()
    for module in (wmi_xml, wmi_html, checkmk, wmi_csv):
        for data in (junk, sample[: len(sample) // 2] + junk):
            try:
                run(module, data)
            except ParseError:
                pass
