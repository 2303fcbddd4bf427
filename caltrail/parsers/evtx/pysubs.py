"""Fast path of the python backend: BinXML read with `struct`, as python-evtx reads it.

python-evtx builds a node object per BinXML token and per substitution value (each with
several `declare_field` closures), and parses a record's template anew for each record.
Here, per chunk, each template is read once into a skeleton of literal text and
substitution slots (`_TemplateReader`), and each record's root tokens, substitution
declarations and values are read directly from the chunk bytes; each value is printed as
python-evtx's `string()` prints it. The chunk's string table is kept without python-evtx's
objects too (`_Strings`).

The XML must stay python-evtx's string exactly, errors included. So this path only ever
answers when python-evtx would have answered the same: anything it does not mirror
exactly (a structure, a token, a type or a size, a read past the chunk, a value that does
not decode) hands the record, or the nested fragment, to python-evtx, which then gives its
own result or its own error. Except: python-evtx loads its chunk string and template
tables lazily and keeps what it loaded before failing, so an error from a call that
fills those tables is the record's error at once (python-evtx's own rendering fails at
that same call; a retry would find the tables filled and go on); and where python-evtx
would never return (a table chain that loops, some string arrays), the record's error is
LoopsForever.

References: libyal libevtx "Windows XML Event Log (EVTX) format" (binary XML, value
types); python-evtx Evtx/Nodes.py, Evtx/Evtx.py and Evtx/Views.py (what each token and
value type reads and prints, and which sizes `RootNode.substitutions` accepts: a value
whose size differs from its type's length by more than 4 is an error).
"""

from __future__ import annotations

import base64
import datetime as dt
import re
import struct
from collections.abc import Callable
from typing import Any, NamedTuple

from Evtx.BinaryParser import OverrunBufferException, ParseException, parse_filetime
from Evtx.Nodes import get_variant_value
from Evtx.Views import escape_value, validate_name

# BinXML tokens (low nibble; the high nibble holds flags)
_STREAM_START = 0x0F
_TEMPLATE_INSTANCE = 0x0C
_BXML = 0x21  # value type: a nested BinXML fragment (rendered, not escaped)

# Bytes a value type reads; python-evtx rejects a declared size further than 4 from this.
_FIXED = {
    0x03: 1, 0x04: 1, 0x05: 2, 0x06: 2, 0x07: 4, 0x08: 4, 0x09: 8, 0x0A: 8,
    0x0B: 4, 0x0C: 8, 0x0D: 4, 0x0F: 16, 0x11: 8, 0x12: 16, 0x14: 4, 0x15: 8,
}  # fmt: skip
# Types whose length is the declared size (python-evtx is given it): any size is accepted.
_SIZED = {0x00, 0x01, 0x02, 0x0E, 0x10, 0x81}
_SID = 0x13

_INSTANCE = struct.Struct("<BBII")  # token, unknown, template id, template offset
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")
_U64 = struct.Struct("<Q")
_SID_HEAD = struct.Struct(">BBIH")  # revision, sub-authority count, authority (48-bit BE)
_SYSTEMTIME = struct.Struct("<8H")
_GUID_HEAD = struct.Struct("<IHH")
_INTS = {
    0x03: struct.Struct("<b"), 0x04: struct.Struct("<B"), 0x05: struct.Struct("<h"),
    0x06: struct.Struct("<H"), 0x07: struct.Struct("<i"), 0x08: struct.Struct("<I"),
    0x09: struct.Struct("<q"), 0x0A: struct.Struct("<Q"), 0x0B: struct.Struct("<f"),
    0x0C: struct.Struct("<d"),
}  # fmt: skip
_BOOL = struct.Struct("<i")
_DECLS: dict[int, struct.Struct] = {}  # substitution count -> struct of its declarations


class NotHandled(Exception):
    """Not mirrored here: python-evtx renders this record (or fragment)."""


