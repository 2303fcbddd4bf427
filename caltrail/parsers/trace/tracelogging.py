"""TraceLogging: self-describing ETW events, decoded into named fields.

A TraceLogging event carries its own schema in an extended data item of the event header
(type EVENT_HEADER_EXT_TYPE_EVENT_SCHEMA_TL) and its provider's name in another (provider
traits). This module reads that metadata and decodes the payload with it. Pure: bytes in,
(name, text) pairs out.

Sources: TraceLoggingProvider.h of the Windows SDK (the `TlgIn_t` / `TlgOut_t` enums and the
metadata layout), the TraceLogging Rust crate of microsoft/tracelogging (the documented
meaning of each in-type and out-type) and .NET's EventSource encoder
(System.Diagnostics.Tracing FieldMetadata.Encode, which writes the same layout). See
docs/ETL.md.

Event metadata: UINT16 total size; tags (1 to 4 bytes, bit 7 set while more follow); the
event name (UTF-8, NUL-terminated); then one entry per field: its name (UTF-8, NUL), an
in-type byte (bits 0-4 the type; 0x20 constant count, 0x40 variable count, 0x60 custom;
0x80 an out-type byte follows), the out-type byte (bits 0-6; 0x80 tags follow), tags, a
UINT16 constant count (0x20) or a UINT16 size and that many bytes of type information
(0x60). A struct is an in-type 24 field whose out-type slot holds the number of fields that
follow it and belong to it.

Payload: the fields in order; a variable-count field starts with a UINT16 count; strings are
NUL-terminated (in-types 1, 2) or UINT16 byte-counted (22, 23); binary is UINT16
byte-counted (14, 25); a custom field is a UINT16 byte count and the bytes.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

from caltrail.parsers.trace import etl_values as V

# In-types (TlgIn_t).
IN_NULL = 0
IN_UNICODESTRING = 1
IN_ANSISTRING = 2
IN_INT8 = 3
IN_UINT8 = 4
IN_INT16 = 5
IN_UINT16 = 6
IN_INT32 = 7
IN_UINT32 = 8
IN_INT64 = 9
IN_UINT64 = 10
IN_FLOAT = 11
IN_DOUBLE = 12
IN_BOOL32 = 13
IN_BINARY = 14
IN_GUID = 15
IN_POINTER_UNSUPPORTED = 16
IN_FILETIME = 17
IN_SYSTEMTIME = 18
IN_SID = 19
IN_HEXINT32 = 20
IN_HEXINT64 = 21
IN_COUNTEDSTRING = 22
IN_COUNTEDANSISTRING = 23
IN_STRUCT = 24
IN_COUNTEDBINARY = 25

IN_TYPE_MASK = 0x1F
IN_COUNT_MASK = 0x60
IN_CCOUNT = 0x20
IN_VCOUNT = 0x40
IN_CUSTOM = 0x60
IN_CHAIN = 0x80
OUT_TYPE_MASK = 0x7F
OUT_CHAIN = 0x80

# Out-types (TlgOut_t) that change a rendering.
OUT_STRING = 2
OUT_BOOLEAN = 3
OUT_HEX = 4
OUT_PORT = 7
OUT_IPV4 = 8
OUT_IPV6 = 9
OUT_SOCKETADDRESS = 10
OUT_XML = 11
OUT_JSON = 12
OUT_WIN32ERROR = 13
OUT_NTSTATUS = 14
OUT_HRESULT = 15
OUT_UTF8 = 35
OUT_DATETIME_UTC = 38

_FIXED: dict[int, struct.Struct] = {
    IN_INT8: struct.Struct("<b"),
    IN_UINT8: struct.Struct("<B"),
    IN_INT16: struct.Struct("<h"),
    IN_UINT16: struct.Struct("<H"),
    IN_INT32: struct.Struct("<i"),
    IN_UINT32: struct.Struct("<I"),
    IN_INT64: struct.Struct("<q"),
    IN_UINT64: struct.Struct("<Q"),
    IN_FLOAT: struct.Struct("<f"),
    IN_DOUBLE: struct.Struct("<d"),
    IN_BOOL32: struct.Struct("<i"),
    IN_HEXINT32: struct.Struct("<I"),
    IN_HEXINT64: struct.Struct("<Q"),
    IN_FILETIME: struct.Struct("<Q"),
}
_U16 = struct.Struct("<H")
MAX_VALUES = 10_000  # values one event may yield (arrays of structs of arrays...)
MAX_DEPTH = 16  # structs in structs
_CACHE_LIMIT = 4096


class TraceLoggingError(ValueError):
    """Metadata or payload that cannot be read; the message says where and what."""


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a TraceLogging event (a struct holds its members in `members`)."""

    name: str
    in_type: int
    out_type: int
    count: int  # IN_CCOUNT / IN_VCOUNT / IN_CUSTOM flag, or 0 for a scalar
    fixed_count: int
    members: tuple[Field, ...] = ()


