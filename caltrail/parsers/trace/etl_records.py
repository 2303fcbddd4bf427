"""One record of a raw .etl buffer -> one TraceRecord: the header forms, the clock, and the
payload (decoded by TraceLogging, a user's manifest or a user's TMF files, else kept raw).

`etl.py` walks files and buffers and hands each record's bytes here. Layouts are in
`_etl_structs.py`; docs/ETL.md gives the sources and the mapping to `trace_events`.

Mapping (every record, whatever its header form):
- ts: the record's time stamp converted with the file's clock (TRACE_LOGFILE_HEADER:
  performance counter, system time or CPU cycles) to UTC; ts_raw: the raw 64-bit value;
  fields["ETL.FileTime"]: the converted value as a FILETIME (100 ns, what ts rounds).
- cpu: the processor of the buffer (buffers are per processor); pid, tid: from the header
  (None where the header has none, or says 0xFFFFFFFF).
- provider: the provider name when known (TraceLogging provider traits, the user's
  manifest, the module of a TMF, the kernel group, a few licensing providers), else the
  provider GUID in braces. fields["System.ProviderGuid"]: the GUID.
- event_id, level: the event descriptor's (WPP: message number, the TMF's level name).
- fields: System.* (Version, Channel, Opcode, Task, Keywords, ActivityID, ...), ETL.*
  (Buffer, BufferOffset, RecordOffset, HeaderType, Payload, PayloadSize, DecodeError),
  WPP.* (MessageGuid, Sequence, ComponentId, Arguments), and the decoded payload fields by
  name.
- message: a one-line rendering `EventName: Name=value, ...` for decoded events (WPP with a
  TMF: its formatted message; manifest events with a message string: the formatted string;
  string-only events: the string). None for raw ones.
- raw: True when the payload was not decoded into named fields (kept as hex).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from caltrail.parsers.base import TraceRecord
from caltrail.parsers.trace import _etl_structs as S
from caltrail.parsers.trace import etl_values as V
from caltrail.parsers.trace import tracelogging
from caltrail.parsers.trace.etw_manifest import ManifestSet
from caltrail.parsers.trace.wpp_tmf import TmfSet

_U32 = struct.Struct("<I")
_Q = struct.Struct("<Q")
_NONE_ID = 0xFFFFFFFF
PAYLOAD_HEX_MAX = 16384  # bytes of an undecoded payload kept as hex (the size is kept too)
_FILETIME_PLAUSIBLE = (116444736000000000, 159017088000000000)  # 1970 .. 2105


class RecordError(ValueError):
    """A record whose header cannot be read; the message says where and what."""


@dataclass(slots=True)
class Clock:
    """How a raw time stamp becomes a FILETIME (from TRACE_LOGFILE_HEADER)."""

    kind: int
    start_filetime: int  # StartTime
    anchor: int  # the raw time stamp of the header record, taken to be StartTime
    frequency: int | None  # ticks per second (performance counter or CPU cycles)

    def filetime(self, raw: int) -> int | None:
        if self.kind == S.CLOCK_SYSTEM_TIME:
            return raw
        if not self.frequency:
            return None
        return self.start_filetime + (raw - self.anchor) * 10_000_000 // self.frequency


@dataclass(slots=True)
class LogfileHeader:
    """What the log file header record says about the trace."""

    values: dict[str, str]
    pointer_size: int
    clock: Clock | None
    buffers_written: int
    events_lost: int
    buffers_lost: int
    start_filetime: int
    end_filetime: int


def read_logfile_header(payload: bytes, pointer_size: int, anchor: int) -> LogfileHeader:
    """TRACE_LOGFILE_HEADER (the payload of the first record of a file)."""
    if pointer_size not in S.LOGFILE_TAIL_OFFSET:
        pointer_size = 8
    names_at = S.LOGFILE_NAMES_OFFSET[pointer_size]
    if len(payload) < names_at:
        raise RecordError(f"log file header of {len(payload)} bytes, expected at least {names_at}")
    (buffer_size, version, provider_version, processors, end_time, resolution, max_size,
     mode, buffers_written, _start_buffers, file_pointer_size, events_lost, mhz) = (
        S.LOGFILE_HEAD.unpack_from(payload, 0))  # fmt: skip
    boot, perf_freq, start_time, clock_kind, buffers_lost = S.LOGFILE_TAIL.unpack_from(
        payload, S.LOGFILE_TAIL_OFFSET[pointer_size]
    )
    bias = S.LOGFILE_TIMEZONE_BIAS.unpack_from(payload, S.LOGFILE_TIMEZONE_OFFSET[pointer_size])[0]
    names = bytes(payload[names_at:]).decode("utf-16-le", "replace").split("\x00")
    frequency = {S.CLOCK_QPC: perf_freq, S.CLOCK_CPU_CYCLES: mhz * 1_000_000}.get(clock_kind)
    clock = None
    if clock_kind in S.CLOCK_NAMES and start_time > 0:
        clock = Clock(clock_kind, start_time, anchor, frequency if frequency else None)
    values = {
        "BufferSize": str(buffer_size),
        "Version": f"0x{version:08X}",
        "ProviderVersion": str(provider_version),
        "NumberOfProcessors": str(processors),
        "EndTime": V.filetime_text(end_time),
        "TimerResolution": str(resolution),
        "MaximumFileSize": str(max_size),
        "LogFileMode": f"0x{mode:08X}",
        "BuffersWritten": str(buffers_written),
        "PointerSize": str(file_pointer_size),
        "EventsLost": str(events_lost),
        "CPUSpeed": str(mhz),
        "BootTime": V.filetime_text(boot),
        "PerfFreq": str(perf_freq),
        "StartTime": V.filetime_text(start_time),
        "ReservedFlags": str(clock_kind),
        "BuffersLost": str(buffers_lost),
        "UtcOffsetMinutes": str(-bias),
        "LoggerName": V.clip(names[0]) if names else "",
        "LogFileName": V.clip(names[1]) if len(names) > 1 else "",
    }
    return LogfileHeader(
        values,
        file_pointer_size if file_pointer_size in (4, 8) else pointer_size,
        clock,
        buffers_written,
        events_lost,
        buffers_lost,
        start_time,
        end_time,
    )


@dataclass(slots=True)
class Place:
    """Where a record is: its buffer, its offset in it, the buffer's processor."""

    buffer: int
    buffer_offset: int
    record_offset: int
    cpu: int | None
    line: int


