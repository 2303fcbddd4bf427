"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

# CI (.ci/run) draws the same examples every time (derandomize): whether a change lands must
# not depend on a property's random search; `make test` elsewhere keeps searching afresh, and
# what it finds becomes a pinned example.
settings.register_profile("ci", derandomize=True)
settings.load_profile(os.environ.get("CALTRAIL_HYPOTHESIS_PROFILE", "default"))

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CORPUS = SHARED / "corpus"


def corpus_path(*parts: str) -> Path:
    """A path in the public corpus beside the checkout; the test is skipped when the corpus
    is absent."""
    path = CORPUS.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"public corpus not available at {path} (it is not beside this checkout)")
    return path


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The reliability tests first (they start processes, clusters and crashes: the slowest
    files), the rest in their usual order: the suite runs a file per process at a time
    (`--dist loadfile`), and a slow file handed out last keeps one process busy while the
    other has nothing left."""
    items.sort(key=lambda item: not item.nodeid.startswith("tests/reliability/"))
