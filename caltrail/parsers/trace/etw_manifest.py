"""Instrumentation manifests (`--etw-manifest FILE`): decoding manifest-based ETW events of
raw .etl files into named fields and their message.

A manifest-based event carries only its provider GUID, event id and version; what its
payload holds is in the provider's instrumentation manifest (the `.man` XML its developers
compile into the binary), which a user may have (from the product's SDK, or exported with
`wevtutil gp PROVIDER /ge /gm`). Without it the event is kept raw (hex).

Sources (docs/ETL.md): the EventManifest schema (learn.microsoft.com "EventManifest
Schema": provider, event, template, data, struct, valueMap, bitMap, stringTable) and the
in-types of winmeta.xml ("InputType complex type").

Read: `<provider guid name>`; its `<event value version template symbol task opcode
message>`; `<template tid>` with `<data name inType outType map length count>` and
`<struct name count length>`; `<valueMap>` / `<bitMap>` with `<map value message>`; the
`<stringTable>` of the first `<resources>` (en-US when there is one) for `$(string.ID)`.
Security: no entities, no DTD, no network (lxml with resolve_entities=False).
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from lxml import etree

from caltrail.parsers.errors import ParseError
from caltrail.parsers.trace import etl_values as V

MAX_VALUES = 10_000
MAX_MANIFEST_BYTES = 64 * 1024 * 1024

_FIXED: dict[str, struct.Struct] = {
    "Int8": struct.Struct("<b"),
    "UInt8": struct.Struct("<B"),
    "Int16": struct.Struct("<h"),
    "UInt16": struct.Struct("<H"),
    "Int32": struct.Struct("<i"),
    "UInt32": struct.Struct("<I"),
    "Int64": struct.Struct("<q"),
    "UInt64": struct.Struct("<Q"),
    "HexInt32": struct.Struct("<I"),
    "HexInt64": struct.Struct("<Q"),
    "Float": struct.Struct("<f"),
    "Double": struct.Struct("<d"),
    "Boolean": struct.Struct("<i"),
    "FILETIME": struct.Struct("<Q"),
}
_POINTERS = {4: struct.Struct("<I"), 8: struct.Struct("<Q")}
_HEX_OUT = {"HexInt8", "HexInt16", "HexInt32", "HexInt64", "HResult", "Win32Error", "NTSTATUS"}
_STRING_RE = re.compile(r"\$\(string\.([^)]+)\)")
_INSERT_RE = re.compile(r"%(\d+)(?:!([^!]*)!)?|%([nt%])")


class ManifestError(ParseError):
    """A file given as a manifest that is not one (the message says why)."""


class DecodeError(ValueError):
    """A payload that does not fit its template."""


@dataclass(frozen=True, slots=True)
class Data:
    """A `<data>` or `<struct>` of a template."""

    name: str
    in_type: str  # without its prefix ("UInt32"); "struct" for a struct
    out_type: str
    map_name: str | None
    length: int | str | None  # a number, or the name of an earlier field
    count: int | str | None
    members: tuple[Data, ...] = ()


@dataclass(frozen=True, slots=True)
class EventDef:
    provider: str
    name: str
    template: tuple[Data, ...]
    message: str | None


@dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded event: provider name, event name, fields, message, problem (or None)."""

    provider: str
    event_name: str
    pairs: list[tuple[str, str | None]]
    message: str | None
    error: str | None


@dataclass
class ManifestSet:
    """Every provider and event of the user's manifests."""

    providers: dict[str, str] = field(default_factory=dict)  # guid -> name
    events: dict[tuple[str, int, int], EventDef] = field(default_factory=dict)
    maps: dict[tuple[str, str], tuple[bool, dict[int, str]]] = field(default_factory=dict)

    def provider_name(self, guid: str) -> str | None:
        return self.providers.get(guid)

    def decode(
        self, guid: str, event_id: int, version: int, payload: bytes, pointer_size: int
    ) -> Decoded | None:
        """The event decoded by its template; None when no manifest describes it."""
        event = self.events.get((guid, event_id, version))
        if event is None:
            return None
        reader = _Reader(payload, pointer_size, self.maps, guid)
        pairs: list[tuple[str, str | None]] = []
        error = None
        try:
            for data in event.template:
                reader.item(data, "", pairs)
            if reader.pos < len(payload):
                error = f"{len(payload) - reader.pos} payload bytes after the template's last field"
        except (DecodeError, struct.error, ValueError) as exc:
            error = f"manifest template: {exc}"
        message = None
        if event.message is not None:
            top = [reader.top.get(d.name) for d in event.template]
            message = V.clip(_format_message(event.message, top), 8192)
        else:
            message = V.render_message(event.name, pairs)
        return Decoded(event.provider, event.name, pairs, message, error)


