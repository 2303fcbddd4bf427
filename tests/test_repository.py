"""The repository names nothing outside itself, and its docs keep up with the code.

Every text file git tracks (or, without git, every such file of the checkout) is read, and a
line fails the test when it names:

- an absolute path of some machine (a home, root or work folder, a pytest temp folder);
- a folder outside the repository (the reference notes and public corpus that sit beside a
  checkout, by their relative paths, or the old names of the reference notes);
- the old design notes, which are not in the repository (docs/ARCHITECTURE.md holds their
  rules now);
- an issue or task number of some tracker ("issue" or "task" followed by a number; public
  upstream references such as "python-evtx issue #85" keep their "#").

One exception, narrow on purpose: a Python file under tests/ or tools/ may build the path of
the public corpus beside the checkout from a string literal holding just the name of the
folder beside the checkout, in code (not in a comment or a docstring), because that is how
the corpus tests and the benchmark find it.

Also: README.md and docs/ARCHITECTURE.md exist, ARCHITECTURE.md names every module of
caltrail/pipeline, and every docs page cited by a tracked file exists with the section the
citation names.
"""

from __future__ import annotations

import ast
import io
import re
import subprocess
import tokenize
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The name of the folder beside the checkout that holds the public corpus (built with + so
# that this file does not match its own rules).
SHARED = "share" + "d"

TEXT_SUFFIXES = {".py", ".sql", ".md", ".csv", ".toml", ".txt", ".cfg", ".json", ".in", ".sh"}
TEXT_NAMES = {"Makefile"}
TEXT_FOLDERS = (".ci/",)  # extension-less scripts
SKIPPED_DIRS = {
    ".git",
    ".venv",
    ".venv-latest",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".mypy_cache",
    ".hypothesis",
    "build",
    "caltrail-lake",
}

# The patterns are written so that this file does not match them itself (a character class
# around one letter, a split literal); each says what it catches.
RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "an absolute machine path",
        re.compile(r"(?<![\w.~-])/(?:wor[k]|roo[t]|hom[e])/|/tmp/pyte[s]t"),
    ),
    (
        "a folder outside the repository",
        re.compile(
            r"\.\./share[d]\b|\bshare[d]/(?:reference|corpus)\b"
            r"|(?<![\w/])reference/[\w.-]+\.(?:md|csv)\b"
            r"|(?<![\w/])(?:licensin[g]|format[s])\.md\b|licensing-event-catalo[g]\.csv"
        ),
    ),
    (
        "a citation of the old design notes (docs/ARCHITECTURE.md holds their rules)",
        re.compile(r"(?i:\bdesig[n]\.md\b)|\bDESIG[N]:"),
    ),
    (
        "an issue or task number (say what it is about instead)",
        re.compile(r"(?i)\b(?:issu[e]|tas[k])\s+\d"),
    ),
    (
        "a path part of the folder beside the checkout",
        re.compile(r"[\"']share[d][\"']"),
    ),
)
PATH_PART_RULE = RULES[-1][0]
PATH_PART_ALLOWED_IN = ("tests/", "tools/")


def tracked_files() -> list[str]:
    """Repository-relative paths of the text files to check."""
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "ls-files", "-z"],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout.decode("utf-8")
        names = [n for n in out.split("\0") if n]
    except (OSError, subprocess.SubprocessError):
        names = [str(p.relative_to(ROOT)) for p in _walk(ROOT)]
    return sorted(n for n in names if _is_text_kind(n) and (ROOT / n).is_file())


def _walk(folder: Path) -> Iterator[Path]:
    for path in folder.iterdir():
        if path.is_dir():
            if path.name not in SKIPPED_DIRS and not path.name.endswith(".egg-info"):
                yield from _walk(path)
        else:
            yield path


def _is_text_kind(name: str) -> bool:
    path = Path(name)
    return path.suffix in TEXT_SUFFIXES or path.name in TEXT_NAMES or name.startswith(TEXT_FOLDERS)


