"""Where a carved record can be rendered (recovery.py): the chunks of the file read again,
and each candidate placed where its templates are.

A candidate renders where it lies when its chunk still holds every template it names
(a definition carrying the template's id where the record points) with sound names
(`carve.names_intact`). Otherwise a chunk of the file whose template table lists copies
of more of them is looked for (its own chunk first, then the others in file order), and
the record is moved there (`carve.transplant`). A payload template (a nested value's) that
no chunk holds leaves that value out; a root (System) template that none holds is the
reason the candidate is rejected ("template gone", "names gone").
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from caltrail.parsers.evtx import carve
from caltrail.parsers.evtx import structs as S
from caltrail.parsers.evtx.carve import Candidate, TemplateRef, Value
from caltrail.parsers.evtx.structs import ChunkSlice

DONORS = 4  # chunks remembered per template id, to rebuild a record's template from
CACHED_CHUNKS = 8  # chunks kept while rendering (read again from the file otherwise)


class Chunks:
    """A file's chunks, read again from its stream when asked (a few kept)."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._kept: OrderedDict[int, bytes] = OrderedDict()

    def get(self, index: int) -> bytes | None:
        """Chunk `index`'s 64 KiB (a cut last chunk padded with zeros), or None when the
        file holds not even its header."""
        data = self._kept.get(index)
        if data is not None:
            self._kept.move_to_end(index)
            return data
        self._stream.seek(S.FILE_HEADER_BLOCK + index * S.CHUNK_SIZE)
        block = self._stream.read(S.CHUNK_SIZE)
        if len(block) < S.CHUNK_HEADER_SIZE:
            return None
        data = block.ljust(S.CHUNK_SIZE, b"\x00")
        self._kept[index] = data
        if len(self._kept) > CACHED_CHUNKS:
            self._kept.popitem(last=False)
        return data


@dataclass(slots=True)
class Placement:
    """Where a candidate can render: the chunk (`source`), the offset there of each
    template it keeps, and the values left out; `reason` when its root cannot render."""

    source: int
    positions: dict[TemplateRef, int] = field(default_factory=dict)
    drop: list[Value] = field(default_factory=list)
    reason: str | None = None


class Placer:
    """Places candidates, knowing which chunks of the file list which templates."""

    def __init__(self, chunks: Chunks) -> None:
        self.chunks = chunks
        self._donors: dict[int, list[int]] = {}  # template id -> chunks listing it
        self._templates: dict[int, dict[int, tuple[int, int]]] = {}  # donor -> its templates
        self._names: dict[tuple[int, int], bool] = {}  # (chunk, template) -> names intact
        self._cut: dict[tuple[int, int], bytes] = {}  # (donor, place) -> its tables, cut

    def note(self, chunk: ChunkSlice) -> None:
        """Remember which templates a walked chunk's table lists."""
        if chunk.skipped:
            return
        for template_id in carve.chunk_templates(chunk.data):
            chunks = self._donors.setdefault(template_id, [])
            if len(chunks) < DONORS:
                chunks.append(chunk.index)

    def in_place(self, index: int, data: bytes, candidate: Candidate) -> Placement:
        """The candidate rendered where it lies, in chunk `index` (`data`), with the
        templates its chunk still has (and its plain nested documents, where their names
        are still sound)."""

        def locate(ref: TemplateRef) -> int | None:
            return ref.offset if carve.defined_at(data, ref.offset) == ref.template_id else None

        placement = self._place(index, data, candidate.refs, locate)
        if placement.reason is None:
            for value in candidate.plain:
                if not carve.names_intact(data, value.start, value.end):
                    placement.drop.append(value)
        return placement

    def elsewhere(self, index: int, candidate: Candidate, here: Placement) -> Placement | None:
        """The candidate (of chunk `index`) placed in the chunk of the file that holds
        copies of more of its templates than `here` does (`source`: that chunk), or None
        when none does better. Its plain nested documents are left out there (their
        names are offsets into its own chunk)."""
        refs = candidate.refs
        if not refs:
            return None
        best: Placement | None = None
        kept = -1 if here.reason else len(here.positions)
        for donor_index in sorted(
            self._donors.get(refs[0].template_id, ()), key=lambda i: (i != index, i)
        ):
            donor = self.chunks.get(donor_index)
            if donor is None:
                continue
            templates = self._templates.get(donor_index)
            if templates is None:
                templates = self._templates[donor_index] = carve.chunk_templates(donor)

            def locate(
                ref: TemplateRef, templates: dict[int, tuple[int, int]] = templates
            ) -> int | None:
                found = templates.get(ref.template_id)
                return None if found is None or ref.resident else found[0]

            placement = self._place(donor_index, donor, refs, locate)
            placement.drop.extend(candidate.plain)
            if placement.reason is not None or len(placement.positions) <= kept:
                continue
            if carve.transplant_place(donor, placement.positions, candidate.record.size) is None:
                continue
            best, kept = placement, len(placement.positions)
            if not placement.drop:
                break
        return best

    def cut_tables(self, index: int, donor: bytes, start: int) -> bytes:
        """`carve.cut_tables` of chunk `index` at `start` (once)."""
        cut = self._cut.get((index, start))
        if cut is None:
            cut = self._cut[(index, start)] = carve.cut_tables(donor, start)
        return cut

    def _place(
        self,
        source: int,
        chunk: bytes,
        refs: list[TemplateRef],
        locate: Callable[[TemplateRef], int | None],
    ) -> Placement:
        """Which of `refs` can render in `chunk` (`locate`: where its template is there):
        a template must be there with sound names. A nested one that cannot has its value
        left out (with what it holds); a root that cannot, a reason."""
        placement = Placement(source)
        for ref in refs:
            if any(value.start <= ref.at < value.end for value in placement.drop):
                continue  # inside a value already left out
            offset = locate(ref)
            reason = None
            if offset is None:
                reason = "template gone"
            elif not self._template_names(source, chunk, offset):
                reason = "names gone"
            if reason is None and offset is not None:
                placement.positions[ref] = offset
            elif ref.value is None:
                return Placement(source, reason=reason)
            else:
                placement.drop.append(ref.value)
        return placement

    def _template_names(self, source: int, chunk: bytes, offset: int) -> bool:
        """`carve.names_intact` over the template at `offset` of chunk `source` (once)."""
        key = (source, offset)
        intact = self._names.get(key)
        if intact is None:
            start = offset + carve.TEMPLATE_HEAD.size
            size = S.U32.unpack_from(chunk, offset + 20)[0]
            intact = self._names[key] = carve.names_intact(chunk, start, start + size)
        return intact
