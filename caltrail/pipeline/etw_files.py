"""The decoding files a user gives for raw .etl traces: instrumentation manifests
(`caltrail ingest --etw-manifest FILE`) and WPP TMF files (`--tmf DIR`).

Parsers are pure (bytes in, records out), so the files are read here, once per run, and
handed to the .etl reader as bytes in its ParseOptions (which a worker process receives
whole). Each is checked first: a manifest that is not one, or a TMF folder without any
message, is a usage error with one clear line, before any file is ingested.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from caltrail.parsers.trace.etw_manifest import ManifestError, read_manifest
from caltrail.parsers.trace.wpp_tmf import TmfSet, read_tmf

MAX_TMF_FILES = 100_000


class DecodingFilesError(ValueError):
    """A manifest or TMF folder that cannot be used (the message says which and why)."""


@lru_cache(maxsize=4)
def load(
    manifests: tuple[Path, ...], tmf_dirs: tuple[Path, ...]
) -> tuple[tuple[bytes, ...], tuple[tuple[str, bytes], ...]]:
    """(manifest bytes, (TMF name, bytes)) for ParseOptions; raises DecodingFilesError."""
    blobs: list[bytes] = []
    for path in manifests:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DecodingFilesError(f"cannot read the manifest {path}: {exc.strerror or exc}") from exc
        try:
            read_manifest(data)
        except ManifestError as exc:
            raise DecodingFilesError(f"{path} is not an instrumentation manifest: {exc}") from exc
        blobs.append(data)
    tmf_files: list[tuple[str, bytes]] = []
    for folder in tmf_dirs:
        found = [folder] if folder.is_file() else sorted(
            p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() == ".tmf"
        )[:MAX_TMF_FILES]
        messages = TmfSet()
        for path in found:
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise DecodingFilesError(f"cannot read the TMF file {path}: {exc.strerror or exc}") from exc
            read_tmf(path.name, data, messages)
            tmf_files.append((path.name, data))
        if not messages.messages:
            raise DecodingFilesError(
                f"{folder}: no WPP message found in {len(found)} .tmf file(s) (expected lines "
                "'<GUID> <module> // SRC=...' and '#typev <name> <number> \"<format>\"')"
            )
    return tuple(blobs), tuple(tmf_files)


__all__ = ["DecodingFilesError", "load"]