@dataclass(frozen=True, slots=True)
class Schema:
    """An event's name and fields, as its metadata describes them."""

    event_name: str
    fields: tuple[Field, ...]


_schemas: dict[bytes, Schema] = {}


def schema_of(metadata: bytes) -> Schema:
    """The schema of an EVENT_SCHEMA_TL item (cached: a trace repeats a few schemas)."""
    schema = _schemas.get(metadata)
    if schema is None:
        schema = _parse_metadata(metadata)
        if len(_schemas) >= _CACHE_LIMIT:
            _schemas.clear()
        _schemas[metadata] = schema
    return schema


def provider_name(traits: bytes) -> str | None:
    """The provider name of a PROV_TRAITS item: UINT16 size, then the NUL-terminated name."""
    if len(traits) < 3:
        return None
    end = traits.find(b"\x00", 2)
    name = traits[2 : end if end >= 0 else len(traits)]
    return name.decode("utf-8", "replace") or None


def _cstring(data: bytes, pos: int, what: str) -> tuple[str, int]:
    end = data.find(b"\x00", pos)
    if end < 0:
        raise TraceLoggingError(f"metadata offset {pos}: {what} is not NUL-terminated")
    return data[pos:end].decode("utf-8", "replace"), end + 1


def _skip_tags(data: bytes, pos: int) -> int:
    for _ in range(4):
        if pos >= len(data):
            raise TraceLoggingError(f"metadata offset {pos}: tags cut short")
        more = data[pos] & 0x80
        pos += 1
        if not more:
            return pos
    return pos


def _parse_metadata(metadata: bytes) -> Schema:
    if len(metadata) < 4:
        raise TraceLoggingError(f"metadata of {len(metadata)} bytes, expected at least 4")
    size = _U16.unpack_from(metadata, 0)[0]
    data = metadata[: min(size, len(metadata))] if size >= 4 else metadata
    pos = _skip_tags(data, 2)
    event_name, pos = _cstring(data, pos, "the event name")
    flat: list[tuple[Field, int]] = []  # (field, number of struct members that follow)
    while pos < len(data):
        name, pos = _cstring(data, pos, "a field name")
        if pos >= len(data):
            raise TraceLoggingError(f"metadata offset {pos}: field {name!r} has no in-type")
        in_byte = data[pos]
        pos += 1
        out_type = 0
        if in_byte & IN_CHAIN:
            if pos >= len(data):
                raise TraceLoggingError(f"metadata offset {pos}: field {name!r} lacks its out-type")
            out_byte = data[pos]
            pos += 1
            out_type = out_byte & OUT_TYPE_MASK
            if out_byte & OUT_CHAIN:
                pos = _skip_tags(data, pos)
        count = in_byte & IN_COUNT_MASK
        fixed = 0
        if count in (IN_CCOUNT, IN_CUSTOM):
            if pos + 2 > len(data):
                raise TraceLoggingError(f"metadata offset {pos}: field {name!r} lacks its count")
            fixed = _U16.unpack_from(data, pos)[0]
            pos += 2
            if count == IN_CUSTOM:
                pos += fixed  # type information of a custom serializer: not used
        in_type = in_byte & IN_TYPE_MASK
        members = out_type if in_type == IN_STRUCT else 0
        flat.append((Field(name, in_type, out_type, count, fixed), members))
    fields, _used = _nest(flat, 0, len(flat), 0)
    return Schema(event_name, tuple(fields))


