"""caltrail: rebuild the history of RDS Per Device CALs from collected logs.

Packages: `caltrail.parsers` (pure readers: bytes in, records out), `caltrail.pipeline`
(ingest, lake, sessions, CLI, report), `caltrail.queries` (the SQL and its data tables),
`caltrail.fixtures` (the EVTX writer, the fleet simulator and the bundled samples).
docs/ARCHITECTURE.md draws how they fit together.
"""

from __future__ import annotations

__version__ = "0.2.0"

__all__ = ["__version__"]
