"""Export-Csv snapshots of Win32_TSIssuedLicense / Win32_TSLicenseKeyPack
(caltrail.parsers.wmi.csv)."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Sequence
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caltrail.parsers.base import (
    IssuedLicenseRecord,
    Item,
    KeypackRecord,
    ParseIssue,
    ParseOptions,
)
from caltrail.parsers.errors import InvalidSignatureError, MissingColumnError, ParseError
from caltrail.parsers.wmi import csv as wmi_csv
from tests.parsers.items import notes, parse_bytes

DATA = Path(__file__).parent / "data" / "exports"
UTC = dt.UTC
HWID1 = "02000000c0b24e7d10a9ff372b54eb75f67a7087"
WMI1 = "00000002-7D4EB2C0-37FFA910-75EB542B-87707AF6"
WMI2 = "00000002-11111111-22222222-33333333-44444444"
HWID2 = "0200000011111111222222223333333344444444"


def run(data: bytes, **options: object) -> list[Item]:
    return parse_bytes(wmi_csv, data, **options)


def records(items: list[Item]) -> list[IssuedLicenseRecord | KeypackRecord]:
    return [i for i in items if isinstance(i, IssuedLicenseRecord | KeypackRecord)]


def issues(items: list[Item], quarantined: bool = True) -> list[ParseIssue]:
    return [i for i in items if isinstance(i, ParseIssue) and i.quarantined == quarantined]


def csv_text(
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    type_line: str | None = None,
    delimiter: str = ",",
    newline: str = "\r\n",
) -> str:
    lines = [type_line] if type_line else []
    lines.append(delimiter.join(f'"{c}"' for c in columns))
    lines += [delimiter.join(f'"{v}"' for v in row) for row in rows]
    return newline.join(lines) + newline


ISSUED_COLUMNS = [
    "sHardwareId", "LicenseStatus", "sIssuedToComputer", "IssueDate", "PSComputerName",
    "ExpirationDate", "LicenseId", "sIssuedToUser", "KeyPackId",
]  # fmt: skip


# -- the stored Windows PowerShell 5.1 Get-WmiObject sample -------------------------------------


def test_ps51_wmiobject_sample() -> None:
    path = DATA / "wmiobject_ps51_issued.csv"
    assert wmi_csv.sniff(path.read_bytes()[:65536], path.name)
    items = run(path.read_bytes(), file_name="LS01_Win32_TSIssuedLicense_2025-11-03.csv")
    recs = records(items)
    assert len(recs) == 2  # the snapshot's license count equals its data rows
    assert not issues(items)
    first, second = recs
    assert first == IssuedLicenseRecord(
        snapshot_time=dt.datetime(2025, 11, 3, tzinfo=UTC),
        snapshot_time_source="file name",
        license_server="LS01",
        license_id=5,
        keypack_id=3,
        license_status=2,
        license_status_name="Active",
        issue_date=dt.datetime(2023, 10, 5, 11, 34, 56, tzinfo=UTC),  # +060
        issue_date_raw="20231005123456.000000+060",  # the cell beside its reading
        expiration_date=dt.datetime(2023, 12, 3, 11, 34, 56, tzinfo=UTC),
        expiration_date_raw="20231203123456.000000+060",
        expiration_never=False,
        issued_to_computer="CL-01",
        issued_to_user="alice",
        hwid=HWID1,
        hwid_raw=WMI1,
        hwid_flag=None,
        line=3,
    )
    assert second.issue_date == dt.datetime(2023, 10, 6, 13, 0, tzinfo=UTC)  # -300
    assert second.expiration_date is None
    assert second.expiration_never
    assert second.license_status_name == "Temporary"
    assert second.hwid_flag == "freerdp_legacy"
    n = notes(items)
    assert n["snapshot_time_source"] == "file name"
    assert n["wmi_class"] == "Win32_TSIssuedLicense"
    assert "Get-WmiObject" in n["export_form"]
    assert "date_order" not in n  # DMTF only: no order to choose


# -- PowerShell 7, CIM, cultures, encodings ------------------------------------------------------


def ps7_text() -> str:
    rows = [
        [WMI1, "2", "CL-01", "20231005123456.000000+000", "LS01", "20231203123456.000000+000",
         "5", "alice", "3"],
        [WMI2, "4", "CL-02", "20231006000000.000000+000", "LS01", "20231204000000.000000+000",
         "6", "bob", "3"],
    ]  # fmt: skip
    return csv_text(ISSUED_COLUMNS, rows, newline="\n")


@pytest.mark.parametrize(
    "encoding", ["ascii", "utf-8", "utf-8-sig", "utf-16-le-bom"], ids=lambda e: e
)
def test_ps7_any_encoding(encoding: str) -> None:
    text = ps7_text()
    if encoding == "utf-16-le-bom":
        data = b"\xff\xfe" + text.replace("\n", "\r\n").encode("utf-16-le")
    else:
        data = text.encode(encoding)
    assert wmi_csv.sniff(data, "x.csv")
    items = run(data, snapshot_time=dt.datetime(2025, 1, 1, tzinfo=UTC))
    recs = records(items)
    assert [r.license_id for r in recs] == [5, 6]
    assert [r.hwid for r in recs] == [HWID1, HWID2]
    assert recs[1].license_status_name == "Revoked"
    assert {r.snapshot_time_source for r in recs} == {"option"}
    assert notes(items)["export_form"].startswith("CSV (no #TYPE line)")


CIM_COLUMNS = [
    "ExpirationDate", "IssueDate", "KeyPackId", "LicenseId", "LicenseStatus", "sHardwareId",
    "sIssuedToComputer", "sIssuedToUser", "PSComputerName", "CimClass", "CimInstanceProperties",
    "CimSystemProperties",
]  # fmt: skip
CIM_TYPE = "#TYPE Microsoft.Management.Infrastructure.CimInstance#root/cimv2/Win32_TSIssuedLicense"


def cim_row(expiry: str, issue: str, lid: str, status: str, hwid: str) -> list[str]:
    return [expiry, issue, "3", lid, status, hwid, "CL-01", "alice", "LS01",
            "ROOT/cimv2:Win32_TSIssuedLicense", "{ExpirationDate, IssueDate, KeyPackId...}",
            "Microsoft.Management.Infrastructure.CimSystemProperties"]  # fmt: skip


def test_cim_de_de_utf16_dmy_inferred() -> None:
    rows = [
        cim_row("03.12.2023 12:34:56", "05.10.2023 12:34:56", "5", "Active", WMI1),
        cim_row("19.01.2038 03:14:07", "25.10.2023 08:00:00", "6", "Temporary", WMI2),
    ]
    data = b"\xff\xfe" + csv_text(CIM_COLUMNS, rows, CIM_TYPE).encode("utf-16-le")
    items = run(data, tz=ZoneInfo("Europe/Berlin"))
    recs = records(items)
    assert [r.issue_date for r in recs] == [
        dt.datetime(2023, 10, 5, 10, 34, 56, tzinfo=UTC),
        dt.datetime(2023, 10, 25, 6, 0, tzinfo=UTC),
    ]
    assert recs[0].expiration_date == dt.datetime(2023, 12, 3, 11, 34, 56, tzinfo=UTC)
    assert recs[1].expiration_never
    assert [r.license_status for r in recs] == [2, 1]  # names mapped back to numbers
    n = notes(items)
    assert n["date_order"] == "dmy (inferred from values: a first field above 12)"
    assert n["zone_assumed"] == "culture dates"
    assert "Get-CimInstance" in n["export_form"]


def test_cim_de_de_semicolon_delimiter() -> None:
    rows = [cim_row("03.12.2023 12:34:56", "25.10.2023 12:34:56", "5", "2", WMI1)]
    data = csv_text(CIM_COLUMNS, rows, CIM_TYPE, delimiter=";").encode("utf-8-sig")
    assert wmi_csv.sniff(data, "x.csv")
    items = run(data)
    assert [r.license_id for r in records(items)] == [5]
    assert "delimiter ';'" in notes(items)["export_form"]


def test_cim_en_us_mdy_inferred() -> None:
    rows = [
        cim_row("12/3/2023 12:34:56 PM", "10/5/2023 12:34:56 PM", "5", "2", WMI1),
        cim_row("1/23/2024 8:00:00 AM", "10/25/2023 8:00:00 AM", "6", "2", WMI2),
    ]
    items = run(csv_text(CIM_COLUMNS, rows).encode(), tz=ZoneInfo("America/New_York"))
    recs = records(items)
    assert recs[0].issue_date == dt.datetime(2023, 10, 5, 16, 34, 56, tzinfo=UTC)
    assert recs[1].expiration_date == dt.datetime(2024, 1, 23, 13, 0, tzinfo=UTC)
    assert notes(items)["date_order"].startswith("mdy (inferred")


def test_en_gb_ambiguous_values_use_culture_else_guess() -> None:
    rows = [cim_row("05/12/2023 12:34", "05/10/2023 12:34", "5", "2", WMI1)]
    data = csv_text(CIM_COLUMNS, rows).encode()
    items = run(data, culture="en-GB")
    assert records(items)[0].issue_date == dt.datetime(2023, 10, 5, 12, 34, tzinfo=UTC)
    assert notes(items)["date_order"] == "dmy (from culture en-GB)"
    guessed = run(data)
    assert records(guessed)[0].issue_date == dt.datetime(2023, 5, 10, 12, 34, tzinfo=UTC)
    assert "guess" in notes(guessed)["date_order"]
    forced = run(data, date_order="dmy")
    assert notes(forced)["date_order"] == "dmy (from --date-order)"


# -- key packs ------------------------------------------------------------------------------------


def test_keypacks_unlimited_never_and_names() -> None:
    columns = ["KeyPackId", "Description", "KeyPackType", "ProductType", "ProductVersion",
               "ProductVersionID", "TotalLicenses", "IssuedLicenses", "AvailableLicenses",
               "ExpirationDate", "TypeAndModel", "PSComputerName"]  # fmt: skip
    rows = [
        ["2", "A02-5.00-EX", "6", "0", "Windows 2000 Server", "0", "4294967295", "0", "-1",
         "20380119031407.000000-000", "Built-in TS Per Device CAL", "LS01"],
        ["14", "C50-10.01-S", "Volume", "Per User", "Windows Server 2019", "6", "50", "20",
         "30", "20380101000000.000000+000", "RDS Per User CAL", "LS01"],
    ]  # fmt: skip
    type_line = "#TYPE System.Management.ManagementObject#root\\cimv2\\Win32_TSLicenseKeyPack"
    items = run(csv_text(columns, rows, type_line).encode("ascii"))
    builtin, volume = records(items)
    assert isinstance(builtin, KeypackRecord)
    assert isinstance(volume, KeypackRecord)
    assert (builtin.total_licenses, builtin.total_unlimited) == (None, True)
    assert (builtin.available_licenses, builtin.available_unlimited) == (None, True)
    assert builtin.expiration_never
    assert builtin.keypack_type_name == "built-in"
    assert builtin.product_version_name is None
    assert (volume.keypack_type, volume.product_type) == (2, 1)
    assert volume.product_type_name == "per user"
    assert volume.product_version_name == "2019 (unconfirmed)"
    assert (volume.total_licenses, volume.issued_licenses, volume.available_licenses) == (
        50,
        20,
        30,
    )
    assert notes(items)["wmi_class"] == "Win32_TSLicenseKeyPack"


# -- bad input ------------------------------------------------------------------------------------


def test_missing_required_column_is_named() -> None:
    columns = [c for c in ISSUED_COLUMNS if c != "ExpirationDate"]
    data = csv_text(columns, [["x"] * len(columns)]).encode()
    with pytest.raises(MissingColumnError, match="ExpirationDate"):
        run(data)
    keypack_type = "#TYPE System.Management.ManagementObject#root\\cimv2\\Win32_TSLicenseKeyPack"
    with pytest.raises(MissingColumnError, match="TotalLicenses"):
        run(csv_text(["KeyPackId", "IssuedLicenses"], [["1", "2"]], keypack_type).encode())


def test_not_an_export() -> None:
    assert not wmi_csv.sniff(b"a,b,c\n1,2,3\n", "x.csv")
    assert not wmi_csv.sniff(b"<html><table><tr><th>LicenseId</th></tr></table>", "x")
    with pytest.raises(InvalidSignatureError):
        run(b"")
    with pytest.raises(MissingColumnError):
        run(b"a,b,c\n1,2,3\n")


def test_bad_rows_are_quarantined_and_the_rest_read() -> None:
    good = ps7_text().splitlines()
    lines = [
        good[0],
        good[1],
        '"x","2","CL-09"',  # wrong number of fields
        good[2].replace("20231006000000.000000+000", "yesterday"),  # bad date
        good[2].replace('"6"', '"six"', 1),  # bad integer
        good[2].replace("20231006000000.000000+000", "****1006000000.000000+000"),
        "",
        good[2],
    ]
    items = run("\n".join(lines).encode())
    bad = issues(items)
    assert [i.line for i in bad] == [3, 4, 5]
    assert "expected 9 fields, found 3" in bad[0].message
    assert "IssueDate" in bad[1].message
    assert bad[1].excerpt.startswith('"00000002-11111111')
    assert [r.line for r in records(items)] == [2, 6, 8]
    unknown = records(items)[1]
    assert unknown.issue_date is None  # DMTF with unknown date digits: None + warning
    assert [i.kind for i in issues(items, quarantined=False)] == ["unknown_date"]


def test_quoted_value_spanning_lines() -> None:
    text = ps7_text().replace('"alice"', '"alice\nsecond line"')
    items = run(text.encode())
    recs = records(items)
    assert [r.issued_to_user for r in recs] == ["alice\nsecond line", "bob"]
    assert [r.line for r in recs] == [2, 4]


def test_unbalanced_quote_loses_only_its_line() -> None:
    good = ps7_text().splitlines()
    text = "\n".join([good[0], good[1].replace('"alice"', '"alice'), good[2], good[2]])
    items = run(text.encode())
    assert len(records(items)) + len(issues(items)) == 3
    assert [r.line for r in records(items)] == [3, 4]
    assert [i.line for i in issues(items)] == [2]


def test_snapshot_from_mtime_when_nothing_else() -> None:
    mtime = dt.datetime(2025, 11, 4, 9, 30, tzinfo=UTC)
    items = run(ps7_text().encode(), file_mtime=mtime)
    assert {(r.snapshot_time, r.snapshot_time_source) for r in records(items)} == {
        (mtime, "file mtime")
    }
    unknown = run(ps7_text().encode())
    assert {r.snapshot_time_source for r in records(unknown)} == {"unknown"}
    assert notes(unknown)["snapshot_time"] == "unknown"


# -- properties -----------------------------------------------------------------------------------

_cell = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            st.just("good"),
            st.lists(_cell, min_size=0, max_size=12).map(lambda c: ",".join(c)),
        ),
        max_size=12,
    )
)
def test_records_plus_quarantined_equal_data_rows(kinds: list[str]) -> None:
    good = ps7_text().splitlines()[1]
    lines = [ps7_text().splitlines()[0]]
    data_rows = 0
    for kind in kinds:
        line = good if kind == "good" else kind.replace("\r", "").replace("\n", "")
        line = line.replace("\x0b", "").replace("\x0c", "").replace("\x1c", "")
        line = line.replace("\x1d", "").replace("\x1e", "").replace("\x85", "")
        line = line.replace("\u2028", "").replace("\u2029", "")
        # An unbalanced quote legitimately joins the next line into the same row (a quoted
        # value spanning lines, tested on its own): one line is one row here.
        line = line.replace('"', "")
        if not line.strip():
            continue
        lines.append(line)
        data_rows += 1
    items = run("\n".join(lines).encode())
    assert len(records(items)) + len(issues(items)) == data_rows


@settings(max_examples=80, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_raise_only_parse_errors(junk: bytes) -> None:
    for data in (junk, ps7_text().encode() + junk):
        try:
            run(data)
        except ParseError:
            pass


class _OneWay(io.RawIOBase):
    """A readable stream that cannot seek (a pipe)."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        chunk = self._data.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def test_non_seekable_stream_reads_in_one_pass() -> None:
    rows = [cim_row("12/3/2023 12:34:56 PM", "10/25/2023 12:34:56 PM", "5", "2", WMI1)]
    stream = _OneWay(csv_text(CIM_COLUMNS, rows).encode())
    items = list(wmi_csv.parse(stream, ParseOptions(date_order="mdy")))  # type: ignore[arg-type]
    assert [r.license_id for r in records(items)] == [5]
    n = notes(items)
    assert n["date_order_pass"].startswith("stream not seekable")
    assert n["date_order"] == "mdy (from --date-order)"


