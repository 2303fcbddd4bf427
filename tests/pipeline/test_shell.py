"""The DuckDB shell over a lake: the duckdb-cli package's shell (its own DuckDB release, not
the Python package's) opens a lake the Python side wrote, through `caltrail shell` and
through `duckdb -init LAKE/caltrail.sql`, and every view and macro answers there; the init
script holds no path, so a copied lake opens itself; a read-only lake opens too."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from caltrail.fixtures.make_samples import SAMPLES as SAMPLES_DIR
from caltrail.pipeline.ingest import IngestOptions, ingest
from caltrail.pipeline.session import connect, refresh
from caltrail.pipeline.shell import (
    COMPUTED_LINE,
    KEPT_LINE,
    NONE,
    current_script,
    duckdb_cli,
    header,
    written_for,
)

CLI = [sys.executable, "-c", "from caltrail.pipeline.cli import main; main()"]


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lake = tmp_path_factory.mktemp("shell") / "lake"
    ingest([SAMPLES_DIR], IngestOptions(lake=lake, tz=ZoneInfo("Europe/Berlin")))
    refresh(lake)  # the kept views the shell reads (as `caltrail ingest --derive` makes them)
    return lake


def shell_binary() -> str:
    binary = duckdb_cli()
    if binary is None:
        pytest.fail("the DuckDB shell (duckdb-cli) is not installed beside caltrail")
    return binary


def run_shell(script: str, cwd: Path, init: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [shell_binary(), "-init", init, "-bail", "-csv"],
        input=script,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


def every_view_and_macro(lake: Path) -> str:
    """One query per view (a few rows of it) and per macro, as the Python side defines them:
    table macros with a table or device of the lake, scalar macros with NULLs; a scalar
    macro that takes a struct or a list cannot be called with NULLs, and is checked through
    the views that call it."""
    import duckdb

    from caltrail import queries

    con = connect(lake)
    query_text = " ".join(s.sql for s in queries.statements() if s.object_kind != "macro")
    views = [
        v for (v,) in con.execute(
            "select view_name from duckdb_views() where not internal order by view_name"
        ).fetchall()
    ]
    macros = con.execute(
        "select function_name, function_type, len(parameters) from duckdb_functions() "
        "where function_type in ('macro', 'table_macro') and not internal "
        "group by all order by function_name"
    ).fetchall()
    hwid, name = con.execute("select hwid, client_name from licenses limit 1").fetchone() or ("", "")
    assert len(views) > 40
    assert len(macros) > 10
    # a table macro's argument names a table or a device; scalar macros take NULLs
    table_args = {
        "committed_rows": "'events'",
        "reference_table": "'license_status.csv'",
        "snapshot_rows": "'issued_license_rows'",
        "records_once": "'event_copy_keys', true",
        "licensing_once": "'event_copy_keys', true",
        "hwid_timeline": f"'{hwid}'",
        "name_timeline": f"'{name}'",
        "excess_summary": "'hwid_excess_flags'",
        "search_hits": ", ".join(["null"] * 8),
        "zone_offsets": "null",
        "zone_fit": "null",
        "zone_offset_pairs_of": "null",
    }
    lines = [f"select '{v}', count(*) from (select * from {v} limit 3);" for v in views]
    for name, kind, params in macros:
        if kind == "table_macro":
            query = f"select '{name}', count(*) from (select * from {name}({table_args[name]}) limit 3);"
        else:
            query = f"select '{name}', typeof({name}({', '.join(['null'] * params)}));"
            try:
                con.execute(query)
            except duckdb.BinderException:
                assert f"{name}(" in query_text, f"{name}: called by no view, and not with NULLs"
                continue
        lines.append(query)
    con.close()
    return "\n".join(lines) + "\n"


CATALOG = (
    "select 'view:' || view_name from duckdb_views() where not internal union all "
    "select distinct 'macro:' || function_name from duckdb_functions() "
    "where function_type in ('macro', 'table_macro') and not internal"
)


def test_every_view_and_macro_answers_in_the_bundled_shell(lake: Path) -> None:
    script = every_view_and_macro(lake)
    out = run_shell(script, lake.parent, f"{lake.name}/caltrail.sql")
    answered = {line.split(",")[0] for line in out.splitlines() if "," in line}
    asked = {line.split("'")[1] for line in script.splitlines()}
    assert asked <= answered
    # and the shell defines what the Python side does, no more, no less
    con = connect(lake)
    python_side = {name for (name,) in con.execute(CATALOG).fetchall()}
    con.close()
    shell_side = set(run_shell(CATALOG + ";", lake.parent, f"{lake.name}/caltrail.sql").split())
    assert python_side <= shell_side


def run_ok(command: list[str], timeout: float = 120) -> str:
    """Run `command` from `/` (no relative path may resolve by luck); its output, once it
    succeeded."""
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, cwd="/", check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_caltrail_shell_runs_a_command(lake: Path) -> None:
    out = run_ok([*CLI, "shell", "--lake", str(lake), "-c", "select count(*) as n from findings"])
    con = connect(lake)
    expected = con.execute("select count(*) from findings").fetchone()
    con.close()
    assert expected is not None
    assert f"│ {expected[0]} " in out.replace("│\n", "│ \n") or str(expected[0]) in out


# `caltrail shell` run up to the moment it hands over to the DuckDB shell: os.execve
# replaced by a report of its arguments and of the modules loaded by then
UP_TO_THE_SHELL = """
import json, os, sys
def execve(path, args, env):
    loaded = [m for m in sys.modules if m.split(".")[0] in ("duckdb", "pyarrow", "caltrail")]
    print(json.dumps({"args": args, "lake": env.get("CALTRAIL_SHELL_LAKE"), "loaded": loaded}))
    sys.stdout.flush()
    os._exit(0)
