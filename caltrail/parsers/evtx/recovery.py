"""Recovered records: what Windows let go of, read back from chunk slack.

The reader (reader.py) hands every chunk it walked to a `Recovery` (`scan`), after its
allocated records were rendered; once the file (or the reader's part of it) is walked,
`finish` renders the carved candidates (carve.py found and checked them) and yields those
that render, as EventRecords with `recovered = True` and their own chunk and offset. So
recovery never costs an allocated record: those are all out before it renders anything,
and what it does after the work bound is not done (one `budget_exceeded` issue says so).

Rendering. A candidate is placed (placing.py: where it lies, or moved into the chunk of
the file that holds its templates) and rendered by the reader's backend in a synthetic
chunk (`carve.synthetic_chunk`): that chunk, changed only where no record can point, so
that the backend walks from one candidate to the next. Where no copy of a payload
template (EventData, UserData) is left, the record is rendered without that part, never
with another template's names: it is emitted with that payload empty and a warning
(`recovered_partly`). A record whose own (System) template is gone is rejected.

Duplicates. A record found in slack may also be allocated elsewhere in the file (a chunk
rewritten with the same records, an exported log's stale buffer). A recovered record with
the id, FILETIME and content (every field but its location) of an allocated one, or of
a recovered one already emitted, is not emitted again (one recovered without its payload
is compared on the rest). Allocated records are remembered compactly (8 bytes each: a
hash of id and FILETIME, and where the record is) and rendered again for the comparison
only when a candidate carries the same hash.

Counts go to the file's notes, never to its issues: a candidate is not a record seen
until it renders (`carve_candidates`: found, recovered, duplicates, rejected; and
`carve_rejected`: the reasons).
"""

from __future__ import annotations

import array
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from caltrail.parsers.base import BUDGET_EXCEEDED, Budget, EventRecord, FileNote, Item, ParseIssue
from caltrail.parsers.evtx import carve
from caltrail.parsers.evtx import structs as S
from caltrail.parsers.evtx.placing import Chunks, Placement, Placer
from caltrail.parsers.evtx.structs import ChunkSlice, RecordSlice

Payload = str | dict[str, Any]
Render = Callable[[ChunkSlice], Iterator["tuple[RecordSlice, Payload] | ParseIssue"]]
Convert = Callable[[Payload, RecordSlice, int, int], EventRecord]

NOTE = "carve_candidates"
REJECTED_NOTE = "carve_rejected"
CANDIDATES_FORM = (
    "{found} found, {recovered} recovered, {partly} without payload, {duplicates} duplicates, "
    "{rejected} rejected"
)
PARTLY = "recovered_partly"  # the kind of the warning on a record recovered without payload
# Rejection reasons, in the order the notes list them.
REASONS = (
    "size",
    "id",
    "time",
    "structure",
    "template gone",
    "names gone",
    "not rendered",
    "garbled",
)
MAX_PENDING = 200_000  # candidates held per file (a few MB); more are counted, not examined

# An allocated record's key: 28 bits of a hash of (id, FILETIME), its chunk (20 bits) and
# its offset in the chunk (16 bits). A hash that matches by chance costs one extra render.
_CHUNK_BITS, _OFFSET_BITS = 20, 16
_HASH_MASK = (1 << 28) - 1
_CHUNK_MASK = (1 << _CHUNK_BITS) - 1
_OFFSET_MASK = (1 << _OFFSET_BITS) - 1


def _hash(record_id: int, filetime: int) -> int:
    return hash((record_id, filetime)) & _HASH_MASK


@dataclass(slots=True)
class _Pending:
    chunk: int
    file_offset: int
    candidate: carve.Candidate