def test_memory_does_not_grow_with_file_size() -> None:
    import tracemalloc

    header, row = ps7_text().splitlines()[:2]

    def peak(rows: int) -> int:
        data = (header + "\n" + "\n".join([row] * rows) + "\n").encode()
        tracemalloc.start()
        try:
            count = sum(1 for _ in wmi_csv.parse(io.BytesIO(data), ParseOptions()))
            return tracemalloc.get_traced_memory()[1] if count else 0
        finally:
            tracemalloc.stop()

    small, large = peak(200), peak(2000)
    assert large < small * 2 + 200_000


# -- the seed's own exports ----------------------------------------------------------------------


def test_seed_script_output_without_issue_date() -> None:
    """Microsoft's "Script for RDS Per Devices CALs" (Select-Object | Export-Csv): renamed
    columns, no IssueDate, a `#TYPE Selected...` line. Read as Win32_TSIssuedLicense rows
    whose issue date is unknown (a note says how the diagnosis bounds it)."""
    items = run((DATA / "seed_script_per_device_cals.csv").read_bytes(), tz=ZoneInfo("Europe/Berlin"))
    got = records(items)
    assert [(r.keypack_id, r.license_id, r.issued_to_computer) for r in got] == [
        (4, 1021, "BER-PC0042"),
        (4, 1022, "BER-PC0042"),
        (3, 1023, "BER-NB0017"),
    ]
    first = got[0]
    assert isinstance(first, IssuedLicenseRecord)
    assert first.hwid == HWID1
    assert first.issue_date is None
    assert first.issue_date_raw is None
    assert first.expiration_date == dt.datetime(2025, 6, 12, 8, 15, tzinfo=UTC)
    assert first.expiration_date_raw == "6/12/2025 10:15:00 AM"
    assert issues(items) == []
    info = notes(items)
    assert info["wmi_class"] == "Win32_TSIssuedLicense"
    assert info["issue_date"].startswith("not exported")


