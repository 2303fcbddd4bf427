"""tracerpt XML dumps of ETL traces (`tracerpt x.etl -o x.xml -of XML`, the default).

Sources:
- docs/FORMATS.md ("tracerpt XML"): root `<Events>`, one `<Event
  xmlns="http://schemas.microsoft.com/win/2004/08/events/event">` per record with `<System>`,
  then one of EventData / UserData / DebugData (decoded WPP) / ProcessingErrorData /
  BinaryEventData, then `<RenderingInfo Culture=..>`.
- The event schema (learn.microsoft.com, "EventType complex type", "SystemPropertiesType",
  "RenderingInfoType", "ProcessingErrorDataType", "DebugDataType").
- What tracerpt writes, as seen in public disassembly listings of tracerpt.exe
  (EventXmlDump::DumpHeader / Dump / DumpRenderingInfo / DumpError): `TimeCreated` carries
  either `SystemTime` or, in raw-timestamp mode, `RawTime`; `Execution` has decimal
  ProcessID/ThreadID/ProcessorID and KernelTime/UserTime; an optional
  `<ExtendedTracingInfo xmlns=".../events/trace">` (EventGuid, InstanceID, ParentInstanceID)
  follows RenderingInfo, which may hold `<EventName>` and a `<Map>` of `<Data Name Value>`.
- lxml documentation: `iterparse` with `resolve_entities`, `no_network`, `load_dtd`,
  `huge_tree`; clearing elements while iterating keeps memory flat.

Mapping to TraceRecord: provider = Provider/@Name (else @Guid); event_id = EventID;
level = DebugData LevelName (System Level then goes to
fields["System.Level"]), else System Level; function = DebugData Function; message =
DebugData Message, else RenderingInfo Message; pid/tid/cpu = Execution ProcessID/ThreadID/
ProcessorID; ts = TimeCreated/@SystemTime in UTC, ts_raw = the attribute as found (or
RawTime). fields: EventData `<Data Name>` by name (unnamed ones param1..N, `<Binary>` as
"Binary"); UserData flattened to dotted names ("EventXML.Param1"); DebugData,
ProcessingErrorData items by their own names; "BinaryEventData"; other System values as
"System.<Element>[.<Attribute>]"; RenderingInfo values as "RenderingInfo.<Element>"
(Keywords joined with ", "); ExtendedTracingInfo as "ExtendedTracingInfo.<Element>". A
repeated key gets a "[2]", "[3]"... suffix. Empty elements give None.

Security: the XML parser never expands entities, loads a DTD or touches the network,
whatever the file declares (`resolve_entities=False, no_network=True, load_dtd=False,
huge_tree=False`); an entity reference stays as its literal text ("&name;"). A DOCTYPE is
reported as a non-quarantined issue.

Bad input: a file whose first element is not `<Events>` is not this format (sniff False,
parse raises InvalidSignatureError). A file that breaks (truncated by a killed tracerpt,
corrupted bytes): every complete `<Event>` before the break is kept, then one ParseIssue
with the line and column lxml reports (quarantined when a partial event was lost); the
rest of the file is not read (no resync). A top-level element that is not an `<Event>` of
the event namespace is reported (quarantined) and skipped.

Memory: only `<Event>` start/end events reach Python (iterparse `tag=`); each event is
cleared once read and removed from the root before the next one, so memory does not grow
with the file (the slow test checks peak RSS of a child process on a 50 MB file).

Assumptions [U]:
- A SystemTime without offset is local time of the converting machine: read in
  `options.tz` (FileNote ZONE_ASSUMED).
- Event Viewer's "Save as XML" has the same shape (root `<Events>`); such files are read
  here too, as trace records.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterator
from typing import Any, BinaryIO

from lxml import etree

from caltrail.parsers.base import (
    BUDGET_EXCEEDED,
    ZONE_ASSUMED,
    Budget,
    FileNote,
    Item,
    ParseIssue,
    ParseOptions,
    TraceRecord,
)
from caltrail.parsers.errors import InvalidSignatureError
from caltrail.parsers.textio import decode_head, detect_encoding
from caltrail.parsers.trace.tracetime import excerpt, parse_int, parse_iso

NAME = "tracerpt_xml"
VERSION = "1"

EVENT_NS = "http://schemas.microsoft.com/win/2004/08/events/event"
EVENT_TRACE_GUID = "{68fdd900-4a3e-11d1-84f4-0000f80464e3}"
HEAD_BYTES = 64 * 1024
TAIL_BYTES = 64 * 1024
BUDGET_EVERY = 1000
FEED_BYTES = 64 * 1024

# Declarations, comments and processing instructions that may precede the root element.
_PROLOG_RE = re.compile(
    r"\A(?:\s+|<\?.*?\?>|<!--.*?-->|<!DOCTYPE[^\[>]*(?:\[.*?\])?\s*>)*",
    re.DOTALL,
)
# After the last </Event>: the start (maybe cut short) of an element other than the root.
_ELEMENT_START_RE = re.compile(r"<(?![/?!])(?!(?:\w+:)?Events[\s>/])[A-Za-z_]")
_ROOT_RE = re.compile(r"<(?:[A-Za-z_][\w.-]*:)?Events(?=[\s/>])")


def sniff(head: bytes, name: str) -> bool:
    """True when the first element of `head` is `<Events>` (tracerpt's root)."""
    if head.startswith(b"ElfFile\x00"):
        return False
    text = decode_head(head[:HEAD_BYTES])
    prolog = _PROLOG_RE.match(text)
    start = prolog.end() if prolog else 0
    return _ROOT_RE.match(text, start) is not None


def parse(stream: BinaryIO, options: ParseOptions) -> Iterator[Item]:
    """Yield one TraceRecord per complete `<Event>`, ParseIssues and FileNotes."""
    zone = options.tz
    head = stream.read(HEAD_BYTES)
    if not head.strip():
        raise InvalidSignatureError(
            "offset 0: expected an XML document with root <Events>, found an empty file"
        )
    if not sniff(head, options.file_name):
        shown = excerpt(decode_head(head[:200]), 80)
        raise InvalidSignatureError(
            f"offset 0: expected an XML document whose root element is <Events>, found {shown!r}"
        )
    return _run(_Reader(head, stream), head, zone, options)


class _Reader:
    """A file-like object for lxml: `head`, then the rest of `stream`; keeps the last bytes."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self._head = head
        self._stream = stream
        self.consumed = 0
        self.tail = b""

    def read(self, size: int = -1) -> bytes:
        if self._head:
            n = len(self._head) if size < 0 else size
            data, self._head = self._head[:n], self._head[n:]
        else:
            data = self._stream.read(size if size >= 0 else -1)
        self.consumed += len(data)
        self.tail = (self.tail + data)[-TAIL_BYTES:]
        return data


def _run(reader: _Reader, head: bytes, zone: Any, options: ParseOptions) -> Iterator[Item]:
    head_text = decode_head(head)
    if "<!DOCTYPE" in head_text or "<!ENTITY" in head_text:
        yield ParseIssue(
            kind="dtd_ignored",
            message="the file declares a DTD; it was ignored (no entity expansion, no "
            "external loads); entity references are kept as their literal text",
            quarantined=False,
            line=1,
        )
    # A pull parser fed by us, not iterparse: when the document breaks, iterparse (lxml 6.2)
    # drops the events it had already parsed from its last read buffer, and the events
    # delivered before a break then depend on lxml's buffer size. The pull parser hands over
    # every event before the break, whatever the version (tests/parsers/test_tracerpt_xml.py).
    parser = etree.XMLPullParser(
        events=("start", "end"),
        tag=(f"{{{EVENT_NS}}}Event", "Event"),
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        dtd_validation=False,
        remove_comments=True,
        remove_pis=True,
    )
    state = _State(zone, options)
    budget = Budget(options.max_seconds)
    open_event = False
    events = 0
    done: Any = None  # the last <Event> read (already cleared)
    pulled = _pull(parser, reader)
    root: Any = None
    while True:
        try:
            kind, element = next(pulled)
        except StopIteration as end:
            root = end.value
            break
        except (etree.LxmlError, UnicodeError, LookupError) as exc:
            yield _break_issue(exc, open_event, reader, head, events)
            break
        parent = element.getparent()
        if parent is None or parent.getparent() is not None:
            continue  # the root itself, or an <Event> nested inside an event's data
        if kind == "start":
            open_event = True
            continue
        open_event = False
        yield from _sweep(parent, element, done)
        events += 1
        yield from state.event(element)
        element.clear(keep_tail=False)
        done = element
        if events % BUDGET_EVERY == 0 and budget.exceeded():
            yield ParseIssue(
                kind=BUDGET_EXCEEDED,
                message=f"after {events} events (line {element.sourceline}): stopped after "
                f"{options.max_seconds:g} s (work bound per file); the rest was not read",
                line=element.sourceline,
            )
            return
    if root is not None:
        yield from _sweep(root, None, done)


def _pull(parser: Any, reader: _Reader) -> Generator[tuple[str, Any], None, Any]:
    """The parser's events in document order, fed FEED_BYTES at a time; returns the root.

    Every event parsed before a break is delivered before the break's exception is raised.
    When the data ends inside an element, `close()` fails and libxml2 reports an "end" for
    each element still open: those elements are not complete (their end tags were never in
    the data: any that were had been reported while feeding), so only their starts go on."""
    while True:
        data = reader.read(FEED_BYTES)
        try:
            if data:
                parser.feed(data)
            else:
                root = parser.close()
        except (etree.LxmlError, UnicodeError, LookupError):
            for kind, element in parser.read_events():
                if data or kind == "start":
                    yield kind, element
            raise
        yield from parser.read_events()
        if not data:
            return root


def _sweep(parent: Any, upto: Any, done: Any) -> Iterator[Item]:
    """Delete the children of the root before `upto` (all when None).

    `done` is the last event read (cleared); any other element there was not read (not an
    <Event> of the event namespace) and is reported.
    """
    while len(parent):
        child = parent[0]
        if child is upto:
            return
        if child is not done and isinstance(child.tag, str):
            yield ParseIssue(
                kind="unexpected_element",
                message=f'line {child.sourceline}: expected <Event xmlns="{EVENT_NS}">, '
                f"found <{child.tag}>; skipped",
                line=child.sourceline,
                excerpt=excerpt(etree.tostring(child, encoding="unicode", with_tail=False)),
            )
        del parent[0]


def _break_issue(
    exc: Exception, open_event: bool, reader: _Reader, head: bytes, events: int
) -> ParseIssue:
    """The one issue for a document that breaks: where, and whether an event was lost."""
    codec, _ = detect_encoding(head)
    tail = reader.tail
    if codec.startswith("utf-16") and (reader.consumed - len(tail)) % 2:
        tail = tail[1:]
    tail_text = tail.decode(codec, errors="replace")
    after_last = tail_text.rsplit("</Event>", 1)[-1] if "</Event>" in tail_text else tail_text
    lost = open_event or _ELEMENT_START_RE.search(after_last) is not None
    position = getattr(exc, "position", None)
    line = position[0] if isinstance(position, tuple) and position else None
    column = position[1] if isinstance(position, tuple) and len(position) > 1 else None
    where = f"line {line}, column {column}" if line is not None else "unknown position"
    what = "a partial <Event> was lost" if lost else "no event was open"
    return ParseIssue(
        kind="xml_break",
        message=f"{where}: the XML document breaks ({exc}); {events} complete events "
        f"before it were kept, {what}; the rest of the file (read up to byte "
        f"{reader.consumed}) was not parsed",
        quarantined=lost,
        line=line,
        excerpt=excerpt(after_last[-160:]),
    )


_NAMES: dict[str, str] = {}


def _local(tag: object) -> str:
    """The tag or attribute name without its namespace ("" for comments, entities)."""
    if not isinstance(tag, str):
        return ""
    name = _NAMES.get(tag)
    if name is None:
        name = tag.rsplit("}", 1)[-1]
        if len(_NAMES) < 4096:
            _NAMES[tag] = name
    return name


def _text(element: Any) -> str | None:
    """All text of an element; entity references stay as their literal "&name;"."""
    value = "".join(element.itertext()) if len(element) else element.text
    return value or None


def _put(fields: dict[str, str | None], key: str, value: str | None) -> None:
    if key not in fields:
        fields[key] = value
        return
    n = 2
    while f"{key}[{n}]" in fields:
        n += 1
    fields[f"{key}[{n}]"] = value


def _children(element: Any) -> Iterator[Any]:
    """Element children only (no comments, processing instructions or entity references)."""
    return element.iterchildren(etree.Element)  # type: ignore[no-any-return]


def _flatten(element: Any, path: str, fields: dict[str, str | None]) -> None:
    """Put `element` under dotted `path`: attributes as path.attr, leaves as path."""
    attrib = element.attrib
    if attrib:
        is_data = _local(element.tag) == "Data"
        for attr, value in attrib.items():
            attr_name = _local(attr)
            if not (is_data and attr_name == "Name"):
                _put(fields, f"{path}.{attr_name}", value)
    children = list(_children(element)) if len(element) else []
    if not children:
        if path:
            text = _text(element)
            if text is not None or not attrib:
                _put(fields, path, text)
        return
    for child in children:
        name = _local(child.tag)
        if name == "Data" and child.get("Name"):
            name = str(child.get("Name"))
        _flatten(child, f"{path}.{name}" if path else name, fields)


class _State:
    """Per-file state: zone, notes already given."""

    def __init__(self, zone: Any, options: ParseOptions) -> None:
        self.zone = zone
        self.options = options
        self.tz_noted = False
        self.raw_noted = False

    def event(self, event: Any) -> Iterator[Item]:
        fields: dict[str, str | None] = {}
        rec = TraceRecord.bare(event.sourceline or 0, fields=fields)
        notes: list[Item] = []
        debug_message: str | None = None
        rendering_message: str | None = None
        has_debug_message = False
        unnamed = 0
        for part in _children(event):
            name = _local(part.tag)
            if name == "System":
                notes.extend(self.system(part, rec))
            elif name in ("EventData", "Data"):
                items = _children(part) if name == "EventData" else [part]
                for data in items:
                    data_name = _local(data.tag)
                    if data_name == "Data":
                        key = data.get("Name")
                        if not key:
                            unnamed += 1
                            key = f"param{unnamed}"
                        _put(fields, str(key), _text(data))
                    elif data_name == "Binary":
                        _put(fields, "Binary", _text(data))
                    else:
                        _flatten(data, data_name, fields)
            elif name == "UserData":
                _flatten(part, "", fields)
            elif name == "DebugData":
                for item in _children(part):
                    item_name = _local(item.tag)
                    value = _text(item)
                    if item_name == "Message":
                        debug_message, has_debug_message = value, True
                    elif item_name == "Function":
                        rec.function = value
                    elif item_name == "LevelName":
                        if rec.level is not None:
                            _put(fields, "System.Level", rec.level)
                        rec.level = value
                    else:
                        _flatten(item, item_name, fields)
            elif name == "ProcessingErrorData":
                _flatten(part, "", fields)
            elif name == "BinaryEventData":
                _put(fields, "BinaryEventData", _text(part))
            elif name == "RenderingInfo":
                rendering_message = self.rendering(part, fields)
            else:
                _flatten(part, name, fields)
        if has_debug_message:
            rec.message = debug_message
            if rendering_message is not None:
                _put(fields, "RenderingInfo.Message", rendering_message)
        else:
            rec.message = rendering_message
        guid = (fields.get("System.Provider.Guid") or "").lower()
        if guid == EVENT_TRACE_GUID and fields.get("EventsLost") is not None:
            notes.append(FileNote("events_lost", str(fields["EventsLost"])))
        yield from notes
        yield rec

    def system(self, system: Any, rec: TraceRecord) -> Iterator[Item]:
        fields = rec.fields
        level: str | None = None
        for item in _children(system):
            name = _local(item.tag)
            if name == "Provider":
                rec.provider = item.get("Name") or item.get("Guid")
                for attr, value in item.attrib.items():
                    if _local(attr) != "Name":
                        _put(fields, f"System.Provider.{_local(attr)}", value)
            elif name == "EventID":
                text = _text(item)
                rec.event_id = parse_int(text, 32)  # int32 column
                if rec.event_id is None and text is not None:
                    _put(fields, "System.EventID", text)
                for attr, value in item.attrib.items():
                    _put(fields, f"System.EventID.{_local(attr)}", value)
            elif name == "Level":
                level = _text(item)
            elif name == "TimeCreated":
                yield from self.time_created(item, rec)
            elif name == "Execution":
                for attr, value in item.attrib.items():
                    attr_name = _local(attr)
                    if attr_name == "ProcessID":
                        rec.pid = parse_int(value)
                    elif attr_name == "ThreadID":
                        rec.tid = parse_int(value)
                    elif attr_name == "ProcessorID":
                        rec.cpu = parse_int(value, 32)  # int32 column
                        if rec.cpu is None:
                            _put(fields, "System.Execution.ProcessorID", value)
                    else:
                        _put(fields, f"System.Execution.{attr_name}", value)
            else:
                _flatten(item, f"System.{name}", fields)
        if rec.level is None:
            rec.level = level

    def time_created(self, item: Any, rec: TraceRecord) -> Iterator[Item]:
        system_time = item.get("SystemTime")
        raw_time = item.get("RawTime")
        if system_time is not None:
            rec.ts_raw = system_time
            rec.ts, assumed = parse_iso(system_time, self.zone)
            if assumed and not self.tz_noted:
                self.tz_noted = True
                yield FileNote(ZONE_ASSUMED, "TimeCreated without offset")
            if rec.ts is None:
                yield ParseIssue(
                    kind="bad_timestamp",
                    message=f"line {item.sourceline}: expected an ISO 8601 SystemTime, found "
                    f"{system_time!r}; the record is kept with ts None",
                    quarantined=False,
                    line=item.sourceline,
                    excerpt=excerpt(system_time),
                )
        elif raw_time is not None:
            rec.ts_raw = raw_time
            if not self.raw_noted:
                self.raw_noted = True
                yield FileNote(
                    "clock", "RawTime (tracerpt raw timestamps: ts None, ts_raw the raw value)"
                )

    def rendering(self, info: Any, fields: dict[str, str | None]) -> str | None:
        message: str | None = None
        for attr, value in info.attrib.items():
            _put(fields, f"RenderingInfo.{_local(attr)}", value)
        for item in _children(info):
            name = _local(item.tag)
            if name == "Message":
                message = _text(item)
            elif name == "Keywords":
                words = [_text(k) or "" for k in _children(item)]
                _put(fields, "RenderingInfo.Keywords", ", ".join(words) if words else None)
            else:
                _flatten(item, f"RenderingInfo.{name}", fields)
        return message
