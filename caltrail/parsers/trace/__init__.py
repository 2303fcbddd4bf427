"""Trace dumps: text renderings of ETL files (tracefmt / `netsh trace convert` text,
tracerpt XML and CSV). `tracetime` reads their timestamps."""