def test_per_device_report_entries() -> None:
    """Win32_TSLicenseReportPerDeviceEntry rows: no LicenseId, KeyPackId or IssueDate; the
    CAL type and product version are kept (ProductVersionID names a missing version)."""
    items = run((DATA / "report_per_device_entries.csv").read_bytes())
    got = [r for r in records(items) if isinstance(r, IssuedLicenseRecord)]
    assert [(r.license_id, r.keypack_id, r.issue_date) for r in got] == [(None, None, None)] * 3
    assert [r.cal_type for r in got] == [
        "RDS Per Device CAL",
        "RDS Per Device CAL",
        "TS Per Device CAL",
    ]
    assert [r.product_version for r in got] == [
        "Windows Server 2019",
        "Windows Server 2022",
        "2008",
    ]
    assert got[1].hwid == HWID2
    assert got[0].expiration_date == dt.datetime(2025, 6, 12, 8, 15, tzinfo=UTC)
    assert {r.license_server for r in got} == {"LS01"}
    assert notes(items)["wmi_class"] == "Win32_TSLicenseReportPerDeviceEntry"
    assert issues(items) == []
    # without its #TYPE line the columns tell the class
    body = b"\r\n".join((DATA / "report_per_device_entries.csv").read_bytes().split(b"\r\n")[1:])
    assert wmi_csv.sniff(body[:4096], "report.csv")
    assert len(records(run(body))) == 3


def test_renamed_columns_still_need_the_hwid() -> None:
    data = csv_text(["Keypack ID", "License ID", "client name", "Expiration date"], [["1"] * 4])
    with pytest.raises(MissingColumnError, match="sHardwareId"):
        run(data.encode())
