"""Layouts of the binary ETL format (Event Trace Log, what `logman`, `netsh trace`, TSS and
MSRD-Collect bring back), as data. The logic that walks them is in `etl.py`.

Sources (docs/ETL.md says which fact comes from where):
- Microsoft docs: EVENT_TRACE_HEADER, EVENT_HEADER, EVENT_DESCRIPTOR, TRACE_LOGFILE_HEADER,
  EVENT_HEADER_EXTENDED_DATA_ITEM, WNODE_HEADER ("ClientContext" clock types).
- Geoff Chappell, "ETW" studies (WMI_BUFFER_HEADER, ETW_BUFFER_CONTEXT, the trace header
  types and their markers, SYSTEM_TRACE_HEADER, PERFINFO_TRACE_HEADER, the hook ids).
- ntwmi.h / evntrace.h as published in the Windows SDK and WDK (TRACE_MESSAGE_* flags).
- The kernel's MOF classes (learn.microsoft.com, "MSNT_SystemTrace" and its children) for the
  GUID of each kernel event group.

Every number is little-endian.
"""

from __future__ import annotations

import struct

# -- buffers -------------------------------------------------------------------------------

# WMI_BUFFER_HEADER, 0x48 bytes: BufferSize, SavedOffset, CurrentOffset, ReferenceCount,
# TimeStamp, SequenceNumber, (clock / list entry), ETW_BUFFER_CONTEXT (processor, logger id),
# State, Offset (bytes filled, header included), BufferFlag, BufferType, 16 bytes of
# reference time / padding.
BUFFER_HEADER = struct.Struct("<IIIiqqQHHIIHH16x")
BUFFER_HEADER_SIZE = BUFFER_HEADER.size  # 0x48

BUFFER_FLAG_FLUSH_MARKER = 0x0001
BUFFER_FLAG_EVENTS_LOST = 0x0002
BUFFER_FLAG_BUFFER_LOST = 0x0004
BUFFER_FLAG_PROC_INDEX = 0x0020  # ETW_BUFFER_CONTEXT holds a 16-bit processor index
BUFFER_FLAG_COMPRESSED = 0x0040  # the bytes after the header are LZXpress (plain LZ77)

BUFFER_TYPE_HEADER = 4
BUFFER_TYPE_NAMES = {
    0: "generic",
    1: "rundown",
    2: "context swap",
    3: "reference time",
    4: "header",
    5: "batched",
    6: "empty marker",
    7: "debug info",
}

# Buffers are at most 64 MiB here: ETW's largest buffer is far smaller (1 MiB in the
# documented EVENT_TRACE_PROPERTIES limits); a larger size read from a file is damage, and
# never sizes an allocation.
MAX_BUFFER_SIZE = 64 * 1024 * 1024

# -- records -------------------------------------------------------------------------------

# The first 32-bit word of every record: for the "trace headers" its byte 2 is the header
# type and byte 3 the marker flags (TRACE_HEADER_FLAG 0x80 | TRACE_HEADER_EVENT_TRACE 0x40);
# a WPP TraceMessage record has flags 0x90 (TRACE_HEADER_FLAG | TRACE_MESSAGE) instead.
MARKER_FLAGS_HEADER = 0xC0
MARKER_FLAGS_MESSAGE = 0x90
PADDING_MARKER = 0xFFFFFFFF  # unused space at the end of a buffer
RECORD_ALIGNMENT = 8

TYPE_SYSTEM32 = 0x01
TYPE_SYSTEM64 = 0x02
TYPE_COMPACT32 = 0x03
TYPE_COMPACT64 = 0x04
TYPE_FULL_HEADER32 = 0x0A
TYPE_INSTANCE32 = 0x0B
TYPE_TIMED = 0x0C
TYPE_ERROR = 0x0D
TYPE_WNODE_HEADER = 0x0E
TYPE_MESSAGE = 0x0F
TYPE_PERFINFO32 = 0x10
TYPE_PERFINFO64 = 0x11
TYPE_EVENT_HEADER32 = 0x12
TYPE_EVENT_HEADER64 = 0x13
TYPE_FULL_HEADER64 = 0x14
TYPE_INSTANCE64 = 0x15

HEADER_TYPE_NAMES = {
    TYPE_SYSTEM32: "system32",
    TYPE_SYSTEM64: "system64",
    TYPE_COMPACT32: "compact32",
    TYPE_COMPACT64: "compact64",
    TYPE_FULL_HEADER32: "full32",
    TYPE_INSTANCE32: "instance32",
    TYPE_TIMED: "timed",
    TYPE_ERROR: "error",
    TYPE_WNODE_HEADER: "wnode",
    TYPE_MESSAGE: "message",
    TYPE_PERFINFO32: "perfinfo32",
    TYPE_PERFINFO64: "perfinfo64",
    TYPE_EVENT_HEADER32: "event32",
    TYPE_EVENT_HEADER64: "event64",
    TYPE_FULL_HEADER64: "full64",
    TYPE_INSTANCE64: "instance64",
}
POINTER_SIZE = {
    TYPE_SYSTEM32: 4,
    TYPE_COMPACT32: 4,
    TYPE_FULL_HEADER32: 4,
    TYPE_INSTANCE32: 4,
    TYPE_PERFINFO32: 4,
    TYPE_EVENT_HEADER32: 4,
}  # every other type: 8