class Recovery:
    """The recovered records of one file, or of one part of it (chunks start..stop-1)."""

    def __init__(self, stream: BinaryIO, render: Render, convert: Convert, budget: Budget) -> None:
        self._stream = stream
        self._render = render
        self._convert = convert
        self._budget = budget
        self._allocated = array.array("Q")
        self._pending: list[_Pending] = []
        self._chunks = Chunks(stream)
        self._placer = Placer(self._chunks)
        self._compared: dict[tuple[int, int], tuple[Any, ...] | None] = {}
        self.counts: Counter[str] = Counter()

    def scan(self, chunk: ChunkSlice) -> None:
        """Remember a walked chunk's allocated records and templates, and find its
        candidates (rendered by `finish`)."""
        where = (chunk.index & _CHUNK_MASK) << _OFFSET_BITS
        shift, mask = _CHUNK_BITS + _OFFSET_BITS, _HASH_MASK  # `_hash`, inlined (per record)
        self._allocated.extend(
            [
                (hash((r.record_id, r.filetime)) & mask) << shift | where | r.offset
                for r in chunk.records
            ]
        )
        self._placer.note(chunk)
        found, counts = carve.scan(chunk.data, chunk.records)
        self.counts.update(counts)
        room = MAX_PENDING - len(self._pending)
        if len(found) > room:
            self.counts["not examined"] += len(found) - room
            found = found[: max(room, 0)]
        self._pending.extend(_Pending(chunk.index, chunk.file_offset, c) for c in found)

    def finish(self) -> Iterator[Item]:
        """Render the candidates and emit the records that are not duplicates (those
        recovered without their payload last, once every whole one is known), then the
        notes."""
        matches = self._allocated_matches()
        emitted: set[tuple[int, int, int]] = set()  # (id, FILETIME, hash of content)
        partly: list[tuple[EventRecord, int]] = []  # and the number of values left out
        for recovered in self._recovered(matches):
            if isinstance(recovered, ParseIssue):
                yield recovered  # the work bound
                break
            if isinstance(recovered, str):
                self.counts[recovered] += 1
                continue
            record, dropped = recovered
            if dropped:
                partly.append((record, dropped))
                continue
            content = _content(record)
            key = (record.record_id, record.filetime, hash(content))
            if key in emitted or self._is_allocated(record, content, matches):
                self.counts["duplicates"] += 1
                continue
            emitted.add(key)
            emitted.add((record.record_id, record.filetime, hash(content[:-1])))
            self.counts["recovered"] += 1
            yield record
        for record, dropped in partly:
            system = _content(record)[:-1]
            key = (record.record_id, record.filetime, hash(system))
            if key in emitted or self._is_allocated(record, system, matches):
                self.counts["duplicates"] += 1
                continue
            emitted.add(key)
            self.counts["recovered"] += 1
            self.counts["partly"] += 1
            yield record
            yield ParseIssue(
                PARTLY,
                f"chunk {record.chunk} offset 0x{record.offset:08x} record {record.record_id}: "
                f"recovered from chunk slack without {dropped} of its values (their "
                "template is gone from the file, or its names were overwritten): its "
                "EventData or UserData is left empty",
                quarantined=False,
                chunk=record.chunk,
                offset=record.offset,
            )
        self._pending = []
        yield from self.notes()

    def notes(self) -> Iterator[FileNote]:
        """`carve_candidates`: "N found, N recovered, N without payload (of the recovered),
        N duplicates, N rejected[, N not examined]"; `carve_rejected`: "N reason, ..."."""
        counts = self.counts
        candidates = {
            "found": counts["found"],
            "recovered": counts["recovered"],
            "partly": counts["partly"],
            "duplicates": counts["duplicates"],
            "rejected": sum(counts[r] for r in REASONS),
            "not examined": counts["not examined"],
        }
        yield FileNote.counted(NOTE, candidates, CANDIDATES_FORM, ("not examined",))
        if candidates["rejected"]:
            yield FileNote.counted(REJECTED_NOTE, {r: counts[r] for r in REASONS}, "", REASONS)

    def _stopped(self, pending: _Pending, left: int) -> ParseIssue:
        return ParseIssue(
            BUDGET_EXCEEDED,
            f"chunk {pending.chunk}: stopped after {self._budget.max_seconds:.0f} s (work "
            f"bound per file) while reading records from chunk slack; {left} candidates "
            "not examined",
            chunk=pending.chunk,
            offset=pending.file_offset,
        )

    # -- placing and rendering ------------------------------------------------------

    def _recovered(
        self, matches: dict[int, list[int]]
    ) -> Iterator[tuple[EventRecord, int] | str | ParseIssue]:
        """Each candidate's record (and how many of its values were left out), or why it
        is none ("duplicates" for a twin of an allocated record), chunk by chunk; a
        `budget_exceeded` issue, last, when the work bound stops it."""
        pending = self._pending
        start = 0
        while start < len(pending):
            stop = start + 1
            while stop < len(pending) and pending[stop].chunk == pending[start].chunk:
                stop += 1
            if self._budget.exceeded():
                self.counts["not examined"] += len(pending) - start
                yield self._stopped(pending[start], len(pending) - start)
                return
            yield from self._recover_chunk(pending[start:stop], matches)
            start = stop

    def _recover_chunk(
        self, group: list[_Pending], matches: dict[int, list[int]]
    ) -> list[tuple[EventRecord, int] | str]:
        """The candidates of one chunk, in order. Each is placed: where it lies when its
        chunk still has all its templates, else in the chunk of the file that has the most
        of them (`_elsewhere`), else where it lies without the values whose templates are
        gone. The candidates placed in one chunk are rendered together: one synthetic
        chunk leads the backend from one to the next."""
        data = self._chunks.get(group[0].chunk)
        if data is None:
            return ["not rendered"] * len(group)
        results: list[tuple[EventRecord, int] | str] = []
        here: list[tuple[int, Placement]] = []
        moved: dict[int, list[tuple[int, Placement]]] = {}  # donor -> candidates
        for pending in group:
            if self._is_allocated_twin(pending, matches):
                results.append("duplicates")  # known without rendering either copy
                continue
            placement = self._placer.in_place(pending.chunk, data, pending.candidate)
            if placement.reason is not None or placement.drop:
                better = self._placer.elsewhere(pending.chunk, pending.candidate, placement)
                if better is not None:
                    moved.setdefault(better.source, []).append((len(results), better))
                    results.append("not rendered")
                    continue
            if placement.reason is not None:
                results.append(placement.reason)
                continue
            here.append((len(results), placement))
            results.append("not rendered")
        if here:
            self._render_here(group, here, results, data)
        for index, moves in moved.items():
            donor = self._chunks.get(index)
            if donor is not None:
                self._render_moved(group, moves, results, data, index, donor)
        return results

    def _render_here(
        self,
        group: list[_Pending],
        placed: list[tuple[int, Placement]],
        results: list[tuple[EventRecord, int] | str],
        data: bytes,
    ) -> None:
        """Render candidates where they lie, together, then alone those the walk did not
        reach (a record id repeated before theirs ends a pyevtx-rs walk)."""
        for i, _ in placed:
            record = group[i].candidate.record
            body, end = record.offset + S.RECORD_HEADER_SIZE, record.offset + record.size - 4
            if not group[i].candidate.refs and not carve.names_intact(data, body, end):
                results[i] = "names gone"  # a body of plain elements: its names, checked
        ready = [(i, p) for i, p in placed if results[i] == "not rendered"]
        if not ready:
            return
        records = [group[i].candidate.record for i, _ in ready]
        drop = [value for _, placement in ready for value in placement.drop]
        synthetic = carve.synthetic_chunk(data, records, drop)
        self._render_into(group, ready, results, synthetic, records)
        for i, placement in ready:
            if results[i] == "not rendered":
                alone = [group[i].candidate.record]
                synthetic = carve.synthetic_chunk(data, alone, placement.drop)
                self._render_into(group, [(i, placement)], results, synthetic, alone)

    def _render_moved(
        self,
        group: list[_Pending],
        moves: list[tuple[int, Placement]],
        results: list[tuple[EventRecord, int] | str],
        data: bytes,
        index: int,
        donor: bytes,
    ) -> None:
        """Render candidates moved into chunk `index`, together (as many at a time as fit
        after its templates), then alone those the walk did not reach."""

        def tables(start: int) -> bytes:
            return self._placer.cut_tables(index, donor, start)

        left = moves
        while left:
            batch = [carve.Move(group[i].candidate, p.positions, p.drop) for i, p in left]
            synthetic, records = carve.transplant(data, batch, donor, tables)
            self._render_into(group, left[: len(records)], results, synthetic, records)
            left = left[len(records) :]
        for i, placement in moves:
            if results[i] == "not rendered":
                move = carve.Move(group[i].candidate, placement.positions, placement.drop)
                synthetic, records = carve.transplant(data, [move], donor, tables)
                self._render_into(group, [(i, placement)], results, synthetic, records)

    def _render_into(
        self,
        group: list[_Pending],
        part: list[tuple[int, Placement]],
        results: list[tuple[EventRecord, int] | str],
        synthetic: bytes,
        records: list[RecordSlice],
    ) -> None:
        """Render the records of a synthetic chunk (`records`: where the candidates of
        `part` lie in it) into `results`."""
        first = group[0]
        where = {id(rec): n for n, rec in enumerate(records)}
        chunk = ChunkSlice(first.chunk, first.file_offset, synthetic, records)
        for rendered in self._render(chunk):
            if isinstance(rendered, ParseIssue):
                continue  # not rendered
            rec, payload = rendered
            n = where.get(id(rec))
            if n is None:
                continue
            i, placement = part[n]
            if results[i] != "not rendered":
                continue  # its names were found gone before
            offset = first.file_offset + group[i].candidate.record.offset
            record = self._record(payload, rec, chunk.index, offset)
            results[i] = record if isinstance(record, str) else (record, len(placement.drop))

    def _render_one(self, chunk: ChunkSlice, offset: int, plain: bool = False) -> EventRecord | str:
        """Render the one record of a synthetic chunk; `offset`: its place in the file;
        `plain`: its body is plain elements (their names are checked here first)."""
        (rec,) = chunk.records
        body, end = rec.offset + S.RECORD_HEADER_SIZE, rec.offset + rec.size - 4
        if plain and not carve.names_intact(chunk.data, body, end):
            return "names gone"
        for out in self._render(chunk):
            if isinstance(out, ParseIssue):
                return "not rendered"
            placed, payload = out
            if placed is rec:
                return self._record(payload, rec, chunk.index, offset)
        return "not rendered"

    def _record(
        self, payload: Payload, rec: RecordSlice, chunk: int, offset: int
    ) -> EventRecord | str:
        """A rendered candidate as a recovered EventRecord, or why it is none."""
        try:
            record = self._convert(payload, rec, chunk, offset)
        except (ValueError, TypeError, AttributeError, IndexError, KeyError):
            return "not rendered"
        if _garbled(record):
            return "garbled"
        record.recovered = True
        return record

    # -- duplicates -----------------------------------------------------------------

    def _allocated_matches(self) -> dict[int, list[int]]:
        """Hash -> where allocated records with that hash are (chunk << 16 | offset), for
        the hashes of the candidates only."""
        wanted = {
            _hash(p.candidate.record.record_id, p.candidate.record.filetime) for p in self._pending
        }
        matches: dict[int, list[int]] = {}
        if not wanted:
            return matches
        shift = _CHUNK_BITS + _OFFSET_BITS
        place_mask = (1 << shift) - 1
        for key in self._allocated:
            if key >> shift in wanted:
                matches.setdefault(key >> shift, []).append(key & place_mask)
        return matches

    def _is_allocated_twin(self, pending: _Pending, matches: dict[int, list[int]]) -> bool:
        """Whether an allocated record of the file has the candidate's very bytes at the
        same place of its chunk, and that chunk the same templates where the candidate
        points (its copy then renders the same): e.g. the stale copy of a chunk an export
        left in its last chunk's slack. Saves rendering both."""
        candidate = pending.candidate
        record = candidate.record
        if candidate.missing:
            return False
        for place in matches.get(_hash(record.record_id, record.filetime), ()):
            chunk, offset = place >> _OFFSET_BITS, place & _OFFSET_MASK
            if offset != record.offset or chunk == pending.chunk:
                continue
            data = self._chunks.get(chunk)
            own = self._chunks.get(pending.chunk)
            if data is None or own is None:
                continue
            end = offset + record.size
            if data[offset:end] == own[offset:end] and all(
                carve.defined_at(data, ref.offset) == ref.template_id for ref in candidate.refs
            ):
                return True
        return False

    def _is_allocated(
        self, record: EventRecord, content: tuple[Any, ...], matches: dict[int, list[int]]
    ) -> bool:
        """Whether an allocated record of the file has this record's id, FILETIME and
        `content` (`_content`, or without its last item, the data, for a record recovered
        without its payload), rendered again from its chunk to compare."""
        for place in matches.get(_hash(record.record_id, record.filetime), ()):
            chunk, offset = place >> _OFFSET_BITS, place & _OFFSET_MASK
            allocated = self._allocated_content(chunk, offset, record)
            if allocated is not None and allocated[: len(content)] == content:
                return True
        return False

    def _allocated_content(
        self, chunk: int, offset: int, record: EventRecord
    ) -> tuple[Any, ...] | None:
        key = (chunk, offset)
        if key not in self._compared:
            self._compared[key] = None
            data = self._chunks.get(chunk)
            if data is not None and offset + S.RECORD_HEADER_SIZE <= len(data):
                magic, size, record_id, filetime = S.RECORD_HEADER.unpack_from(data, offset)
                if (magic, record_id, filetime) == (
                    S.RECORD_MAGIC,
                    record.record_id,
                    record.filetime,
                ) and offset + size <= len(data):
                    rec = RecordSlice(offset, size, record_id, filetime)
                    synthetic = carve.synthetic_chunk(data, [rec])
                    file_offset = S.FILE_HEADER_BLOCK + chunk * S.CHUNK_SIZE
                    allocated = self._render_one(
                        ChunkSlice(chunk, file_offset, synthetic, [rec]), file_offset + offset
                    )
                    if isinstance(allocated, EventRecord):
                        self._compared[key] = _content(allocated)
        return self._compared[key]


_NOT_CONTENT = frozenset({"chunk", "offset", "recovered", "data"})
_SYSTEM = tuple(name for name in EventRecord.__slots__ if name not in _NOT_CONTENT)


def _content(record: EventRecord) -> tuple[Any, ...]:
    """Every field of a record but where it was found (and whether it was recovered),
    its data last."""
    return (*(getattr(record, name) for name in _SYSTEM), tuple(record.data.items()))


def _garbled(record: EventRecord) -> bool:
    """A rendering no event has: no EventID, or control characters in the names of its
    provider, channel or computer (the values of a record partly written over)."""
    if record.event_id is None:
        return True
    return any(
        text is not None and not text.isprintable()
        for text in (record.provider, record.channel, record.computer)
    )
