"""Turn the paths a user gives (files, folders, zip bundles) into input files.

Folders are walked recursively in sorted order (runs are reproducible). Zip archives are
opened and their members extracted one by one into a private temporary folder, under a
name we choose (never the member's own path: `../x` or `/etc/x` cannot escape), with
limits on member count, total size and compression ratio so a zip bomb is refused with a
clear message instead of filling the disk. Nested zips are opened up to MAX_ZIP_DEPTH.
"""

from __future__ import annotations

import datetime as dt
import errno
import os
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
MAX_ZIP_DEPTH = 3
MAX_MEMBERS = 100_000
MAX_TOTAL_BYTES = 64 * 1024**3  # uncompressed, per archive
MAX_RATIO = 200  # uncompressed / compressed, per member above 1 MiB, and per archive
ARCHIVE_FLOOR = 64 * 1024**2  # an archive may always expand to this much, whatever its ratio
FREE_RESERVE = 32 * 1024**2  # never fill the extraction disk beyond this reserve
COPY_BLOCK = 1024 * 1024


@dataclass(frozen=True)
class InputFile:
    """One file to ingest: where to read it, and the name to record for it."""

    path: Path  # readable path on disk (maybe a temporary extraction)
    display: str  # as the user knows it: "bundle.zip!logs/System.evtx"
    mtime: float | None


@dataclass(frozen=True)
class InputProblem:
    """A path that could not be opened or expanded (reported per file, never fatal)."""

    display: str
    message: str


def is_zip(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(4) in ZIP_MAGIC
    except OSError:
        return False


def discover(paths: list[Path], workdir: Path) -> Iterator[InputFile | InputProblem]:
    """Expand user paths into input files. Zip members are extracted under `workdir`."""
    for given in paths:
        if not given.exists():
            yield InputProblem(str(given), "no such file or directory")
        elif given.is_dir():
            for root, dirs, files in os.walk(given):
                dirs.sort()
                for name in sorted(files):
                    yield from _one(Path(root) / name, str(Path(root) / name), workdir, 0)
        else:
            yield from _one(given, str(given), workdir, 0)


def _one(path: Path, display: str, workdir: Path, depth: int) -> Iterator[InputFile | InputProblem]:
    try:
        info = path.stat()
    except OSError as exc:
        yield InputProblem(display, f"cannot stat: {exc.strerror or exc}")
        return
    if not stat.S_ISREG(info.st_mode):
        return  # sockets, fifos, devices: not log files
    if is_zip(path):
        if depth >= MAX_ZIP_DEPTH:
            yield InputProblem(
                display, f"zip nested deeper than {MAX_ZIP_DEPTH} levels: not opened"
            )
            return
        yield from _zip_members(path, display, workdir, depth + 1)
        return
    yield InputFile(path, display, info.st_mtime)


def _zip_members(
    path: Path, display: str, workdir: Path, depth: int
) -> Iterator[InputFile | InputProblem]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        yield InputProblem(display, f"unreadable zip archive: {exc}")
        return
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        if len(members) > MAX_MEMBERS:
            yield InputProblem(
                display, f"zip has {len(members)} members (limit {MAX_MEMBERS}): not opened"
            )
            return
        declared = sum(m.file_size for m in members)
        if declared > MAX_TOTAL_BYTES:
            yield InputProblem(
                display,
                f"zip would expand to {declared} bytes (limit {MAX_TOTAL_BYTES}): not opened",
            )
            return
        target = Path(tempfile.mkdtemp(prefix="zip-", dir=workdir))
        # The whole archive is held to the ratio too: many members of exactly 1 MiB of
        # zeros escaped the per-member check and expanded 1000:1 (a zip bomb in pieces).
        try:
            budget = max(ARCHIVE_FLOOR, MAX_RATIO * path.stat().st_size)
        except OSError:
            budget = ARCHIVE_FLOOR
        expanded = 0
        for number, member in enumerate(sorted(members, key=lambda m: m.filename)):
            name = member.filename.replace("\\", "/")
            member_display = f"{display}!{name}"
            if (
                member.file_size > COPY_BLOCK
                and member.compress_size
                and (member.file_size / member.compress_size > MAX_RATIO)
            ):
                yield InputProblem(
                    member_display,
                    f"compression ratio {member.file_size // max(member.compress_size, 1)}:1 "
                    f"above {MAX_RATIO}:1 (zip bomb?): not extracted",
                )
                continue
            if expanded + member.file_size > budget:
                yield InputProblem(
                    member_display,
                    f"the archive would expand beyond {budget} bytes ({MAX_RATIO}:1 of its "
                    "size; zip bomb?): not extracted",
                )
                continue
            if member.file_size + FREE_RESERVE > _free_bytes(target):
                # The lake's disk is full: a problem of this machine, not of the input. The
                # run stops (exit 1) rather than marking good inputs unreadable.
                raise OSError(
                    errno.ENOSPC,
                    f"No space left on device to extract {member_display} "
                    f"({member.file_size} bytes, keeping {FREE_RESERVE} bytes free in {target.parent})",
                )
            expanded += member.file_size
            # Our own name: the member's path never touches the filesystem.
            suffix = Path(name).suffix[:16] if Path(name).suffix.isascii() else ""
            out = target / f"{number:06d}{suffix}"
            try:
                _extract(archive, member, out)
            except _TooBig as exc:
                yield InputProblem(member_display, str(exc))
                out.unlink(missing_ok=True)
                continue
            except OSError as exc:
                out.unlink(missing_ok=True)
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise  # the disk, not the input
                yield InputProblem(member_display, f"cannot extract: {exc}")
                continue
            except (zipfile.BadZipFile, ValueError, NotImplementedError, EOFError) as exc:
                yield InputProblem(member_display, f"cannot extract: {exc}")
                out.unlink(missing_ok=True)
                continue
            mtime = _zip_mtime(member)
            if is_zip(out):
                yield from (
                    _zip_members(out, member_display, workdir, depth + 1)
                    if depth < MAX_ZIP_DEPTH
                    else iter(
                        [
                            InputProblem(
                                member_display,
                                f"zip nested deeper than {MAX_ZIP_DEPTH} levels: not opened",
                            )
                        ]
                    )
                )
                continue
            yield InputFile(out, member_display, mtime)


class _TooBig(Exception):
    pass


def _free_bytes(directory: Path) -> int:
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return 1 << 62


def _extract(archive: zipfile.ZipFile, member: zipfile.ZipInfo, out: Path) -> None:
    # The declared size can lie: count what really comes out.
    limit = member.file_size + COPY_BLOCK
    written = 0
    with archive.open(member) as source, open(out, "wb") as sink:
        while block := source.read(COPY_BLOCK):
            written += len(block)
            if written > limit:
                raise _TooBig(
                    f"member expands beyond its declared {member.file_size} bytes: not extracted"
                )
            sink.write(block)


def _zip_mtime(member: zipfile.ZipInfo) -> float | None:
    try:
        return dt.datetime(*member.date_time, tzinfo=dt.UTC).timestamp()
    except ValueError:
        return None


def cleanup(workdir: Path) -> None:
    shutil.rmtree(workdir, ignore_errors=True)