# Kernel records (the system logger): the size is a 16-bit field at offset 4, the first
# 16 bits are a version; the hook id (opcode, group) follows the size.
# SYSTEM_TRACE_HEADER: Version, HeaderType, MarkerFlags, Size, HookId, ThreadId, ProcessId,
# SystemTime, KernelTime/UserTime.
SYSTEM_HEADER = struct.Struct("<HBBHBBIIqQ")  # 0x20
# COMPACT: the same without the processor times.
COMPACT_HEADER = struct.Struct("<HBBHBBIIq")  # 0x18
# PERFINFO_TRACE_HEADER: Version, HeaderType, MarkerFlags, Size, HookId, SystemTime.
PERFINFO_HEADER = struct.Struct("<HBBHBBq")  # 0x10
KERNEL_TYPES = {
    TYPE_SYSTEM32: SYSTEM_HEADER,
    TYPE_SYSTEM64: SYSTEM_HEADER,
    TYPE_COMPACT32: COMPACT_HEADER,
    TYPE_COMPACT64: COMPACT_HEADER,
    TYPE_PERFINFO32: PERFINFO_HEADER,
    TYPE_PERFINFO64: PERFINFO_HEADER,
}

# EVENT_HEADER as stored in a buffer (0x50): Size, HeaderType, MarkerFlags, Flags,
# EventProperty, ThreadId, ProcessId, TimeStamp, ProviderId, EVENT_DESCRIPTOR (Id, Version,
# Channel, Level, Opcode, Task, Keyword), KernelTime/UserTime (or ProcessorTime),
# ActivityId.
EVENT_HEADER = struct.Struct("<HBBHHIIq16sHBBBBHQQ16s")  # 0x50
EVENT_TYPES = (TYPE_EVENT_HEADER32, TYPE_EVENT_HEADER64)

EVENT_FLAG_EXTENDED_INFO = 0x0001
EVENT_FLAG_STRING_ONLY = 0x0004
EVENT_FLAG_TRACE_MESSAGE = 0x0008
EVENT_FLAG_CLASSIC_HEADER = 0x0100

# An extended data item before the user data: its size (aligned, the 8 bytes of this header
# included), its type, a linkage word (bit 0: another item follows), the data size.
EXTENDED_ITEM = struct.Struct("<HHHH")
EXT_RELATED_ACTIVITY_ID = 0x0001
EXT_SID = 0x0002
EXT_TS_ID = 0x0003
EXT_INSTANCE_INFO = 0x0004
EXT_STACK_TRACE32 = 0x0005
EXT_STACK_TRACE64 = 0x0006
EXT_EVENT_KEY = 0x000A
EXT_EVENT_SCHEMA_TL = 0x000B  # TraceLogging event metadata (parsers/trace/tracelogging.py)
EXT_PROV_TRAITS = 0x000C  # provider traits: size, then the provider name (UTF-8, NUL)
EXT_PROCESS_START_KEY = 0x000D
MAX_EXTENDED_ITEMS = 32

# EVENT_TRACE_HEADER (classic/MOF events, 0x30): Size, HeaderType, MarkerFlags, Class.Type,
# Class.Level, Class.Version, ThreadId, ProcessId, TimeStamp, Guid, KernelTime, UserTime.
FULL_HEADER = struct.Struct("<HBBBBHIIq16sII")
# EVENT_INSTANCE_GUID_HEADER (0x48): the above, then InstanceId, ParentInstanceId, ParentGuid.
INSTANCE_HEADER = struct.Struct("<HBBBBHIIq16sIIII16s")
CLASSIC_TYPES = {
    TYPE_FULL_HEADER32: FULL_HEADER,
    TYPE_FULL_HEADER64: FULL_HEADER,
    TYPE_INSTANCE32: INSTANCE_HEADER,
    TYPE_INSTANCE64: INSTANCE_HEADER,
}
# The other "trace header" types (timed, error, WNODE) carry their size in the first 16
# bits like the classic ones; they are kept raw.

# WPP TraceMessage (MESSAGE_TRACE_HEADER): Size, reserved, flags 0x90, MessageNumber,
# OptionFlags; then, in this order, the items the option flags announce.
MESSAGE_HEADER = struct.Struct("<HBBHH")
MESSAGE_SEQUENCE = 0x0001  # ULONG sequence number
MESSAGE_GUID = 0x0002  # 16-byte message GUID (names the TMF)
MESSAGE_COMPONENT_ID = 0x0004  # ULONG component id (instead of the GUID)
MESSAGE_TIMESTAMP = 0x0008  # 64-bit time stamp
MESSAGE_PERFORMANCE_TIMESTAMP = 0x0010  # (the time stamp is a performance counter value)
MESSAGE_SYSTEMINFO = 0x0020  # ULONG thread id, ULONG process id
MESSAGE_POINTER32 = 0x0040
MESSAGE_POINTER64 = 0x0080