class _Verdict(Exception):
    """python-evtx's own error on a record: passed up unchanged, never retried."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _python_evtx(call: Callable[..., Any], *args: Any) -> Any:
    """A python-evtx call made where python-evtx's own rendering makes it, never to be
    retried: its error is the record's error. (Those that load or add to the chunk's
    string and template tables, see the module's docstring; and python-evtx's renderer.)"""
    try:
        return call(*args)
    except Exception as exc:
        raise _Verdict(exc) from exc


class LoopsForever(Exception):
    """Where python-evtx would loop forever (it has no guard): a chunk table whose chain
    comes back on itself (every record that needs the table gets this error), or a
    string array it would read forever."""


def _template_chain_loop(data: bytes) -> int | None:
    """Where a chain of the chunk's template table comes back on itself, following it as
    python-evtx `ChunkHeader._load_templates` does (a template's token and back pointer
    checked, then its next offset); None if every chain ends."""
    for i in range(32):
        offset = _U32.unpack_from(data, 0x180 + 4 * i)[0]
        chain: set[int] = set()
        while offset > 0:
            if offset in chain:
                return int(offset)
            chain.add(offset)
            try:  # the same reads as python-evtx (it raises where these do)
                token = struct.unpack_from("<B", data, offset - 10)[0]
                pointer = struct.unpack_from("<I", data, offset - 4)[0]
                if token != 0x0C or pointer != offset:
                    break
                offset = _U32.unpack_from(data, offset)[0]
            except struct.error:
                break
    return None


def _decls(count: int) -> struct.Struct:
    """Struct of `count` declarations (size u16, type u8, one unused byte each)."""
    found = _DECLS.get(count)
    if found is None:
        found = struct.Struct("<" + "HBx" * count)
        if count <= 256:  # bounded cache; larger counts are damage or rare
            _DECLS[count] = found
    return found


def _escape(text: str) -> str:
    """`Evtx.Views.escape_value(text)`. Printable ASCII without "&", "<" or ">" (most
    values) is returned as it is, which is what escape_value returns for it."""
    plain = text.isascii() and text.isprintable()
    if plain and "&" not in text and "<" not in text and ">" not in text:
        return text
    return str(escape_value(text))


def _text(type_: int, raw: bytes, size: int) -> str:
    """`escape_value` of python-evtx's `string()` of a value of `type_` whose bytes are
    `raw` (already the exact bytes python-evtx reads). Raises on anything python-evtx
    would not print. Only strings need escaping: what the other types print is ASCII
    letters, digits and "-+.:{}/= " (escape_value returns it unchanged)."""
    if type_ == 0x01:
        return _escape(raw.decode("utf16").rstrip("\x00"))  # the same codec (BOM too)
    if type_ in _INTS:
        return str(_INTS[type_].unpack(raw)[0])
    if type_ == 0x00:
        return ""
    if type_ == 0x14 or type_ == 0x15:
        return "0x" + raw[::-1].hex()
    if type_ == 0x0F:
        d1, d2, d3 = _GUID_HEAD.unpack_from(raw)
        return f"{{{d1:08x}-{d2:04x}-{d3:04x}-{raw[8:10].hex()}-{raw[10:16].hex()}}}"
    if type_ == _SID:
        revision, count, high, low = _SID_HEAD.unpack_from(raw)
        parts = [f"S-{revision}-{(high << 16) ^ low}"]
        parts.extend(str(v) for v in struct.unpack_from(f"<{count}I", raw, 8))
        return "-".join(parts)
    if type_ == 0x11:
        return str(parse_filetime(_U64.unpack(raw)[0]).isoformat(" "))
    if type_ == 0x12:
        p = _SYSTEMTIME.unpack(raw)
        # Naive, and the milliseconds field taken as microseconds: python-evtx's reading,
        # kept so that the text matches it.
        when = dt.datetime(p[0], p[1], p[3], p[4], p[5], p[6], p[7])  # noqa: DTZ001
        return when.isoformat(" ")
    if type_ == 0x0D:
        return "True" if _BOOL.unpack(raw)[0] > 0 else "False"
    if type_ == 0x0E:
        return base64.b64encode(raw).decode("ascii")
    if type_ == 0x02:
        return _escape(raw.decode("ascii").rstrip("\x00"))
    if type_ == 0x10:
        return str((_U32 if size == 4 else _U64).unpack(raw)[0])
    if type_ == 0x81:
        return _escape(_string_array(raw))
    raise NotHandled(f"type 0x{type_:02x}")


_CHARACTERS = re.compile(b"(?:[^\x00].)+")  # a run of UTF-16 units whose first byte is not 0


def _string_array(raw: bytes) -> str:
    """What python-evtx's `WstringArrayTypeNode.string()` prints for `raw`: a
    `<string>` line per string, quirks included. It looks for the first run of units
    whose first byte is not 0 anywhere in what is left, then drops that run's length
    plus a 2-byte terminator from the *start*; then drops leading NULs, one empty string
    per pair (an odd count is its ParseException). When neither step drops anything it
    never returns: LoopsForever here."""
    parts: list[str] = []
    rest = raw
    while rest:
        run = _CHARACTERS.search(rest)
        if run is not None:
            parts.append("<string>" + run.group().decode("utf16") + "</string>\n")
            rest = rest[len(run.group()) + 2 :]
            if not rest:
                break
        nuls = len(rest) - len(rest.lstrip(b"\x00"))
        if nuls % 2:
            raise _Verdict(ParseException("Error parsing uneven substring of NULLs"))
        if run is None and nuls == 0:
            raise _Verdict(LoopsForever("a string array python-evtx would read forever"))
        parts.append("<string></string>\n" * (nuls // 2))
        rest = rest[nuls:]
    return "".join(parts)


class _Node(NamedTuple):
    """A BinXML token of a template, as python-evtx's node tree holds it."""

    token: int  # low nibble of the token byte
    offset: int
    length: int  # python-evtx's `length()`: the token, its name and its children
    children: tuple[_Node, ...]
    ends: bool  # python-evtx's `find_end_of_stream()` finds an end-of-stream token
    # a value's escaped text; a substitution's index; an element's or attribute's name
    # offset (looked up when rendering, as python-evtx does)
    text: str | int = ""