def _nest(
    flat: list[tuple[Field, int]], start: int, want: int, depth: int
) -> tuple[list[Field], int]:
    """The first `want` fields from `start` with their struct members nested (a struct's
    members are the fields that follow it)."""
    if depth > MAX_DEPTH:
        raise TraceLoggingError(f"structs nested deeper than {MAX_DEPTH}")
    out: list[Field] = []
    pos = start
    while pos < len(flat) and len(out) < want:
        field, members = flat[pos]
        pos += 1
        if field.in_type == IN_STRUCT:
            inner, pos = _nest(flat, pos, members, depth + 1)
            field = Field(
                field.name, field.in_type, 0, field.count, field.fixed_count, tuple(inner)
            )
        out.append(field)
    return out, pos


class _Reader:
    """Decodes one payload; `values` counts what was produced (bounded by MAX_VALUES)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.values = 0

    def take(self, size: int, what: str) -> bytes:
        end = self.pos + size
        if end > len(self.data):
            raise TraceLoggingError(
                f"payload offset {self.pos}: {what} needs {size} bytes, {len(self.data) - self.pos} left"
            )
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def count(self, field: Field) -> int:
        if field.count == IN_CCOUNT:
            return field.fixed_count
        return int(_U16.unpack(self.take(2, f"the count of {field.name!r}"))[0])

    def field(self, field: Field, prefix: str, out: list[tuple[str, str | None]]) -> None:
        name = prefix + field.name
        if field.count in (IN_CCOUNT, IN_VCOUNT):
            items = self.count(field)
            if field.in_type == IN_STRUCT:
                for index in range(items):
                    self.struct(field, f"{name}[{index}].", out)
                return
            texts = [self.value(field) for _ in range(items)]
            if field.out_type == OUT_STRING and field.in_type in (IN_INT8, IN_UINT8, IN_UINT16):
                out.append((name, "".join(texts).split("\x00", 1)[0]))  # an array of chars
            else:
                out.append((name, json.dumps(texts, ensure_ascii=False)))
            return
        if field.in_type == IN_STRUCT:
            self.struct(field, name + ".", out)
            return
        out.append((name, self.value(field)))

    def struct(self, field: Field, prefix: str, out: list[tuple[str, str | None]]) -> None:
        for member in field.members:
            self.field(member, prefix, out)

    def value(self, field: Field) -> str:
        self.values += 1
        if self.values > MAX_VALUES:
            raise TraceLoggingError(f"more than {MAX_VALUES} values in one event")
        in_type, out_type = field.in_type, field.out_type
        if field.count == IN_CUSTOM:
            size = _U16.unpack(self.take(2, f"the size of {field.name!r}"))[0]
            return V.hex_text(self.take(size, field.name))
        fixed = _FIXED.get(in_type)
        if fixed is not None:
            number = fixed.unpack(self.take(fixed.size, field.name))[0]
            return _number_text(in_type, out_type, number)
        if in_type == IN_UNICODESTRING:
            return self.terminated(2, field).decode("utf-16-le", "replace")
        if in_type == IN_ANSISTRING:
            return _ansi(self.terminated(1, field), out_type)
        if in_type in (IN_COUNTEDSTRING, IN_COUNTEDANSISTRING, IN_BINARY, IN_COUNTEDBINARY):
            size = _U16.unpack(self.take(2, f"the size of {field.name!r}"))[0]
            chunk = self.take(size, field.name)
            if in_type == IN_COUNTEDSTRING:
                return chunk.decode("utf-16-le", "replace")
            if in_type == IN_COUNTEDANSISTRING:
                return _ansi(chunk, out_type)
            return _binary_text(chunk, out_type)
        if in_type == IN_GUID:
            return V.guid_text(self.take(16, field.name))
        if in_type == IN_SYSTEMTIME:
            return V.systemtime_text(self.take(16, field.name), utc=out_type == OUT_DATETIME_UTC)
        if in_type == IN_SID:
            size = V.sid_size(self.data, self.pos)
            if size is None:
                raise TraceLoggingError(f"payload offset {self.pos}: SID {field.name!r} cut short")
            return V.sid_text(self.take(size, field.name))
        raise TraceLoggingError(f"field {field.name!r}: in-type {in_type} cannot be decoded")

    def terminated(self, unit: int, field: Field) -> bytes:
        """A NUL-terminated string of `unit`-byte characters (without the NUL)."""
        pos = self.pos
        end = V.find_terminator(self.data, pos, unit)
        if end < 0:
            raise TraceLoggingError(f"payload offset {pos}: string {field.name!r} is not terminated")
        self.pos = end + unit
        return self.data[pos:end]


def _number_text(in_type: int, out_type: int, number: int | float) -> str:
    if in_type == IN_FILETIME:
        return V.filetime_text(int(number))
    if in_type in (IN_FLOAT, IN_DOUBLE):
        return format(number, ".9g") if in_type == IN_FLOAT else repr(number)
    if in_type == IN_BOOL32 or out_type == OUT_BOOLEAN:
        return "true" if number else "false"
    value = int(number)
    if in_type in (IN_HEXINT32, IN_HEXINT64) or out_type == OUT_HEX:
        return f"0x{value & 0xFFFFFFFFFFFFFFFF:X}"
    if out_type in (OUT_WIN32ERROR, OUT_NTSTATUS, OUT_HRESULT):
        return f"0x{value & 0xFFFFFFFF:08X}"
    if out_type == OUT_STRING and in_type in (IN_INT8, IN_UINT8, IN_UINT16):
        return chr(value & 0xFFFF if in_type == IN_UINT16 else value & 0xFF)
    if out_type == OUT_PORT and in_type == IN_UINT16:
        return str(int.from_bytes(value.to_bytes(2, "little"), "big"))
    if out_type == OUT_IPV4 and in_type == IN_UINT32:
        return V.ipv4_text(value)
    return str(value)


def _ansi(data: bytes, out_type: int) -> str:
    if out_type in (OUT_UTF8, OUT_XML, OUT_JSON):
        return data.decode("utf-8", "replace")
    return data.decode("cp1252", "replace")


def _binary_text(data: bytes, out_type: int) -> str:
    if out_type == OUT_IPV6:
        return V.ipv6_text(data)
    if out_type == OUT_SOCKETADDRESS:
        return V.sockaddr_text(data)
    return V.hex_text(data)


def decode(schema: Schema, payload: bytes) -> tuple[list[tuple[str, str | None]], str | None]:
    """The payload's fields as (name, text) pairs, in order; struct members are named
    `Struct.Member`, array elements of structs `Array[0].Member`, other arrays are one JSON
    list. Returns the pairs read and None, or the pairs read before a problem and its
    description (the event is still kept)."""
    reader = _Reader(payload)
    out: list[tuple[str, str | None]] = []
    try:
        for field in schema.fields:
            reader.field(field, "", out)
    except TraceLoggingError as exc:
        return out, str(exc)
    if reader.pos < len(payload):
        return out, f"{len(payload) - reader.pos} payload bytes after the last field"
    return out, None


__all__ = ["Field", "Schema", "TraceLoggingError", "decode", "provider_name", "schema_of"]