def code_path_parts(text: str) -> set[tuple[int, int]]:
    """(line, column) of every string literal in code (not a docstring or a bare string
    statement) whose value is exactly the path part the exception allows."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return set()
    prose: set[int] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            prose.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    found: set[tuple[int, int]] = set()
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if (
            tok.type == tokenize.STRING
            and tok.start[0] not in prose
            and tok.string[1:-1] == SHARED
            and tok.string[0] == tok.string[-1]
        ):
            found.add(tok.start)
    return found


def violations(name: str, text: str) -> list[str]:
    """Every forbidden mention in one file, as 'path:line: what (the line)'."""
    allowed: set[tuple[int, int]] = set()
    if name.endswith(".py") and name.startswith(PATH_PART_ALLOWED_IN):
        allowed = code_path_parts(text)
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        for what, pattern in RULES:
            for match in pattern.finditer(line):
                if what == PATH_PART_RULE and (number, match.start()) in allowed:
                    continue
                out.append(f"{name}:{number}: {what}: {line.strip()[:160]}")
    return out


def read(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8", errors="replace")


def test_files_are_found() -> None:
    names = tracked_files()
    assert "README.md" in names
    assert "caltrail/pipeline/ingest.py" in names
    assert len(names) > 50


def test_nothing_names_a_path_outside_the_repository() -> None:
    found = [v for name in tracked_files() for v in violations(name, read(name))]
    assert not found, "\n".join(
        [
            "These lines name something outside the repository; cite docs/LICENSING.md, "
            "docs/FORMATS.md or docs/ARCHITECTURE.md (or say what the issue was about):",
            *found,
        ]
    )


# The examples below are put together with + so that this file's own lines stay clean (a
# formatter joins adjacent literals, never a + expression).
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("see /wor" + "k/" + SHARED + "/corpus/x", 2),  # a machine path and an outside folder
        ("../" + SHARED + " is absent", 1),
        ("/tmp/py" + "test-of-someone/0/lake", 1),
        ("https://example.org/home/page and ~/work/notes", 0),
        ("DESIGN" + '.md "Names"', 1),
        ("Issue" + " 8, item 1: crash safety.", 1),
        ("tas" + "k 3 of the plan", 1),
        ("python-evtx issue #85; the issues were many", 0),
        ("ROOT.parent / " + f'"{SHARED}" / "corpus"', 1),  # not under tests/ or tools/
        ("the licensing" + ".md notes", 1),
    ],
)
def test_rules_catch_what_they_should(text: str, expected: int) -> None:
    assert len(violations("caltrail/example.py", text)) == expected


def test_the_corpus_path_part_is_allowed_only_in_test_and_tool_code() -> None:
    code = f'CORPUS = ROOT.parent / "{SHARED}" / "corpus"\n'
    comment = f'# built from "{SHARED}" / "corpus"\n'
    docstring = f'"""Reads "{SHARED}" / "corpus"."""\n'
    assert violations("tests/conftest.py", code) == []
    assert violations("tools/bench.py", code) == []
    assert len(violations("caltrail/pipeline/x.py", code)) == 1
    assert len(violations("tests/conftest.py", comment)) == 1
    assert len(violations("tests/conftest.py", docstring)) == 1
    assert len(violations("tests/notes.md", code)) == 1


def test_readme_and_architecture_exist() -> None:
    assert (ROOT / "README.md").is_file()
    assert (ROOT / "docs" / "ARCHITECTURE.md").is_file()


def test_architecture_names_every_pipeline_module() -> None:
    text = read("docs/ARCHITECTURE.md")
    modules = sorted(
        p.name for p in (ROOT / "caltrail" / "pipeline").glob("*.py") if p.name != "__init__.py"
    )
    assert modules
    missing = [m for m in modules if not re.search(rf"(?<![\w.]){re.escape(m)}\b", text)]
    assert not missing, f"docs/ARCHITECTURE.md does not mention caltrail/pipeline/{missing}"


# A docs page (docs/ and a file name), then optionally a comma or an opening parenthesis, then a quoted title.
CITATION = re.compile(r"\bdocs/([A-Za-z_-]+\.md)\b(?:,?\s*\(?\"([^\"\n]+)\")?")


def headings(text: str) -> set[str]:
    return {
        line.lstrip("#").strip().lower()
        for line in text.splitlines()
        if re.match(r"#{1,6}\s", line)
    }


def test_cited_docs_pages_and_sections_exist() -> None:
    problems = []
    cache: dict[str, set[str] | None] = {}
    for name in tracked_files():
        for number, line in enumerate(read(name).splitlines(), start=1):
            for match in CITATION.finditer(line):
                page, title = match.group(1), match.group(2)
                if page not in cache:
                    path = ROOT / "docs" / page
                    cache[page] = (
                        headings(path.read_text(encoding="utf-8")) if path.is_file() else None
                    )
                found = cache[page]
                if found is None:
                    problems.append(f"{name}:{number}: docs/{page} does not exist")
                elif title is not None and title.strip().lower() not in found:
                    problems.append(f"{name}:{number}: docs/{page} has no section {title!r}")
    assert not problems, "\n".join(problems)
