"""Bug (caltrail/parsers/evtx/reader.py, owned by the EVTX engineer), found by the long
hypothesis pass (CALTRAIL_FUZZ_EXAMPLES=1500): a record header whose 64-bit record id or FILETIME has the
top bit set (one flipped byte in a damaged log) becomes an EventRecord whose `record_id` /
`filetime` do not fit the lake's int64 columns. The pipeline's Arrow conversion then fails
and the *whole file* is recorded as "internal error in evtx/...": every good record of it is
lost, against "a bad record never stops its file".

Fix needed in caltrail/parsers/evtx/reader.py: in `_record_at` (RECORD_HEADER "<4sIQQ"),
treat a record id or FILETIME >= 2**63 as an implausible header (return None, so the record
is framed as damaged and quarantined as a bad record); or, where the EventRecord is built (record_from_xml, the
`record_id=rec.record_id` / `filetime=` arguments), emit a quarantining ParseIssue
("record id/FILETIME beyond int64") instead of the record.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from caltrail.pipeline.ingest import FileTask, parse_file
from tests.reliability import fuzzlib as F

FIRST_RECORD = 0x1200  # chunk 0 at 0x1000, its first record at chunk offset 0x200
FIELDS = {"record_id_high": FIRST_RECORD + 12, "filetime_high": FIRST_RECORD + 20}


def damaged(field: str) -> bytes:
    data = bytearray((F.simulated_bundle() / "LS01" / "LS01_System.evtx").read_bytes())
    at = FIELDS[field]
    data[at : at + 4] = b"\xff\xff\xff\xff"
    return bytes(data)


@pytest.mark.parametrize("field", sorted(FIELDS))
@pytest.mark.parametrize("backend", ["rust", "python"])
def test_u64_header_field_fits_the_lake(backend: str, field: str) -> None:
    F.run_parser(F.MODULES["evtx"], damaged(field), F.options_for("evtx", backend), memory=None)


def test_one_bad_record_id_does_not_cost_the_file(tmp_path: Path) -> None:
    data = damaged("record_id_high")
    path = tmp_path / "System.evtx"
    path.write_bytes(data)
    stage = tmp_path / "stage"
    stage.mkdir()
    task = FileTask(
        path, path.name, hashlib.sha256(data).hexdigest(), len(data), None, 0, "run", stage,
        F.options_for("evtx", "rust"), (),
    )  # fmt: skip
    result = parse_file(task)
    assert result.status in ("ok", "quarantined"), result.error
    assert result.records_ok > 0
