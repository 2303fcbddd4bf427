"""WPP trace message format (TMF) files (`--tmf DIR`): formatting the WPP messages of raw
.etl files as tracefmt would.

A WPP message in an .etl holds a message GUID, a message number and its arguments' bytes;
the words and the argument types are only in the component's TMF files (made from its PDB
by tracepdb; usually private). Without them the message is kept with its GUID and raw
arguments.

Sources (docs/ETL.md): the WDK documentation ("Trace Message Format File", "Tracefmt",
"What are the WPP extended format specification strings?"), the TMF files tracepdb writes,
and the public defaultwpp.ini of the WDK (the Item types and their sizes).

A TMF file: comment lines (`// PDB: ...`), a line `<message GUID> <module> // SRC=...`,
then per message
    #typev <file_line> <number> "<format>" // LEVEL=<level> FLAGS=<flags> FUNC=<function>
    {
    <expression>, Item<Type>[(<values>)] -- <argument number>
    }
The format uses `%0` (tracefmt's prefix: dropped), `%N!spec!` (argument N, numbered from
10, printf `spec`), `%!NAME!` (a value of the comment: FUNC, LEVEL, FLAGS) and `%%`.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from functools import lru_cache

from caltrail.parsers.errors import ParseError
from caltrail.parsers.trace import etl_values as V

_GUID_LINE = re.compile(
    r"^\s*([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})\s+(\S+)"
)
_TYPEV = re.compile(r'^\s*#typev\s+(\S+)\s+(\d+)\s+"(.*)"\s*(?://(.*))?$')
_ARG = re.compile(r"^\s*(.*?),\s*Item(\w+)(?:\((.*)\))?\s*--\s*(\d+)\s*$")
_TAIL_KEY = re.compile(r"\b(LEVEL|FLAGS|FUNC)=(\S+)")
_INSERT = re.compile(r"%(\d+)!([^!]*)!|%!(\w+)!|%%")
_SPEC = re.compile(
    r"^([-+ #0]*)(\d*)(?:\.(\d+))?(?:hh|h|ll|l|I64|I32|I|w|z|L)?([diouxXcsSpeEfgGZ])$"
)
MAX_TMF_BYTES = 16 * 1024 * 1024

# Fixed-size item types: (struct format, signed, how to render by default).
_FIXED: dict[str, tuple[str, str]] = {
    "Char": ("<b", "d"),
    "UChar": ("<B", "u"),
    "Short": ("<h", "d"),
    "UShort": ("<H", "u"),
    "Long": ("<i", "d"),
    "ULong": ("<I", "u"),
    "LongLong": ("<q", "d"),
    "ULongLong": ("<Q", "u"),
    "LongLongX": ("<q", "x"),
    "LongLongXX": ("<q", "x"),
    "ULongLongX": ("<Q", "x"),
    "ULongLongXX": ("<Q", "x"),
    "Double": ("<d", "g"),
    "NTSTATUS": ("<I", "status"),
    "HRESULT": ("<I", "status"),
    "WINERROR": ("<I", "status"),
    "IPAddr": ("<I", "ipv4"),
    "Port": ("<H", "port"),
    "ListLong": ("<I", "list"),
    "ListByte": ("<B", "list"),
    "ListShort": ("<H", "list"),
    "SetLong": ("<I", "set"),
    "SetByte": ("<B", "set"),
    "SetShort": ("<H", "set"),
    "Enum": ("<I", "list"),
    "Timestamp": ("<Q", "filetime"),
    "Bool": ("<i", "bool"),
}


class TmfError(ParseError):
    """TMF files that define no message (the message says which)."""


@dataclass(frozen=True, slots=True)
class Arg:
    name: str
    item: str  # the type after "Item", e.g. "Long", "WString", "ListLong"
    values: tuple[str, ...]  # names of ListLong/SetLong/Enum values


@dataclass(frozen=True, slots=True)
class Message:
    module: str
    source: str
    format: str
    level: str | None
    flags: str | None
    function: str | None
    args: tuple[Arg, ...]


@dataclass(frozen=True, slots=True)
class Decoded:
    module: str
    message: str
    function: str | None
    level: str | None
    pairs: list[tuple[str, str | None]]
    error: str | None


@dataclass
class TmfSet:
    """Every message of the user's TMF files, by (message GUID, number)."""

    messages: dict[tuple[str, int], Message] = field(default_factory=dict)

    def decode(self, guid: str, number: int, data: bytes, pointer_size: int) -> Decoded | None:
        """The message formatted with its arguments; None when no TMF describes it."""
        message = self.messages.get((guid, number))
        if message is None:
            return None
        values: list[object] = []
        pairs: list[tuple[str, str | None]] = []
        error = None
        pos = 0
        for arg in message.args:
            try:
                value, pos = _read_arg(arg, data, pos, pointer_size)
            except (ValueError, struct.error, IndexError) as exc:
                error = f"TMF argument {len(values) + 1} ({arg.name}, Item{arg.item}): {exc}"
                break
            values.append(value)
            pairs.append((f"WPP.Arg{len(values)}", _plain(value, arg, pointer_size)))
        if error is None and pos < len(data):
            error = f"{len(data) - pos} argument bytes after the TMF's last argument"
        text = _format(message, values, pointer_size)
        pairs.append(("WPP.Source", message.source))
        if message.flags:
            pairs.append(("WPP.Flags", message.flags))
        return Decoded(message.module, text, message.function, message.level, pairs, error)