# -- the log file header (payload of the first record, kernel group 0 opcode 0) -----------

# TRACE_LOGFILE_HEADER up to the name pointers: BufferSize, Version, ProviderVersion,
# NumberOfProcessors, EndTime, TimerResolution, MaximumFileSize, LogFileMode,
# BuffersWritten, StartBuffers, PointerSize, EventsLost, CpuSpeedInMHz.
LOGFILE_HEAD = struct.Struct("<IIIIqIIIIIIII")
# After the two name pointers (4 or 8 bytes each) comes TIME_ZONE_INFORMATION (0xAC bytes),
# then, 8-aligned: BootTime, PerfFreq, StartTime, ReservedFlags (the clock type),
# BuffersLost; the logger name and the log file name follow as NUL-terminated UTF-16.
LOGFILE_TAIL = struct.Struct("<qqqII")
LOGFILE_TIMEZONE_BIAS = struct.Struct("<i")
LOGFILE_TAIL_OFFSET = {4: 0xF0, 8: 0xF8}
LOGFILE_NAMES_OFFSET = {4: 0x110, 8: 0x118}
LOGFILE_TIMEZONE_OFFSET = {4: 0x40, 8: 0x48}

CLOCK_QPC = 1
CLOCK_SYSTEM_TIME = 2
CLOCK_CPU_CYCLES = 3
CLOCK_NAMES = {
    CLOCK_QPC: "performance counter",
    CLOCK_SYSTEM_TIME: "system time",
    CLOCK_CPU_CYCLES: "CPU cycle counter",
}

# -- kernel event groups (the high byte of a hook id) --------------------------------------

KERNEL_PROVIDER = "Windows Kernel"
# group -> (MOF class name, GUID); GUIDs as the MSNT_SystemTrace classes declare them.
KERNEL_GROUPS: dict[int, tuple[str, str]] = {
    0x00: ("EventTrace", "68fdd900-4a3e-11d1-84f4-0000f80464e3"),
    0x01: ("DiskIo", "3d6fa8d4-fe05-11d0-9dda-00c04fd7ba7c"),
    0x02: ("PageFault", "3d6fa8d3-fe05-11d0-9dda-00c04fd7ba7c"),
    0x03: ("Process", "3d6fa8d0-fe05-11d0-9dda-00c04fd7ba7c"),
    0x04: ("FileIo", "90cbdc39-4a3e-11d1-84f4-0000f80464e3"),
    0x05: ("Thread", "3d6fa8d1-fe05-11d0-9dda-00c04fd7ba7c"),
    0x06: ("TcpIp", "9a280ac0-c8e0-11d1-84e2-00c04fb998a2"),
    0x08: ("UdpIp", "bf3a50c5-a9c9-4988-a005-2df0b7c80f80"),
    0x09: ("Registry", "ae53722e-c863-11d2-8659-00c04fa321a1"),
    0x0B: ("EventTraceConfig", "01853a65-418f-4f36-aefc-dc0f1d2fd235"),
    0x0E: ("Pool", "0268a8b6-74fd-4302-9dd0-6e8f1795c0cf"),
    0x0F: ("PerfInfo", "ce1dbfb4-137e-4da6-87b0-3f59aa102cbc"),
    0x10: ("Heap", "222962ab-6180-4b88-a825-346b75f2a24a"),
    0x14: ("Image", "2cb15d1d-5fc1-11d2-abe1-00a0c911f518"),
    0x18: ("StackWalk", "def2fe46-7bd6-4b80-bd94-f57fe20d0ce3"),
    0x1A: ("ALPC", "45d8cccd-539f-4b72-a8b7-5c683142609a"),
    0x1B: ("SplitIo", "d837ca92-12b9-44a5-ad6a-3a65b3578aa8"),
    0x1C: ("ThreadPool", "c861d0e2-a2c1-4d36-9f9c-970bab943a12"),
}

# Providers whose names the files do not carry (manifest-based ones), for the licensing
# story: the names make `trace_patterns.csv`'s module patterns and an analyst's eye work.
KNOWN_PROVIDERS: dict[str, str] = {
    "4d99f017-0eb1-4b52-8419-14aebd13d770": "Microsoft-Windows-TerminalServices-Licensing",
    "c76baa63-ae81-421c-b425-340b4b24157f": (
        "Microsoft-Windows-TerminalServices-RemoteConnectionManager"
    ),
    "da539211-d525-422a-8a92-bcbe4367159c": "Microsoft.Windows.RemoteDesktop.RDSLSTelemetry",
}
