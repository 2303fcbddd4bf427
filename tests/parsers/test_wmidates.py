"""DMTF and culture dates, order inference, snapshot time (parsers.wmidates)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from caltrail.parsers.base import FileNote, ParseOptions
from caltrail.parsers.wmi.dates import (
    DateResult,
    OrderVotes,
    parse_culture,
    parse_dmtf,
    parse_wmi_date,
    resolve_date_order,
    resolve_snapshot,
    snapshot_from_file_name,
)

UTC = dt.UTC
BERLIN = ZoneInfo("Europe/Berlin")


def at(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20231005123456.000000-000", at(2023, 10, 5, 12, 34, 56)),
        ("20231005123456.000000+060", at(2023, 10, 5, 11, 34, 56)),
        ("20231005123456.000000-300", at(2023, 10, 5, 17, 34, 56)),
        ("20231005123456.250000+000", at(2023, 10, 5, 12, 34, 56, 250000)),
        ("20231005******.******+000", at(2023, 10, 5)),
        ("2023100512****.000000+120", at(2023, 10, 5, 10)),
    ],
)
def test_dmtf(text: str, expected: dt.datetime) -> None:
    assert parse_dmtf(text) == DateResult(expected)


def test_dmtf_never_and_unknown_date() -> None:
    assert parse_dmtf("20380119031407.000000-000") == DateResult(None, never=True)
    unknown = parse_dmtf("****1005123456.000000+000")
    assert unknown.value is None
    assert not unknown.fatal
    assert unknown.problem
    assert parse_dmtf("20231305123456.000000+000").fatal  # month 13


@pytest.mark.parametrize(
    ("text", "order", "zone", "expected"),
    [
        ("10/5/2023 12:34:56 PM", "mdy", UTC, at(2023, 10, 5, 12, 34, 56)),
        ("10/5/2023 12:34:56 AM", "mdy", UTC, at(2023, 10, 5, 0, 34, 56)),
        ("05.10.2023 12:34:56", "dmy", BERLIN, at(2023, 10, 5, 10, 34, 56)),
        ("2023-10-05 12:34:56", "dmy", UTC, at(2023, 10, 5, 12, 34, 56)),
        ("05/10/2023 12:34", "dmy", ZoneInfo("Europe/London"), at(2023, 10, 5, 11, 34)),
        ("05/01/2023 12:34", "dmy", ZoneInfo("Europe/London"), at(2023, 1, 5, 12, 34)),
        ("2023-10-05T12:34:56+02:00", "mdy", UTC, at(2023, 10, 5, 10, 34, 56)),
        ("1/19/2038 3:14:07 AM", "mdy", UTC, None),
    ],
)
def test_culture(text: str, order: str, zone: dt.tzinfo, expected: dt.datetime | None) -> None:
    result = parse_culture(text, order, zone)
    assert result.value == expected
    assert result.never == (expected is None)


def test_culture_bad() -> None:
    assert parse_culture("31/12/2023", "mdy", UTC).fatal
    assert parse_culture("13:00:00 PM 1/1/2023", "mdy", UTC).fatal
    assert parse_wmi_date("", "mdy", UTC) == DateResult(None)
    assert parse_wmi_date("garbage", "mdy", UTC).fatal


def votes(*texts: str) -> OrderVotes:
    v = OrderVotes()
    v.add_all(texts)
    return v


def test_order_inferred_from_values() -> None:
    order, note = resolve_date_order(votes("05/10/2023", "25/10/2023"), ParseOptions())
    assert order == "dmy"
    assert note == FileNote("date_order", "dmy (inferred from values: a first field above 12)")
    order, note = resolve_date_order(votes("10/25/2023 1:00:00 PM"), ParseOptions())
    assert order == "mdy"
    assert note is not None
    assert note.value.startswith("mdy (inferred from values")


def test_values_win_over_a_contradicting_option() -> None:
    order, note = resolve_date_order(votes("25.10.2023"), ParseOptions(date_order="mdy"))
    assert order == "dmy"
    assert note is not None
    assert "--date-order mdy overridden" in note.value


def test_order_from_option_culture_or_guess() -> None:
    unsettled = votes("05/10/2023", "01/02/2023")
    assert resolve_date_order(unsettled, ParseOptions(date_order="dmy")) == (
        "dmy",
        FileNote("date_order", "dmy (from --date-order)"),
    )
    assert resolve_date_order(unsettled, ParseOptions(culture="de-DE"))[0] == "dmy"
    assert resolve_date_order(unsettled, ParseOptions(culture="en-GB"))[0] == "dmy"
    assert resolve_date_order(unsettled, ParseOptions(culture="en-US"))[0] == "mdy"
    order, note = resolve_date_order(unsettled, ParseOptions())
    assert order == "mdy"
    assert note is not None
    assert "guess" in note.value
    conflicting = votes("25/10/2023", "10/25/2023")
    order, note = resolve_date_order(conflicting, ParseOptions(culture="fr-FR"))
    assert order == "dmy"
    assert note is not None
    assert "conflict" in note.value


def test_no_culture_dates_no_note() -> None:
    assert resolve_date_order(votes("20231005123456.000000+000"), ParseOptions())[1] is None


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("LS01_Win32_TSIssuedLicense_2025-11-03.csv", at(2025, 11, 3)),
        ("issued-20251103-1400.csv", at(2025, 11, 3, 14)),
        ("dump_2025_11_03.xml", at(2025, 11, 3)),
        ("C:\\MS_DATA\\2025-11-03\\LS01_rdls_IssuedLicenses.html", at(2025, 11, 3)),
        ("LS01_Win32_TSIssuedLicense.csv", None),
        ("build12345678.csv", None),
    ],
)
def test_snapshot_from_file_name(name: str, expected: dt.datetime | None) -> None:
    assert snapshot_from_file_name(name, UTC) == expected


def test_snapshot_precedence() -> None:
    mtime = at(2025, 1, 1)
    forced = at(2025, 2, 2)
    named = "x_2025-11-03.csv"
    assert resolve_snapshot(ParseOptions(snapshot_time=forced), at(2024, 1, 1), UTC) == (
        forced,
        "option",
    )
    assert resolve_snapshot(ParseOptions(file_name=named), at(2024, 1, 1), UTC)[1] == "data"
    assert resolve_snapshot(ParseOptions(file_name=named, file_mtime=mtime), None, UTC) == (
        at(2025, 11, 3),
        "file name",
    )
    assert resolve_snapshot(ParseOptions(file_mtime=mtime), None, UTC) == (mtime, "file mtime")
    assert resolve_snapshot(ParseOptions(), None, UTC) == (None, "unknown")
    local = resolve_snapshot(ParseOptions(file_name=named), None, BERLIN)[0]
    assert local == at(2025, 11, 2, 23)


@given(st.text(max_size=40))
def test_date_parsers_never_raise(text: str) -> None:
    for order in ("dmy", "mdy", "ymd"):
        parse_wmi_date(text, order, BERLIN)
    v = OrderVotes()
    v.add(text)
    snapshot_from_file_name(text, UTC)


@pytest.mark.parametrize(
    "text",
    [
        "10/5/2023 12:34:56 PM +99:99",  # a zone beyond 24 hours
        "12/31/9999 23:59:59 -01:00",  # moved past year 9999
    ],
)
def test_an_impossible_zone_is_a_bad_value_not_an_exception(text: str) -> None:
    result = parse_culture(text, "mdy", UTC)
    assert result.value is None
    assert result.fatal
    assert text in (result.problem or "")


@pytest.mark.parametrize("text", ["00010101000000.000000+060", "99991231235959.000000-060"])
def test_a_dmtf_date_moved_out_of_range_is_a_bad_value(text: str) -> None:
    result = parse_dmtf(text)
    assert result.value is None
    assert result.fatal
