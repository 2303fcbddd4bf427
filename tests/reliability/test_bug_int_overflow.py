"""Regression (fuzz campaign, first finding): numbers too large for the lake's integer columns.

A WMI export with KeyPackId 18446744073709551616, a Checkmk/ConvertTo-Xml KeyPackType of 26
digits, or a tracerpt XML ProcessorID / EventID of 4294967295 became a record whose value
did not fit its int32/int64 column. The Arrow writer then failed and the pipeline recorded
the *whole file* as an internal error. Now: an out-of-range id quarantines its row
(wmirows), an out-of-range code is an unknown code (wmicodes), an out-of-range trace number
stays as text in `fields` (tracetime.parse_int(bits=32)).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from caltrail.pipeline.ingest import FileTask, parse_file
from tests.reliability import fuzzlib as F

HUGE = ("18446744073709551616", "99999999999999999999999999", "4294967295", "2147483648")


@pytest.mark.parametrize("huge", HUGE)
@pytest.mark.parametrize("name", F.TEXT_MODULES)
def test_every_number_replaced_by_a_huge_one(name: str, huge: str) -> None:
    for seed in F.seeds()[name]:
        encoding = "utf-16-le" if seed[:2] == b"\xff\xfe" else "utf-8"
        text = re.sub(r"\d+", huge, seed.decode(encoding, "replace"))
        F.run_parser(F.MODULES[name], text.encode(encoding, "surrogatepass"))


def test_tracerpt_xml_huge_processor_id_kept_as_text() -> None:
    seed = next(s for s in F.seeds()["tracerpt_xml"] if s[:2] != b"\xff\xfe")
    text = re.sub(r'ProcessorID="\d+"', 'ProcessorID="4294967295"', seed.decode())
    items = list(
        F.MODULES["tracerpt_xml"].parse(
            __import__("io").BytesIO(text.encode()), F.options_for("tracerpt_xml")
        )
    )
    records = [i for i in items if getattr(i, "table", None) == "trace_events"]
    assert records
    assert all(
        r.cpu is None and r.fields.get("System.Execution.ProcessorID") == "4294967295"
        for r in records
    )


def test_pipeline_keeps_the_file(tmp_path: Path) -> None:
    """Through the pipeline: the file is read (ok/quarantined), never an internal error."""
    seed = next(s for s in F.seeds()["wmi_csv"] if b"KeyPackId" in s)
    data = re.sub(rb"(?m)^(\"?)\d+", rb"\g<1>18446744073709551616", seed, count=3)
    path = tmp_path / "LS01_Win32_TSIssuedLicense_20250322-2350.csv"
    path.write_bytes(data)
    stage = tmp_path / "stage"
    stage.mkdir()
    task = FileTask(
        path,
        path.name,
        hashlib.sha256(data).hexdigest(),
        len(data),
        None,
        0,
        "run",
        stage,
        F.options_for("wmi_csv"),
        (),
    )
    result = parse_file(task)
    assert result.status in ("ok", "quarantined"), result.error
    assert result.records_ok > 0
