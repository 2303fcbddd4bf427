-- Before excess_licenses is patched: the excess CALs of each wasteful finding whose own
-- columns (the cause, confidence and alternative an excess row carries) changed, or which
-- is new or gone. A finding's list changes with its licenses' rows, whose devices are
-- touched; its own columns change only for a subject the batch touched, whose licenses the
-- shadow of licenses holds (by HWID or name), so they are touched as the rows to compute
-- again (patch.among_rows), without closing over them.
insert into patch.among_rows
with findings_before as (
    select subject_kind, subject, cause, confidence, alternative_cause, excess_licenses
    from patch.base_findings
    where waste and excess_licenses is not null
),
findings_now as (
    select subject_kind, subject, cause, confidence, alternative_cause, excess_licenses
    from findings
    where waste and excess_licenses is not null
),
changed as (
    (select subject_kind, subject, cause, confidence, alternative_cause from findings_before
     except
     select subject_kind, subject, cause, confidence, alternative_cause from findings_now)
    union
    (select subject_kind, subject, cause, confidence, alternative_cause from findings_now
     except
     select subject_kind, subject, cause, confidence, alternative_cause from findings_before)
)
select distinct 'license', license_key
from (
    select unnest(f.excess_licenses) as license_key
    from findings_before as f
    semi join changed as c using (subject_kind, subject)
    union all
    select unnest(f.excess_licenses)
    from findings_now as f
    semi join changed as c using (subject_kind, subject)
);