def _read_arg(arg: Arg, data: bytes, pos: int, pointer_size: int) -> tuple[object, int]:
    item = arg.item
    fixed = _FIXED.get(item)
    if fixed is not None:
        layout = struct.Struct(fixed[0])
        return layout.unpack_from(data, pos)[0], pos + layout.size
    if item == "Ptr":
        layout = struct.Struct("<Q" if pointer_size == 8 else "<I")
        return layout.unpack_from(data, pos)[0], pos + layout.size
    if item in ("String", "WString", "RString", "RWString"):
        unit = 2 if "W" in item else 1
        end = V.find_terminator(data, pos, unit)
        if end < 0:
            raise ValueError(f"offset {pos}: string not terminated")
        text = data[pos:end].decode("utf-16-le" if unit == 2 else "cp1252", "replace")
        return text, end + unit
    if item in ("PString", "PWString", "HEXDump", "HEXBYTES"):
        size = struct.unpack_from("<H", data, pos)[0]
        if pos + 2 + size > len(data):
            raise ValueError(f"offset {pos}: {size} bytes announced, {len(data) - pos - 2} left")
        raw = data[pos + 2 : pos + 2 + size]
        if item == "PString":
            return raw.decode("cp1252", "replace"), pos + 2 + size
        if item == "PWString":
            return raw.decode("utf-16-le", "replace"), pos + 2 + size
        return V.hex_text(raw), pos + 2 + size
    if item == "Guid":
        if pos + 16 > len(data):
            raise ValueError(f"offset {pos}: GUID cut short")
        return V.guid_text(data[pos : pos + 16]), pos + 16
    if item == "Sid":
        size = V.sid_size(data, pos)
        if size is None:
            raise ValueError(f"offset {pos}: SID cut short")
        return V.sid_text(data[pos : pos + size]), pos + size
    raise ValueError(f"type Item{item} is not read")


def _plain(value: object, arg: Arg, pointer_size: int) -> str:
    """An argument's value on its own (fields["WPP.ArgN"])."""
    kind = _FIXED.get(arg.item, ("", ""))[1]
    if not isinstance(value, int):
        return value if isinstance(value, str) else repr(value)
    if kind == "status":
        return f"0x{value & 0xFFFFFFFF:08X}"
    if kind in ("x",) or arg.item == "Ptr":
        return f"0x{value & 0xFFFFFFFFFFFFFFFF:X}"
    if kind == "ipv4":
        return V.ipv4_text(value)
    if kind == "port":
        return str(int.from_bytes(value.to_bytes(2, "little"), "big"))
    if kind == "filetime":
        return V.filetime_text(value)
    if kind == "bool":
        return "true" if value else "false"
    if kind == "list" and 0 <= value < len(arg.values):
        return arg.values[value]
    if kind == "set" and arg.values:
        names = [name for bit, name in enumerate(arg.values) if value >> bit & 1]
        return "|".join(names) if names else "0"
    return str(value)