os.execve = execve
from caltrail.pipeline.cli import main
main()
"""


def up_to_the_shell(lake: Path) -> dict[str, Any]:
    out = run_ok([sys.executable, "-c", UP_TO_THE_SHELL, "shell", "--lake", str(lake)], 300)
    reached: dict[str, Any] = json.loads(out.splitlines()[-1])
    return reached


def test_caltrail_shell_opens_a_current_lake_without_duckdb_or_pyarrow(lake: Path) -> None:
    """The lake as an ingest with --derive leaves it: its script current, nothing to build.
    `caltrail shell` then hands over at once: none of DuckDB, pyarrow, the ingest or the
    sessions is loaded (each costs a tenth of a second or more before the shell opens)."""
    assert current_script(lake) == lake / "caltrail.sql"
    reached = up_to_the_shell(lake)
    assert reached["args"][1:] == ["-init", str(lake / "caltrail.sql")]
    assert reached["lake"] == str(lake.resolve())
    heavy = {"duckdb", "pyarrow", "caltrail.pipeline.ingest", "caltrail.pipeline.session"}
    assert heavy.isdisjoint(reached["loaded"]), sorted(heavy & set(reached["loaded"]))
    assert "caltrail.pipeline.cli_shell" in reached["loaded"]  # (the report is of this run)


def test_caltrail_shell_brings_a_stale_lake_up_to_date(lake: Path, tmp_path: Path) -> None:
    """A script that does not say its lake is current (one of an older caltrail, without
    the header; or a kept file gone) is not trusted: the layers are built again and the
    script written again, after which the next `caltrail shell` takes the fast way."""
    copy = tmp_path / "lake"
    shutil.copytree(lake, copy)
    script = copy / "caltrail.sql"
    lines = script.read_text(encoding="utf-8").splitlines(keepends=True)
    script.write_text(
        "".join(line for line in lines if not line.startswith((KEPT_LINE, COMPUTED_LINE))),
        encoding="utf-8",
    )
    assert written_for(script) is not None  # the state still matches: the header does not
    assert current_script(copy) is None
    reached = up_to_the_shell(copy)
    assert reached["args"][1:] == ["-init", str(script)]
    assert "caltrail.pipeline.session" in reached["loaded"]  # the slow way, this once
    assert current_script(copy) == script

    kept = sorted((copy / "_derived").glob("licenses-*.parquet"))
    assert len(kept) == 1
    kept[0].unlink()
    assert current_script(copy) is None  # the script would read a file that is not there
    up_to_the_shell(copy)
    assert current_script(copy) == script
    assert kept[0].is_file()


def test_an_ingest_leaves_the_script_saying_what_the_shell_computes(tmp_path: Path) -> None:
    """Without --derive an ingest writes a script that computes the layers on opening: it is
    correct, but not current for `caltrail shell`, which builds the layers first."""
    fresh = tmp_path / "lake"
    ingest([SAMPLES_DIR], IngestOptions(lake=fresh, tz=ZoneInfo("Europe/Berlin")))
    found = header(fresh / "caltrail.sql")
    assert found[KEPT_LINE] == NONE
    assert "licenses" in found[COMPUTED_LINE].split()
    assert current_script(fresh) is None
    refresh(fresh)
    found = header(fresh / "caltrail.sql")
    assert found[COMPUTED_LINE] == NONE
    assert "licenses" in found[KEPT_LINE].split()
    assert current_script(fresh) == fresh / "caltrail.sql"


def test_the_init_script_holds_no_path(lake: Path) -> None:
    text = (lake / "caltrail.sql").read_text(encoding="utf-8")
    assert str(lake) not in text
    assert str(lake.parent) not in text


def test_a_copied_lake_opens_itself(lake: Path, tmp_path: Path) -> None:
    original = tmp_path / "original"
    shutil.copytree(lake, original)
    ask = "select getvariable('lake') as lake, (select count(*) from events) as n;\n"
    before = run_shell(ask, tmp_path, "original/caltrail.sql").splitlines()[-1]
    elsewhere = tmp_path / "elsewhere"
    copy = elsewhere / "copy"
    shutil.copytree(original, copy)
    shutil.rmtree(original)  # whatever the copy reads, it cannot be the original
    # from the folder above the copy, and from the copy itself
    above = run_shell(ask, elsewhere, "copy/caltrail.sql").splitlines()[-1]
    inside = run_shell(ask, copy, "caltrail.sql").splitlines()[-1]
    count = before.split(",")[1]
    assert int(count) > 0
    assert (above, inside) == (f"./copy,{count}", f".,{count}")


def test_two_copies_side_by_side_are_not_guessed(lake: Path, tmp_path: Path) -> None:
    shutil.copytree(lake, tmp_path / "a")
    shutil.copytree(lake, tmp_path / "b")
    done = subprocess.run(
        [shell_binary(), "-init", "a/caltrail.sql", "-c", "select 1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "several copies of this lake" in done.stderr + done.stdout


def read_only(command: list[str], folder: Path) -> list[str]:
    """`command` run where `folder` cannot be written: as root (whom permissions do not
    stop), inside a mount namespace where the folder is bound read-only onto itself."""
    if os.geteuid() != 0:
        return command
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        pytest.fail("running as root needs unshare and mount to make a read-only folder")
    quoted = " ".join(shlex.quote(c) for c in command)
    bind = f"mount --bind -o ro {shlex.quote(str(folder))} {shlex.quote(str(folder))}"
    return ["unshare", "--mount", "sh", "-c", f"{bind} && exec {quoted}"]


def test_a_read_only_lake_opens_in_caltrail_shell(lake: Path, tmp_path: Path) -> None:
    copy = tmp_path / "ro" / "lake"
    shutil.copytree(lake, copy)
    (copy / "caltrail.sql").unlink()  # nothing to reuse: the script must be written elsewhere
    shutil.rmtree(copy / "_derived")  # and nothing kept: the views compute live
    modes = {p: p.stat().st_mode for p in [copy, *copy.rglob("*")] if p.is_dir()}
    if os.geteuid() != 0:
        for folder in modes:
            folder.chmod(0o555)
    try:
        done = subprocess.run(
            read_only([*CLI, "shell", "--lake", str(copy), "-c", "select count(*) from licenses"], copy),
            capture_output=True,
            text=True,
            timeout=300,
            cwd="/",
            check=False,
        )
    finally:
        for folder, mode in modes.items():
            folder.chmod(mode)
    assert done.returncode == 0, done.stderr
    assert "count_star()" in done.stdout
    assert not (copy / "caltrail.sql").exists()
    assert not (copy / "_derived").exists()
