-- Layer 5, exports: what leaves caltrail for a SIEM (`caltrail export`,
-- caltrail/pipeline/export.py).

-- Every finding with a stable id, so that a SIEM can deduplicate its alerts: the same
-- finding (cause, subject) on the same evidence (the source rows its rule names, in any
-- order) has the same id in every run, and in every lake read from the same files; other
-- evidence, another id. `seen_at` is when the finding was last seen (else first seen, else the
-- end of the data): its time on a timeline.
create or replace view finding_exports as
select
    sha256(
        concat_ws(
            chr(31),
            f.cause,
            f.subject_kind,
            f.subject,
            array_to_string(
                list_sort(
                    list_transform(f.evidence_rows, lambda r: r.source_path || chr(30) || r.line)
                ),
                chr(29)
            )
        )
    ) as finding_id,
    coalesce(f.last_seen, f.first_seen, (select as_of from as_of)) as seen_at,
    f.*
from findings as f;
