"""Text renderings of the values ETW events carry, shared by the TraceLogging, manifest and
WPP decoders (`tracelogging.py`, `etw_manifest.py`, `wpp_tmf.py`), and the one-line message
an event without a message of its own gets.

A value is always rendered as text (the lake's `fields` column is MAP<VARCHAR, VARCHAR>):
- FILETIME: ISO 8601 in UTC with the full 100 ns precision, `2021-09-09T14:59:35.7934380Z`;
  0 and values past year 9999 as their number.
- SYSTEMTIME: ISO 8601 without a zone (it is whatever clock the writer read), milliseconds;
  a `Z` only when the field says it is UTC. Impossible dates as the eight numbers.
- GUID: lower case, without braces. SID: `S-1-5-18`.
- Booleans: `true` / `false` (as the event schema's xs:boolean, and tracerpt).
- Binary: lower-case hex without separators.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import struct
import uuid
from collections.abc import Iterable

FILETIME_EPOCH = dt.datetime(1601, 1, 1, tzinfo=dt.UTC)
# The last FILETIME a datetime holds (9999-12-31).
FILETIME_MAX = 2650467743999999999
_SYSTEMTIME = struct.Struct("<8H")
_MESSAGE_MAX_CHARS = 8192
_VALUE_MAX_CHARS = 2048


def filetime_text(value: int) -> str:
    """A FILETIME as ISO 8601 UTC (7 fractional digits); out of range: the number."""
    if value <= 0 or value > FILETIME_MAX:
        return str(value)
    when = FILETIME_EPOCH + dt.timedelta(microseconds=value // 10)
    return f"{when:%Y-%m-%dT%H:%M:%S}.{value % 10_000_000:07d}Z"


def filetime_to_datetime(value: int) -> dt.datetime | None:
    """A FILETIME as an aware UTC datetime (microseconds), or None when out of range."""
    if value <= 0 or value > FILETIME_MAX:
        return None
    return FILETIME_EPOCH + dt.timedelta(microseconds=value // 10)


def systemtime_text(data: bytes, utc: bool = False) -> str:
    """A 16-byte SYSTEMTIME as ISO 8601 (milliseconds); impossible values as the numbers."""
    year, month, _weekday, day, hour, minute, second, millis = _SYSTEMTIME.unpack(data)
    try:
        when = dt.datetime(year, month, day, hour, minute, second, millis * 1000)  # noqa: DTZ001
    except ValueError:
        return "SYSTEMTIME(" + ",".join(map(str, _SYSTEMTIME.unpack(data))) + ")"
    return f"{when:%Y-%m-%dT%H:%M:%S}.{millis:03d}" + ("Z" if utc else "")


def guid_text(data: bytes) -> str:
    """A GUID stored in Windows byte order (the first three groups little-endian)."""
    return str(uuid.UUID(bytes_le=bytes(data)))


def sid_size(data: bytes | memoryview, offset: int) -> int | None:
    """The size of the SID at `offset` (8 + 4 per sub-authority), or None when cut short."""
    if offset + 8 > len(data):
        return None
    size = 8 + 4 * data[offset + 1]
    return size if offset + size <= len(data) else None


def sid_text(data: bytes) -> str:
    """A binary SID as `S-R-A-S1-S2...`."""
    revision, count = data[0], data[1]
    authority = int.from_bytes(data[2:8], "big")
    subs = struct.unpack_from(f"<{count}I", data, 8)
    return "-".join(["S", str(revision), str(authority), *map(str, subs)])


def hex_text(data: bytes | memoryview) -> str:
    return bytes(data).hex()


def ipv4_text(value: int) -> str:
    """A UINT32 holding an IPv4 address in network order (as stored: a.b.c.d bytes)."""
    return str(ipaddress.IPv4Address(struct.pack("<I", value)))


def ipv6_text(data: bytes) -> str:
    return str(ipaddress.IPv6Address(bytes(data))) if len(data) == 16 else hex_text(data)


def sockaddr_text(data: bytes) -> str:
    """A SOCKADDR_IN / SOCKADDR_IN6 as `address:port`; anything else as hex."""
    if len(data) >= 8 and data[0:2] == b"\x02\x00":  # AF_INET
        port = int.from_bytes(data[2:4], "big")
        return f"{ipaddress.IPv4Address(bytes(data[4:8]))}:{port}"
    if len(data) >= 24 and data[0:2] == b"\x17\x00":  # AF_INET6
        port = int.from_bytes(data[2:4], "big")
        return f"[{ipaddress.IPv6Address(bytes(data[8:24]))}]:{port}"
    return hex_text(data)


def find_terminator(data: bytes, start: int, unit: int) -> int:
    """The offset of the first NUL character (1 or 2 bytes, aligned to `unit` from
    `start`) at or after `start`, or -1."""
    nul = b"\x00" * unit
    at = data.find(nul, start)
    while at >= 0 and (at - start) % unit:
        at = data.find(nul, at + 1)
    return at


def clip(text: str, limit: int = _VALUE_MAX_CHARS) -> str:
    """`text`, cut at `limit` characters with a marker saying how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} characters)"


# Characters after which a bare Key=value rendering would end early for the trace patterns
# (queries/trace_patterns.csv: bare values stop at blanks, `,;"'()[]{}<>|`): such values
# are quoted.
_NEEDS_QUOTES = frozenset(" \t\r\n,;\"'()[]{}<>|=")


def quote_value(value: str) -> str:
    """`value` as it goes into a one-line `Name=value` rendering: bare when it is one word,
    else in double quotes (single quotes when it holds a double quote); line breaks become
    spaces."""
    if value and _NEEDS_QUOTES.isdisjoint(value):
        return value
    flat = value.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    if '"' not in flat:
        return f'"{flat}"'
    if "'" not in flat:
        return f"'{flat}'"
    return '"' + flat.replace('"', "'") + '"'


def render_message(title: str | None, pairs: Iterable[tuple[str, str | None]]) -> str:
    """One line: `Title: Name=value, Name2="two words"` (values quoted as the trace patterns
    read them), at most a few thousand characters."""
    parts = [f"{name}={quote_value(value)}" for name, value in pairs if value is not None]
    body = ", ".join(parts)
    text = f"{title}: {body}" if title and body else (title or body)
    return clip(text, _MESSAGE_MAX_CHARS)