def _format_message(template: str, values: list[str | None]) -> str:
    def insert(match: re.Match[str]) -> str:
        if match.group(3):
            return {"n": "\n", "t": "\t", "%": "%"}[match.group(3)]
        index = int(match.group(1)) - 1
        if 0 <= index < len(values):
            return values[index] or ""
        return match.group(0)

    return _INSERT_RE.sub(insert, template).strip()


class _Reader:
    def __init__(
        self,
        data: bytes,
        pointer_size: int,
        maps: dict[tuple[str, str], tuple[bool, dict[int, str]]],
        guid: str,
    ) -> None:
        self.data = data
        self.pos = 0
        self.pointer = _POINTERS.get(pointer_size, _POINTERS[8])
        self.maps = maps
        self.guid = guid
        self.values = 0
        self.numbers: dict[str, int] = {}  # earlier fields by name, for length= / count=
        self.top: dict[str, str | None] = {}  # top-level values by name, for the message

    def take(self, size: int, name: str) -> bytes:
        if size < 0 or self.pos + size > len(self.data):
            raise DecodeError(
                f"payload offset {self.pos}: {name!r} needs {size} bytes, {len(self.data) - self.pos} left"
            )
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def resolve(self, value: int | str | None, name: str) -> int | None:
        if value is None or isinstance(value, int):
            return value
        if value not in self.numbers:
            raise DecodeError(f"{name!r} refers to {value!r}, which is not an earlier number")
        return self.numbers[value]

    def item(self, data: Data, prefix: str, out: list[tuple[str, str | None]]) -> None:
        name = prefix + data.name
        count = self.resolve(data.count, data.name)
        if data.in_type == "struct":
            for index in range(count if count is not None else 1):
                inner = f"{name}[{index}]." if count is not None else f"{name}."
                for member in data.members:
                    self.item(member, inner, out)
            return
        if count is not None:
            texts = [self.value(data) for _ in range(count)]
            text: str | None = json.dumps(texts, ensure_ascii=False)
        else:
            text = self.value(data)
        out.append((name, text))
        if not prefix:
            self.top[data.name] = text

    def value(self, data: Data) -> str:
        self.values += 1
        if self.values > MAX_VALUES:
            raise DecodeError(f"more than {MAX_VALUES} values")
        kind, name = data.in_type, data.name
        fixed = _FIXED.get(kind)
        if fixed is not None or kind == "Pointer":
            layout = fixed or self.pointer
            number = layout.unpack(self.take(layout.size, name))[0]
            if isinstance(number, int) and kind != "FILETIME":
                self.numbers[name] = number
            return self.number_text(data, number)
        length = self.resolve(data.length, name)
        if kind in ("UnicodeString", "AnsiString"):
            unit = 2 if kind == "UnicodeString" else 1
            if length is not None:
                raw = self.take(length * unit, name)
            else:
                raw = self.terminated(unit, name)
            text = raw.decode("utf-16-le" if unit == 2 else "cp1252", "replace")
            return text.split("\x00", 1)[0]
        if kind == "Binary":
            raw = self.take(length if length is not None else len(self.data) - self.pos, name)
            if data.out_type == "IPv6":
                return V.ipv6_text(raw)
            if data.out_type == "SocketAddress":
                return V.sockaddr_text(raw)
            return V.hex_text(raw)
        if kind == "GUID":
            return V.guid_text(self.take(16, name))
        if kind == "SYSTEMTIME":
            return V.systemtime_text(self.take(16, name))
        if kind == "SID":
            size = V.sid_size(self.data, self.pos)
            if size is None:
                raise DecodeError(f"payload offset {self.pos}: SID {name!r} cut short")
            return V.sid_text(self.take(size, name))
        raise DecodeError(f"{name!r}: in-type {kind!r} is not read")

    def terminated(self, unit: int, name: str) -> bytes:
        end = V.find_terminator(self.data, self.pos, unit)
        if end < 0:
            raise DecodeError(f"payload offset {self.pos}: string {name!r} is not terminated")
        chunk = self.data[self.pos : end]
        self.pos = end + unit
        return chunk

    def number_text(self, data: Data, number: int | float) -> str:
        kind, out = data.in_type, data.out_type
        if kind == "FILETIME":
            return V.filetime_text(int(number))
        if isinstance(number, float):
            return format(number, ".9g") if kind == "Float" else repr(number)
        if kind == "Boolean":
            return "true" if number else "false"
        if data.map_name is not None:
            entry = self.maps.get((self.guid, data.map_name))
            if entry is not None:
                is_bits, names = entry
                if not is_bits and number in names:
                    return names[number]
                if is_bits:
                    set_bits = [text for bit, text in names.items() if bit and number & bit == bit]
                    if set_bits:
                        return "|".join(set_bits)
        if kind in ("HexInt32", "HexInt64", "Pointer") or out in _HEX_OUT:
            return (
                f"0x{number:X}"
                if out not in ("HResult", "Win32Error", "NTSTATUS")
                else f"0x{number & 0xFFFFFFFF:08X}"
            )
        if out == "IPv4":
            return V.ipv4_text(number)
        if out == "Port":
            return str(int.from_bytes(number.to_bytes(2, "little"), "big"))
        return str(number)