def _parent(token: int, offset: int, head: int, children: tuple[_Node, ...], name: int) -> _Node:
    """An element or attribute token: its head, then its children."""
    return _Node(
        token,
        offset,
        head + sum(c.length for c in children),
        children,
        any(c.token == 0x00 or c.ends for c in children),
        name,
    )


# token -> length, for tokens without children or name: end of stream, close start
# element, close empty element, close element, character reference, stream start
_LEAVES = {0x00: 1, 0x02: 1, 0x03: 1, 0x04: 1, 0x08: 3, 0x0F: 4}
_ELEMENT_ENDS = (0x04, 0x03)  # close element, close empty element
_STREAM_ENDS = (0x00,)
_ELEMENT = struct.Struct("<BHII")  # token, dependency id, size, name offset
_ATTRIBUTE = struct.Struct("<BI")  # token, name offset
_SUBSTITUTION = struct.Struct("<BHB")  # token, index, value type
_VALUE = struct.Struct("<BBH")  # token, value type, characters (a UTF-16 string)


class _Strings:
    """python-evtx's chunk string table (`ChunkHeader._strings`: name offset -> name),
    kept here without its node objects, which cost a fifth of the time.

    python-evtx loads the table from the chunk's hash chains the first time it adds a
    name (`add_string`) or looks the table up empty (`strings()`), then adds each name
    defined inside a template it reads. The same is done here on the offsets alone, and
    the calls python-evtx would have made are noted; before python-evtx itself is used
    on the chunk (`python_evtx()`), they are made on its table, in the same order, and
    its table is used from then on. Where python-evtx's own call would fail (a name past
    the chunk), python-evtx also takes over, so that the failure is its own; where it
    would never return (a chain that loops), the error is LoopsForever."""

    def __init__(self, data: bytes, header: Any) -> None:
        self._data = data
        self._header = header
        self._keys: set[int] | None = None  # None: not loaded yet
        self._calls: list[int] = []  # add_string(offset) calls not made yet; -1: strings()
        self._handed_over = False
        self._loop: LoopsForever | None = None  # python-evtx would never finish loading

    def python_evtx(self) -> None:
        """python-evtx's table from now on, brought to this state by its own calls."""
        if self._loop is not None:
            raise _Verdict(self._loop)
        if not self._handed_over:
            self._handed_over = True
            for offset in self._calls:
                if offset < 0:
                    self._header.strings()
                else:
                    self._header.add_string(offset)
            self._calls.clear()

    def _load(self) -> bool:
        """python-evtx `_load_strings` on the offsets; False where python-evtx fails (it
        then fails itself); LoopsForever where it would never return."""
        data = self._data
        keys = set() if self._keys is None else self._keys
        for i in range(64):
            offset = _U32.unpack_from(data, 0x80 + 4 * i)[0]
            chain: set[int] = set()
            while offset > 0:
                if offset + 8 > len(data):
                    return False  # a name's length past the chunk
                if offset in chain:
                    self._loop = LoopsForever(f"the chunk's string table loops at 0x{offset:x}")
                    raise _Verdict(self._loop)
                chain.add(offset)
                keys.add(offset)
                offset = _U32.unpack_from(data, offset)[0]  # the next name of the chain
        self._keys = keys
        return True

    def add(self, offset: int) -> int:
        """python-evtx `add_string(offset).length()`: the bytes of the name defined at
        `offset`."""
        if self._loop is not None:
            raise _Verdict(self._loop)
        if not self._handed_over:
            loaded = self._keys is not None or self._load()
            if loaded and self._keys is not None and offset + 8 <= len(self._data):
                self._keys.add(offset)
                self._calls.append(offset)
                return 2 * int(_U16.unpack_from(self._data, offset + 6)[0]) + 10
            self.python_evtx()
        return int(_python_evtx(lambda: self._header.add_string(offset).length()))

    def table(self) -> None:
        """python-evtx `strings()`, made before its first name is looked up."""
        if self._loop is not None:
            raise _Verdict(self._loop)
        if not self._handed_over:
            if self._keys or self._load():  # python-evtx loads an empty table again
                self._calls.append(-1)
                return
            self.python_evtx()
        _python_evtx(self._header.strings)

    def name(self, offset: object) -> str:
        """python-evtx `strings()[offset].string()` (after `table()`)."""
        if self._handed_over:
            return str(_python_evtx(self._header.strings)[offset].string())
        if self._keys is None or offset not in self._keys:
            raise KeyError(offset)  # python-evtx's error for a name it does not have
        assert isinstance(offset, int)
        chars = _U16.unpack_from(self._data, offset + 6)[0]
        return self._data[offset + 8 : offset + 8 + 2 * chars].decode("utf16")


