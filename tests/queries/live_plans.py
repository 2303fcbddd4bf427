"""What-if tests shadow a view below the plans with a temp table of other rows (a smaller
pool, one more sighting of a HWID) and read the plan again. The plan's views are kept per
state of the lake, so they are defined live again first, reading the shadow."""

from __future__ import annotations

import duckdb

from caltrail import queries
from caltrail.pipeline import materialize


def define_plans_live(con: duckdb.DuckDBPyConnection) -> None:
    """Define the plans' kept views (55_plans.sql) as their live queries on `con`."""
    for statement in queries.statements():
        if statement.file.startswith("55") and statement.materialize == "lake":
            con.execute(materialize.generated_sql(con, statement))