def _local(element: Any) -> str:
    tag = element.tag
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _children(element: Any, name: str) -> list[Any]:
    return [child for child in element if _local(child) == name]


def _number(text: str | None) -> int | None:
    if text is None or not text.strip():
        return None
    try:
        return int(text.strip(), 0)
    except ValueError:
        return None


def read_manifest(data: bytes, into: ManifestSet | None = None) -> ManifestSet:
    """The providers, events and maps of one manifest (added to `into` when given).
    Raises ManifestError when the bytes are not a manifest that defines a provider."""
    manifests = into if into is not None else ManifestSet()
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(
            f"a manifest of {len(data):,} bytes is larger than {MAX_MANIFEST_BYTES:,}"
        )
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        remove_comments=True,
    )
    try:
        root = etree.fromstring(data, parser)
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise ManifestError(f"not an XML document: {exc}") from exc
    strings: dict[str, str] = {}
    resources = [e for e in root.iter() if _local(e) == "resources"]
    resources.sort(key=lambda e: 0 if (e.get("culture") or "").lower() == "en-us" else 1)
    for element in resources[:1]:
        for string in element.iter():
            string_id = string.get("id")
            if _local(string) == "string" and string_id is not None:
                strings[str(string_id)] = string.get("value") or ""

    def text(value: str | None) -> str | None:
        if value is None:
            return None
        return _STRING_RE.sub(lambda m: strings.get(m.group(1), m.group(0)), value)

    providers = [e for e in root.iter() if _local(e) == "provider" and e.get("guid")]
    if not providers:
        raise ManifestError("no <provider guid=...> element: not an instrumentation manifest")
    for provider in providers:
        _read_provider(provider, manifests, text)
    return manifests


def _read_provider(provider: Any, manifests: ManifestSet, text: Any) -> None:
    guid = provider.get("guid").strip("{} ").lower()
    name = provider.get("name") or f"{{{guid}}}"
    manifests.providers[guid] = name
    for map_element in provider.iter():
        kind = _local(map_element)
        if kind in ("valueMap", "bitMap") and map_element.get("name"):
            entries: dict[int, str] = {}
            for entry in _children(map_element, "map"):
                value = _number(entry.get("value"))
                if value is not None:
                    entries[value] = (text(entry.get("message")) or "").strip()
            manifests.maps[(guid, map_element.get("name"))] = (kind == "bitMap", entries)
    templates: dict[str, tuple[Data, ...]] = {}
    for template in provider.iter():
        if _local(template) == "template" and template.get("tid"):
            templates[template.get("tid")] = tuple(_data_items(template))
    for event in provider.iter():
        if _local(event) != "event":
            continue
        event_id = _number(event.get("value"))
        if event_id is None:
            continue
        version = _number(event.get("version")) or 0
        task, opcode = event.get("task"), event.get("opcode")
        label = (
            event.get("symbol")
            or "/".join(p.split(":")[-1] for p in (task, opcode) if p)
            or f"Event{event_id}"
        )
        message = text(event.get("message"))
        manifests.events[(guid, event_id, version)] = EventDef(
            name, label, templates.get(event.get("template") or "", ()), message
        )


def _data_items(parent: Any) -> list[Data]:
    items: list[Data] = []
    for child in parent:
        kind = _local(child)
        if kind not in ("data", "struct"):
            continue
        length = child.get("length")
        count = child.get("count")
        items.append(
            Data(
                name=child.get("name") or f"param{len(items) + 1}",
                in_type="struct"
                if kind == "struct"
                else (child.get("inType") or "").split(":")[-1],
                out_type=(child.get("outType") or "").split(":")[-1],
                map_name=child.get("map"),
                length=_number(length) if _number(length) is not None else length,
                count=_number(count) if _number(count) is not None else count,
                members=tuple(_data_items(child)) if kind == "struct" else (),
            )
        )
    return items


@lru_cache(maxsize=8)
def load_manifests(blobs: tuple[bytes, ...]) -> ManifestSet:
    """One ManifestSet of several manifests (cached: every .etl file of a run uses it)."""
    manifests = ManifestSet()
    for blob in blobs:
        read_manifest(blob, manifests)
    return manifests


__all__ = ["Decoded", "ManifestError", "ManifestSet", "load_manifests", "read_manifest"]