class _TemplateReader:
    """A chunk template read token by token as python-evtx's nodes read it (their
    `_children`, `length` and `find_end_of_stream`), and rendered into a skeleton as
    `Evtx.Views.render_root_node_with_subs` renders it.

    Every token but a template instance is read (and a text value only when UTF-16);
    anything else raises NotHandled, and python-evtx reads that template. A name defined
    inside the template is added to the chunk's string table when its token is read,
    and names are looked up there, as python-evtx does."""

    def __init__(self, data: bytes, header: Any) -> None:
        self._data = data
        self._header = header
        self.strings = _Strings(data, header)

    def parse(self, template: int) -> tuple[bool, tuple[_Node, ...]]:
        """(whether python-evtx finds the template's end-of-stream token, its tokens)."""
        children = self._children(template, 0x18, 0, _STREAM_ENDS)
        return any(c.token == 0x00 or c.ends for c in children), children

    def fragment(self, root: int) -> tuple[_Node, ...]:
        """The tokens of the BinXML fragment at `root` (python-evtx `RootNode.children`)."""
        return self._children(root, 0, 0, _STREAM_ENDS)

    def skeleton(self, children: tuple[_Node, ...]) -> tuple[list[str | int], Exception | None]:
        """The template rendered as python-evtx renders it, each substitution left as its
        index; and the error python-evtx meets at the end of that (a name it cannot look
        up or use), else None. python-evtx renders the values before that point first,
        and one of them may fail first: so the error is the skeleton's last item."""
        out: list[str | int] = []
        names = _Names(self.strings, out)
        try:
            for child in children:
                self._emit(child, names, out)
        except (_Verdict, NotHandled):
            raise
        except Exception as exc:
            return merge(out), exc
        return merge(out), None

    def _children(
        self, base: int, start: int, most: int, end_tokens: tuple[int, ...]
    ) -> tuple[_Node, ...]:
        """python-evtx `BXmlNode._children`: tokens from `base + start` until an end
        token, a child holding an end-of-stream token, or `most` children (0: no limit)."""
        found: list[_Node] = []
        pos = base + start
        while True:
            child = self._node(pos)
            found.append(child)
            pos += child.length
            if len(found) == most or child.token in end_tokens or child.ends:
                return tuple(found)

    def _name_length(self, name: int, node: int) -> int:
        """Bytes of the name at `name` inside the token at `node` (0 when the name is
        defined elsewhere); python-evtx adds a name defined here to the chunk's table."""
        if name > node:
            return self.strings.add(name)
        return 0

    def _node(self, pos: int) -> _Node:
        data = self._data
        token = data[pos] & 0x0F
        leaf = _LEAVES.get(token)
        if leaf is not None:
            return _Node(token, pos, leaf, (), False)
        if token == 0x0D or token == 0x0E:
            index = _SUBSTITUTION.unpack_from(data, pos)[1]
            return _Node(token, pos, 4, (), False, index)
        if token == 0x01:
            flags, _, _, name = _ELEMENT.unpack_from(data, pos)
            head = 11 + (4 if flags & 0x40 else 0) + self._name_length(name, pos)
            return _parent(token, pos, head, self._children(pos, head, 0, _ELEMENT_ENDS), name)
        if token == 0x06:
            name = _ATTRIBUTE.unpack_from(data, pos)[1]
            head = 5 + self._name_length(name, pos)
            return _parent(token, pos, head, self._children(pos, head, 1, _STREAM_ENDS), name)
        if token == 0x05:
            _, type_, chars = _VALUE.unpack_from(data, pos)
            if type_ == 0x00:
                # python-evtx's NullTypeNode has no find_end_of_stream: its AttributeError
                null = get_variant_value(data, pos + 2, self._header, None, 0x00)
                _python_evtx(lambda: null.find_end_of_stream())
            if type_ != 0x01 or pos + 4 + 2 * chars > len(data):
                raise NotHandled(f"value type 0x{type_:02x}")
            raw = data[pos + 4 : pos + 4 + 2 * chars]
            text = _escape(raw.decode("utf16").rstrip("\x00"))
            return _Node(token, pos, 4 + 2 * chars, (), False, text)
        if token == 0x07:  # CDATA: its text is read when rendered
            return _Node(token, pos, 3 + _U16.unpack_from(data, pos + 1)[0], (), False)
        if token == 0x09 or token == 0x0A:  # entity reference, processing instruction
            name = _ATTRIBUTE.unpack_from(data, pos)[1]
            return _Node(token, pos, 5 + self._name_length(name, pos), (), False, name)
        if token == 0x0B:  # processing instruction data: read with its token
            chars = _U16.unpack_from(data, pos + 1)[0]
            text = "?>"
            if chars > 0:
                text = " " + data[pos + 3 : pos + 3 + 2 * chars].decode("utf16") + "?>"
            return _Node(token, pos, 3 + 2 * chars, (), False, _escape(text))
        raise NotHandled(f"template token 0x{token:02x}")

    def _emit(self, node: _Node, names: _Names, out: list[str | int]) -> None:
        token = node.token
        if token == 0x01:
            name = names.get(node.text)
            out.append("<" + name)
            for child in node.children:
                if child.token == 0x06:
                    out.append(" " + validate_name(names.get(child.text)) + '="')
                    self._emit(child.children[0], names, out)
                    out.append('"')
            out.append(">")
            for child in node.children:
                self._emit(child, names, out)
            out.append("</" + validate_name(name) + ">\n")
        elif token == 0x05 or token == 0x0D or token == 0x0E or token == 0x0B:
            out.append(node.text)  # escaped text, or a substitution's index
        elif token == 0x07:
            # python-evtx reads (its length - 2) UTF-16 units after the length
            end = node.offset + 3 + 2 * (node.length - 5)
            cdata = self._data[node.offset + 3 : end].decode("utf16")
            out.append("<![CDATA[" + _escape(cdata) + "]]>")
        elif token == 0x09:
            out.append(_escape("&" + names.get(node.text) + ";"))
        elif token == 0x0A:
            out.append(_escape("<?" + names.get(node.text)))
        # end of stream, close tokens, stream start, attributes (done by their element),
        # character references: nothing, as in python-evtx