def _format(message: Message, values: list[object], pointer_size: int) -> str:
    tail = {"FUNC": message.function, "LEVEL": message.level, "FLAGS": message.flags}

    def insert(match: re.Match[str]) -> str:
        if match.group(0) == "%%":
            return "%"
        if match.group(3):
            return tail.get(match.group(3)) or match.group(0)
        index = int(match.group(1)) - 10
        if not 0 <= index < len(values):
            return match.group(0)
        return _printf(match.group(2), values[index], message.args[index], pointer_size)

    text = (
        message.format.replace("%0", "", 1) if message.format.startswith("%0") else message.format
    )
    return V.clip(_INSERT.sub(insert, text), 8192)


def _printf(spec: str, value: object, arg: Arg, pointer_size: int) -> str:
    """`value` rendered by a printf conversion (`08x`, `d`, `s`, `I64u`, ...); a value of a
    type the conversion does not fit is rendered as itself."""
    plain = _plain(value, arg, pointer_size)
    match = _SPEC.match(spec)
    if (
        match is None
        or not isinstance(value, int | float)
        or _FIXED.get(arg.item, ("", ""))[1]
        in ("list", "set", "status", "ipv4", "port", "filetime", "bool")
    ):
        return plain
    flags, width, precision, conversion = match.groups()
    if conversion in "sSZc":
        return (
            chr(value)
            if conversion == "c" and isinstance(value, int) and 0 <= value < 0x110000
            else plain
        )
    if conversion == "p":
        return (
            f"{value & 0xFFFFFFFFFFFFFFFF:0{pointer_size * 2}X}"
            if isinstance(value, int)
            else plain
        )
    if isinstance(value, float) and conversion not in "eEfgG":
        return plain
    if isinstance(value, int) and conversion in "eEfgG":
        value = float(value)
    if isinstance(value, int) and conversion in "uxXo" and value < 0:
        bits = struct.calcsize(_FIXED.get(arg.item, ("<q", ""))[0]) * 8
        value &= (1 << bits) - 1
    python = {"i": "d", "u": "d"}.get(conversion, conversion)
    try:
        return ("%" + flags + width + (f".{precision}" if precision else "") + python) % value
    except (TypeError, ValueError, OverflowError):
        return plain


def read_tmf(name: str, data: bytes, into: TmfSet | None = None) -> TmfSet:
    """The messages of one TMF file (added to `into` when given)."""
    tmf = into if into is not None else TmfSet()
    if len(data) > MAX_TMF_BYTES:
        return tmf
    text = data.decode("utf-8-sig", "replace")
    if "\x00" in text[:200]:
        text = data.decode("utf-16", "replace")
    guid = module = None
    lines = iter(text.splitlines())
    for line in lines:
        if guid is None or not line.lstrip().startswith("#typev"):
            found = _GUID_LINE.match(line)
            if found and not line.lstrip().startswith("//"):
                guid, module = found.group(1).lower(), found.group(2)
            continue
        typev = _TYPEV.match(line)
        if typev is None or module is None:
            continue
        source, number, format_, comment = typev.groups()
        keys = dict(_TAIL_KEY.findall(comment or ""))
        args: list[Arg] = []
        for arg_line in lines:
            stripped = arg_line.strip()
            if stripped == "}":
                break
            found_arg = _ARG.match(arg_line)
            if found_arg:
                values = tuple(
                    v.strip() for v in (found_arg.group(3) or "").split(",") if v.strip()
                )
                args.append(Arg(found_arg.group(1).strip(), found_arg.group(2), values))
        tmf.messages[(guid, int(number))] = Message(
            module,
            source,
            format_,
            keys.get("LEVEL"),
            keys.get("FLAGS"),
            keys.get("FUNC"),
            tuple(args),
        )
    return tmf


@lru_cache(maxsize=8)
def load_tmf(files: tuple[tuple[str, bytes], ...]) -> TmfSet:
    """One TmfSet of every file (cached: every .etl file of a run uses it)."""
    tmf = TmfSet()
    for name, data in files:
        read_tmf(name, data, tmf)
    return tmf


__all__ = ["Decoded", "TmfError", "TmfSet", "load_tmf", "read_tmf"]