@dataclass(slots=True)
class RecordDecoder:
    """Turns record bytes into TraceRecords; holds what the file's header record said."""

    manifests: ManifestSet | None = None
    tmf: TmfSet | None = None
    header: LogfileHeader | None = None
    clock: Clock | None = None
    pointer_size: int = 8
    counts: dict[str, int] = field(default_factory=dict)  # undecoded reasons, for a note
    warnings: list[str] = field(default_factory=list)  # decode problems of the last record

    # -- common ----------------------------------------------------------------------------

    def _record(
        self, place: Place, raw_ts: int | None, pid: int | None, tid: int | None
    ) -> TraceRecord:
        fields: dict[str, str | None] = {
            "ETL.Buffer": str(place.buffer),
            "ETL.BufferOffset": str(place.buffer_offset),
            "ETL.RecordOffset": str(place.record_offset),
        }
        ts = None
        if raw_ts is not None:
            filetime = self.clock.filetime(raw_ts) if self.clock is not None else None
            if filetime is None and _FILETIME_PLAUSIBLE[0] <= raw_ts < _FILETIME_PLAUSIBLE[1]:
                filetime = raw_ts  # no clock known: a value that reads as a FILETIME is one
            if filetime is not None:
                ts = V.filetime_to_datetime(filetime)
                if ts is not None:
                    fields["ETL.FileTime"] = str(filetime)
        return TraceRecord(
            ts=ts,
            ts_raw=None if raw_ts is None else str(raw_ts),
            cpu=place.cpu,
            pid=None if pid is None or pid == _NONE_ID else pid,
            tid=None if tid is None or tid == _NONE_ID else tid,
            provider=None,
            event_id=None,
            level=None,
            function=None,
            message=None,
            fields=fields,
            line=place.line,
        )

    def _keep_raw(self, record: TraceRecord, payload: bytes, reason: str) -> TraceRecord:
        record.raw = True
        record.fields["ETL.PayloadSize"] = str(len(payload))
        if payload:
            record.fields["ETL.Payload"] = V.hex_text(payload[:PAYLOAD_HEX_MAX])
        self.counts[reason] = self.counts.get(reason, 0) + 1
        return record

    def _failed(self, record: TraceRecord, problem: str) -> None:
        record.fields["ETL.DecodeError"] = problem
        self.warnings.append(problem)

    # -- header forms ----------------------------------------------------------------------

    def decode(self, data: bytes, header_type: int, place: Place) -> TraceRecord:
        """The TraceRecord of one record (`data`: its bytes, exactly its size)."""
        self.warnings = []
        try:
            if header_type in S.KERNEL_TYPES:
                return self._kernel(data, header_type, place)
            if header_type in S.EVENT_TYPES:
                return self._event(data, header_type, place)
            if header_type == S.TYPE_MESSAGE:
                return self._message(data, place)
            if header_type in S.CLASSIC_TYPES:
                return self._classic(data, header_type, place)
        except struct.error as exc:
            raise RecordError(
                f"{S.HEADER_TYPE_NAMES.get(header_type, hex(header_type))} record of "
                f"{len(data)} bytes: {exc}"
            ) from exc
        record = self._record(place, None, None, None)
        record.fields["ETL.HeaderType"] = S.HEADER_TYPE_NAMES.get(
            header_type, f"0x{header_type:02X}"
        )
        return self._keep_raw(record, data, "other header forms")

    def _kernel(self, data: bytes, header_type: int, place: Place) -> TraceRecord:
        layout = S.KERNEL_TYPES[header_type]
        values = layout.unpack_from(data, 0)
        opcode, group = values[4], values[5]
        if layout is S.PERFINFO_HEADER:
            tid = pid = None
            raw_ts = values[6]
        else:
            tid, pid, raw_ts = values[6], values[7], values[8]
        payload = data[layout.size :]
        pointer_size = S.POINTER_SIZE.get(header_type, 8)
        if group == 0 and opcode == 0 and self.header is None:
            self.header = read_logfile_header(payload, pointer_size, raw_ts)
            self.clock = self.header.clock
            self.pointer_size = self.header.pointer_size
        record = self._record(place, raw_ts, pid, tid)
        name, guid = S.KERNEL_GROUPS.get(group, (f"group 0x{group:02X}", None))
        record.provider = f"{S.KERNEL_PROVIDER}/{name}"
        fields = record.fields
        fields["ETL.HeaderType"] = S.HEADER_TYPE_NAMES[header_type]
        if guid:
            fields["System.ProviderGuid"] = guid
        fields["System.Opcode"] = str(opcode)
        if group == 0 and opcode == 0 and self.header is not None:
            fields.update(self.header.values)
            fields["System.EventName"] = "Header"
            record.message = V.render_message("EventTrace Header", self.header.values.items())
            return record
        return self._keep_raw(record, payload, "kernel records (MOF classes are not decoded)")

    def _classic(self, data: bytes, header_type: int, place: Place) -> TraceRecord:
        layout = S.CLASSIC_TYPES[header_type]
        values = layout.unpack_from(data, 0)
        event_type, level, version, tid, pid, raw_ts, guid = values[3:10]
        record = self._record(place, raw_ts, pid, tid)
        guid_text = V.guid_text(guid)
        record.provider = self._provider_name(guid_text)
        record.level = str(level)
        fields = record.fields
        fields["ETL.HeaderType"] = S.HEADER_TYPE_NAMES[header_type]
        fields["System.ProviderGuid"] = guid_text
        fields["System.Opcode"] = str(event_type)
        fields["System.Version"] = str(version)
        if layout is S.INSTANCE_HEADER:
            fields["System.InstanceId"] = str(values[12])
            fields["System.ParentInstanceId"] = str(values[13])
        return self._keep_raw(record, data[layout.size :], "classic (MOF) events")

    def _event(self, data: bytes, header_type: int, place: Place) -> TraceRecord:
        (_size, _type, _flags_byte, flags, _property, tid, pid, raw_ts, guid, event_id,
         version, channel, level, opcode, task, keywords, _cpu_time, activity) = (
            S.EVENT_HEADER.unpack_from(data, 0))  # fmt: skip
        record = self._record(place, raw_ts, pid, tid)
        guid_text = V.guid_text(guid)
        record.event_id = event_id
        record.level = str(level)
        fields = record.fields
        fields["System.ProviderGuid"] = guid_text
        fields["System.Version"] = str(version)
        fields["System.Channel"] = str(channel)
        fields["System.Opcode"] = str(opcode)
        fields["System.Task"] = str(task)
        fields["System.Keywords"] = f"0x{keywords:016X}"
        if activity != bytes(16):
            fields["System.ActivityID"] = V.guid_text(activity)
        pos = S.EVENT_HEADER.size
        schema: bytes | None = None
        traits: bytes | None = None
        if flags & S.EVENT_FLAG_EXTENDED_INFO:
            pos, schema, traits = self._extended(data, pos, fields)
        payload = data[pos:]
        name = tracelogging.provider_name(traits) if traits else None
        record.provider = name or self._provider_name(guid_text)
        if schema is not None:
            return self._tracelogging(record, schema, payload)
        if flags & S.EVENT_FLAG_STRING_ONLY:
            text = payload.decode("utf-16-le", "replace").split("\x00", 1)[0]
            record.message = V.clip(text, 8192)
            return record
        pointer_size = S.POINTER_SIZE.get(header_type, 8)
        if self.manifests is not None:
            decoded = self.manifests.decode(guid_text, event_id, version, payload, pointer_size)
            if decoded is not None:
                record.provider = decoded.provider
                fields["System.EventName"] = decoded.event_name
                for key, value in decoded.pairs:
                    fields.setdefault(key, value)
                record.message = decoded.message
                if decoded.error:
                    self._failed(record, decoded.error)
                return record
        return self._keep_raw(
            record, payload, "manifest events without a manifest (--etw-manifest)"
        )

    def _extended(
        self, data: bytes, pos: int, fields: dict[str, str | None]
    ) -> tuple[int, bytes | None, bytes | None]:
        """Reads the extended data items after an EVENT_HEADER; returns the payload's offset,
        the TraceLogging schema and the provider traits (None when absent)."""
        schema = traits = None
        for _ in range(S.MAX_EXTENDED_ITEMS):
            if pos + S.EXTENDED_ITEM.size > len(data):
                raise RecordError(f"record offset {pos}: extended data item cut short")
            size, ext_type, linkage, data_size = S.EXTENDED_ITEM.unpack_from(data, pos)
            start = pos + S.EXTENDED_ITEM.size
            if (
                size < S.EXTENDED_ITEM.size
                or pos + size > len(data)
                or start + data_size > pos + size
            ):
                raise RecordError(
                    f"record offset {pos}: extended data item of size {size} (data {data_size}) "
                    f"does not fit the record of {len(data)} bytes"
                )
            item = data[start : start + data_size]
            if ext_type == S.EXT_EVENT_SCHEMA_TL:
                schema = item
            elif ext_type == S.EXT_PROV_TRAITS:
                traits = item
            elif ext_type == S.EXT_RELATED_ACTIVITY_ID and len(item) >= 16:
                fields["System.RelatedActivityID"] = V.guid_text(item[:16])
            elif ext_type == S.EXT_SID and V.sid_size(item, 0) is not None:
                fields["System.UserID"] = V.sid_text(item)
            elif ext_type == S.EXT_TS_ID and len(item) >= 4:
                fields["System.SessionID"] = str(_U32.unpack_from(item, 0)[0])
            pos += size
            if not linkage & 1:
                return pos, schema, traits
        raise RecordError(f"more than {S.MAX_EXTENDED_ITEMS} extended data items")

    def _tracelogging(self, record: TraceRecord, metadata: bytes, payload: bytes) -> TraceRecord:
        fields = record.fields
        try:
            schema = tracelogging.schema_of(metadata)
        except tracelogging.TraceLoggingError as exc:
            self._failed(record, f"TraceLogging metadata: {exc}")
            return self._keep_raw(record, payload, "TraceLogging events with damaged metadata")
        fields["System.EventName"] = schema.event_name
        pairs, problem = tracelogging.decode(schema, payload)
        for key, value in pairs:
            fields.setdefault(key, value)
        record.message = V.render_message(schema.event_name, pairs)
        if problem:
            self._failed(record, f"TraceLogging payload: {problem}")
            fields["ETL.Payload"] = V.hex_text(payload[:PAYLOAD_HEX_MAX])
        return record

    def _message(self, data: bytes, place: Place) -> TraceRecord:
        _size, _reserved, _flags, number, options = S.MESSAGE_HEADER.unpack_from(data, 0)
        pos = S.MESSAGE_HEADER.size
        sequence = component = message_guid = None
        raw_ts = tid = pid = None
        if options & S.MESSAGE_SEQUENCE:
            sequence = _U32.unpack_from(data, pos)[0]
            pos += 4
        if options & S.MESSAGE_GUID:
            if len(data) < pos + 16:
                raise RecordError(f"message record of {len(data)} bytes: GUID cut short")
            message_guid = V.guid_text(data[pos : pos + 16])
            pos += 16
        elif options & S.MESSAGE_COMPONENT_ID:
            component = _U32.unpack_from(data, pos)[0]
            pos += 4
        if options & (S.MESSAGE_TIMESTAMP | S.MESSAGE_PERFORMANCE_TIMESTAMP):
            raw_ts = _Q.unpack_from(data, pos)[0]
            pos += 8
        if options & S.MESSAGE_SYSTEMINFO:
            tid, pid = struct.unpack_from("<II", data, pos)
            pos += 8
        args = data[pos:]
        record = self._record(place, raw_ts, pid, tid)
        record.event_id = number
        fields = record.fields
        fields["ETL.HeaderType"] = "message"
        if message_guid:
            fields["WPP.MessageGuid"] = message_guid
        if sequence is not None:
            fields["WPP.Sequence"] = str(sequence)
        if component is not None:
            fields["WPP.ComponentId"] = str(component)
        pointer_size = (
            8
            if options & S.MESSAGE_POINTER64
            else 4
            if options & S.MESSAGE_POINTER32
            else self.pointer_size
        )
        if self.tmf is not None and message_guid:
            decoded = self.tmf.decode(message_guid, number, args, pointer_size)
            if decoded is not None:
                record.provider = decoded.module
                record.function = decoded.function
                record.level = decoded.level
                record.message = decoded.message
                for key, value in decoded.pairs:
                    fields.setdefault(key, value)
                if decoded.error:
                    self._failed(record, decoded.error)
                    fields["WPP.Arguments"] = V.hex_text(args[:PAYLOAD_HEX_MAX])
                return record
        record.provider = f"{{{message_guid}}}" if message_guid else None
        record.message = (
            f"Unknown({number}): GUID={message_guid or f'component {component}'} "
            "(No Format Information found)."
        )
        record.raw = True
        fields["WPP.Arguments"] = V.hex_text(args[:PAYLOAD_HEX_MAX])
        self.counts["WPP messages without their TMF (--tmf)"] = (
            self.counts.get("WPP messages without their TMF (--tmf)", 0) + 1
        )
        return record

    def _provider_name(self, guid: str) -> str:
        name = self.manifests.provider_name(guid) if self.manifests is not None else None
        return name or S.KNOWN_PROVIDERS.get(guid) or f"{{{guid}}}"


__all__ = ["Clock", "LogfileHeader", "Place", "RecordDecoder", "RecordError", "read_logfile_header"]