class _Names:
    """Names from the chunk string table, which is fetched when the first is needed.

    python-evtx fetches the table (loading it when empty) at each name it renders; a
    load that fails is that record's error, and leaves the table partly filled. The one
    fetch here is at the template's first name, as in python-evtx, provided no value
    comes before it (python-evtx would render that value first: not mirrored)."""

    def __init__(self, strings: _Strings, out: list[str | int]) -> None:
        self._strings = strings
        self._out = out
        self._fetched = False

    def get(self, offset: object) -> str:
        if not self._fetched:
            if any(type(item) is int for item in self._out):
                raise NotHandled("a value before the template's first name")
            self._strings.table()
            self._fetched = True
        return self._strings.name(offset)


def merge(parts: list[str | int]) -> list[str | int]:
    """Adjacent literal texts of a skeleton joined into one."""
    merged: list[str | int] = []
    run: list[str] = []
    for item in parts:
        if isinstance(item, str):
            run.append(item)
            continue
        if run:
            merged.append("".join(run))
            run = []
        merged.append(item)
    if run:
        merged.append("".join(run))
    return merged


class ChunkRenderer:
    """Renders the records of one chunk from cached template skeletons (literal text and
    substitution indexes) and values decoded here.

    `header` is python-evtx's ChunkHeader of the same bytes: its template table is
    filled as python-evtx fills it, and its string table brought to python-evtx's state
    before python-evtx renders anything, so that python-evtx sees the same tables. `python(offset)` renders the BinXML root at `offset`
    with python-evtx's own renderer (raising what python-evtx raises)."""

    def __init__(
        self,
        data: bytes,
        header: Any,
        python: Callable[[int], str],
    ) -> None:
        self._data = data
        self._size = len(data)
        self._header = header
        self._skeletons: dict[int, list[str | int]] = {}  # template offset -> skeleton
        self._python = python
        self._reader = _TemplateReader(data, header)
        loop = _template_chain_loop(data)
        self._loop = (
            None
            if loop is None
            else LoopsForever(f"the chunk's template table loops at 0x{loop:x}")
        )
        # template offset -> its tokens, or None: not read here (no end-of-stream token
        # where python-evtx looks for one, or a token not mirrored)
        self._trees: dict[int, tuple[_Node, ...] | None] = {}
        self._texts: dict[tuple[int, bytes], str] = {}  # (type, bytes) -> escaped text

    def render(self, root: int) -> str:
        """The XML of the BinXML root at chunk offset `root` (a record's data starts 24
        bytes after its header). Raises what python-evtx raises on it."""
        try:
            return self._fragment(root)
        except _Verdict as verdict:
            raise verdict.error from None

    def _fragment(self, root: int) -> str:
        """`_render`, or python-evtx's rendering where `_render` does not mirror it (the
        record, or a nested fragment: up to that fragment both did the same)."""
        try:
            return self._render(root)
        except _Verdict:
            raise
        except Exception:  # not mirrored here: python-evtx decides, errors included
            pass
        if self._loop is not None:
            raise _Verdict(self._loop)
        self._reader.strings.python_evtx()
        return str(_python_evtx(self._python, root))

    def _render(self, root: int) -> str:
        data = self._data
        size = self._size
        # RootNode.children(): [StreamStart]? TemplateInstance, and the template must end
        # with an end-of-stream token (python-evtx reads further tokens otherwise).
        pos = root
        if data[pos] & 0x0F == _STREAM_START:
            pos += 4
        token, _, _, template = _INSTANCE.unpack_from(data, pos)
        if token & 0x0F != _TEMPLATE_INSTANCE:
            # Plain elements (or damage): python-evtx fails on such a fragment, reading its
            # tokens or its substitution declarations; read them as it does, for its error
            # without its slow path where the failure is mirrored.
            tokens = self._reader.fragment(root)
            self._declarations(root + sum(t.length for t in tokens))
            raise NotHandled("no template instance")
        pos += 10
        if template > pos - 10:
            # Defined here (python-evtx adds it to the chunk's templates): skip it.
            self._templates(self._header.add_template, template)
            pos += 0x18 + _U32.unpack_from(data, template + 0x14)[0]
        tree = self._template(template)

        # Substitution array: count, declarations (size, type), values back to back.
        flat, pos = self._declarations(pos)
        count = len(flat) // 2
        values: list[tuple[int, int, int]] = []  # (type, offset, bytes read)
        for i in range(0, 2 * count, 2):
            length, type_ = flat[i], flat[i + 1]
            width = _FIXED.get(type_)
            if width is not None:
                if abs(length - width) > 4:
                    raise NotHandled("size")  # python-evtx: Invalid substitution value size
            elif type_ in _SIZED:
                width = length
                if type_ == 0x01:
                    width = length & ~1
                elif type_ == 0x10 and length != 4:
                    width = 8
            elif type_ == _SID:
                width = 8 + 4 * data[pos + 1]
                if abs(length - width) > 4:
                    raise NotHandled("size")
            elif type_ == _BXML and length > 0:
                width = 0  # rendered from its offset (python-evtx trusts its declared size)
            else:
                raise NotHandled(f"type 0x{type_:02x}")  # unknown, or a BinXML to measure
            if pos + width > size:
                raise NotHandled("past the chunk")
            values.append((type_, pos, width))
            pos += length

        skeleton = self._skeletons.get(template)
        error = None
        if skeleton is None:
            skeleton, error = self._reader.skeleton(tree)
            if error is None:
                self._skeletons[template] = skeleton
            # else: not kept, a later record may find the name (tables only grow)
        parts: list[str] = []
        texts = self._texts
        for item in skeleton:
            if type(item) is str:
                parts.append(item)
                continue
            type_, offset, width = values[item]  # type: ignore[index]
            if type_ == _BXML:
                parts.append(self._fragment(offset))
                continue
            raw = data[offset : offset + width]
            text = texts.get((type_, raw))
            if text is None:
                text = _text(type_, raw, width)
                texts[(type_, raw)] = text
            parts.append(text)
        if error is not None:
            raise _Verdict(error)
        return "".join(parts)

    def _templates(self, call: Callable[..., Any], *args: Any) -> Any:
        """A python-evtx call on the chunk's template table (which it loads first)."""
        if self._loop is not None:
            raise _Verdict(self._loop)
        return _python_evtx(call, *args)

    def _declarations(self, pos: int) -> tuple[tuple[int, ...], int]:
        """The substitution declarations at `pos` (count, then size and type of each):
        (size, type, size, type ...), and where the values start."""
        data = self._data
        size = self._size
        if pos + 4 > size:
            raise _Verdict(OverrunBufferException(pos, size))
        count = _U32.unpack_from(data, pos)[0]
        pos += 4
        if pos + 4 * count > size:
            # python-evtx reads each declaration's size (u16) then type (u8) until one
            # runs past the chunk: its error, at that read
            first = max(0, (size - 3 - pos) // 4 + 1)
            if first < count:
                at = pos + 4 * first
                raise _Verdict(OverrunBufferException(at if at + 2 > size else at + 2, size))
            raise NotHandled("declarations past the chunk")
        decls = _decls(count)
        return decls.unpack_from(data, pos), pos + decls.size

    def _template(self, offset: int) -> tuple[_Node, ...]:
        """The tokens of the chunk template at `offset`. Raises NotHandled when they are
        not read here, or the template is not (yet) known to the chunk: python-evtx then
        renders the record, and reports what it finds."""
        if offset in self._trees:
            tree = self._trees[offset]
        else:
            templates = self._templates(self._header.templates)
            if offset not in templates:
                raise NotHandled("template unknown to the chunk")  # a later record may add it
            try:
                ends, tree = self._reader.parse(offset)
            except _Verdict:
                raise
            except Exception:  # a token not mirrored here: python-evtx reads this template
                ends, tree = False, None
            if not ends:
                tree = None  # python-evtx reads on past the template: not mirrored
            self._trees[offset] = tree
        if tree is None:
            raise NotHandled("template not read here")
        return tree
