"""Shared test fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

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
