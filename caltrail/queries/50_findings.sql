-- Layer 4, findings: one row per (cause, subject), for every cause in
-- docs/LICENSING.md ("Why one device holds several CALs"), a fleet-wide HWID regeneration,
-- and the server and session-host problems of the events.
--
-- One view per rule (HWIDs, churning names, names whose HWID changed once, names known
-- from events alone, the fleet) and a short union. Thresholds are named in
-- diagnosis_thresholds.csv (th('...')). Excess CALs are counted as truth.json defines them:
-- a CAL is excess when its holder was issued a newer CAL of the same product version while
-- it still counted. Confidence says what the collected sources can separate: where they
-- cannot tell two causes apart, the finding names both (alternative_cause), says which
-- source would decide (decided_by), and is not 'high'.

-- What each cause means and what to do about it
-- (docs/LICENSING.md, "Why one device holds several CALs").
create or replace view cause_catalog as
select * from (
    values
        ('cloned', 'hwid', true,
         'cloned image with the HWID baked in: several machines present one HWID and each '
         || 'connection of another machine gets a new CAL',
         'rebuild the image without the MSLicensing key (sysprep / provisioning must clear '
         || 'HKLM\SOFTWARE\Microsoft\MSLicensing)'),
        ('freerdp', 'hwid', true,
         'legacy FreeRDP (before 2.0.0-rc4, or /old-license) sends the same HWID from every client',
         'upgrade FreeRDP (2.0.0-rc4 or later) and drop /old-license'),
        ('vdi', 'name', true,
         'non-persistent VDI: the machine gets a new HWID at each boot',
         'use per-user licensing for the non-persistent pool'),
        ('script', 'name', true,
         'a script deletes MSLicensing at shutdown: a new HWID after each shutdown it runs at',
         'remove the script that deletes MSLicensing at shutdown'),
        ('store-app', 'name', true,
         'the Microsoft Store Remote Desktop app changes its HWID over time (HWIDs starting ff)',
         'use the desktop client (mstsc) or per-user licensing'),
        ('rebuilt', 'name', true,
         'machine rebuilt: a new install, a new HWID, the old CAL is orphaned',
         'wait for the old CAL to expire or revoke it'),
        ('corrupted-store', 'name', true,
         'corrupted license store: the client made a new HWID; its registry holds several',
         'delete the stale HardwareID key on the client'),
        ('duplicate-names', 'name', false,
         'two different machines use one computer name; each holds and renews its own CAL',
         'not waste: rename one of the machines'),
        ('mass-regeneration', 'fleet', true,
         'ClientHWID regenerated on many clients at once (the workaround applied fleet-wide, '
         || 'with or without a rebuilt licensing database): each got a new CAL',
         'no per-device fix: the old CALs return to the pool at their expiry (cal_recovery) '
         || 'or can be revoked (revoke_plan); do not repeat the workaround'),
        ('reissued-without-hwid', 'name', true,
         'one name was issued several CALs, but no source gives its HWIDs',
         'collect Win32_TSIssuedLicense snapshots, the licensing trace or the client registry '
         || 'to tell a cloned image, HWID churn and two machines apart'),
        ('not-activated', 'server', false,
         'the license server is not activated: it issues temporary CALs only',
         'activate the license server (RD Licensing Manager)'),
        ('cals-exhausted', 'server', false,
         'no permanent per-device CAL of a type was left to issue',
         'install more CALs or recover the excess ones (see cal_recovery, revoke_plan)'),
        ('cals-low', 'server', false,
         'few permanent per-device CALs are left',
         'install more CALs or recover the excess ones (see cal_recovery, revoke_plan)'),
        ('database-rebuilt', 'server', false,
         'the licensing database was rebuilt, renamed or restored: issuance history restarts',
         're-activate the server and reinstall the CAL packs; expect every device to ask again'),
        ('host-not-in-group', 'server', false,
         'a session host is not in the Terminal Server Computers group of the license server',
         'add the session host to the Terminal Server Computers group'),
        ('revocation-limit', 'server', false,
         'a revocation was refused: the 20% limit of the product version was reached',
         'follow revoke_plan: the next batch of that version is allowed when revoked CALs expire'),
        ('certificate-corrupt', 'server', false,
         'the license server certificate is corrupt', 're-activate the license server'),
        ('database-error', 'server', false,
         'the licensing database reported an error', 'check the database (TLSLic.edb) and disk'),
        ('no-licenses-installed', 'server', false,
         'no licenses are installed for a product', 'install CALs for the product version'),
        ('cannot-issue', 'server', false,
         'the server could not issue a license', 'see the event message for the error'),
        ('license-error', 'server', false,
         'a session host could not get a client license (RCM 1004)',
         'check the host''s license server setting and that the server answers it'),
        ('temp-license-expired', 'server', false,
         'clients were disconnected: their temporary CAL expired and no permanent one was issued '
         || '(RCM 1011)', 'install CALs or recover excess ones; check the server is activated'),
        ('renew-failed', 'server', false,
         'clients were disconnected: their CAL could not be renewed (RCM 1028)',
         'check the license server can be reached and has CALs left'),
        ('licensing-mode-not-configured', 'server', false,
         'a session host has no licensing mode configured (RCM 1068): it asks no license server',
         'set the licensing mode and the license server on the host (group policy)'),
        ('grace-period-expired', 'server', false,
         'a session host''s licensing grace period has expired (RCM 1069)',
         'configure the licensing mode and license server; connections are refused until then')
) as t(cause, subject_kind, waste, meaning, fix);

-- Excess CALs per HWID and per name (per HWID within a name for two machines of one name):
-- permanent and temporary apart (temporary CALs never come from the purchased pool).
create or replace macro excess_summary(flagged) as table
select
    key,
    count(*) as cals,
    count(*) filter (where flag) as excess_cals,
    count(*) filter (where flag and cal_type = 'permanent') as excess_permanent,
    count(*) filter (where flag and cal_type = 'temporary') as excess_temporary,
    count(*) filter (where flag and counted_now and cal_type = 'permanent') as excess_now_permanent,
    count(*) filter (where flag and counted_now and cal_type = 'temporary') as excess_now_temporary,
    count(*) filter (where flag and counted_now) as excess_now,
    list(license_key order by issued_at, license_key) filter (where flag) as excess_licenses
from query_table(flagged)
group by key;

create or replace view hwid_excess_flags as
select hwid as key, excess_by_name as flag, * exclude (hwid) from licenses where hwid is not null;

create or replace view name_excess_flags as
select client_name as key, excess_by_name as flag, * from licenses where client_name is not null;

create or replace view name_hwid_excess_flags as
select client_name as key, excess_by_name_hwid as flag, * from licenses
where client_name is not null;

-- (Plain views: the findings read them, and are kept; a session read them whole on opening
-- when they were temp tables of it, for no query.)
create or replace view hwid_excess as select * from excess_summary('hwid_excess_flags');

create or replace view name_excess as select * from excess_summary('name_excess_flags');

create or replace view name_hwid_excess as select * from excess_summary('name_hwid_excess_flags');

-- Names the name rules leave to the HWID rules: a name sharing a HWID with another name
-- (cloned, FreeRDP, or renamed: a HWID under two names), and names of a fleet-wide
-- regeneration.
create or replace view names_explained_elsewhere as
select unnest(names) as client_name from hwid_evidence where name_count >= th('min_names_per_hwid')
union
select unnest(names) from regeneration_waves;

-- HWIDs: the legacy FreeRDP HWID under several names, and any HWID whose CALs were
-- superseded while they still counted (each overlap is another machine presenting it:
-- clones, whatever their names; a HWID moving from one name to another without overlap is
-- a renamed machine, not a finding).
create or replace view findings_hwid as
select
    case when e.hwid = th_text('freerdp_legacy_hwid') then 'freerdp' else 'cloned' end as cause,
    'hwid' as subject_kind,
    e.hwid as subject,
    e.names,
    [e.hwid] as hwids,
    e.first_seen,
    e.last_seen,
    map {
        'names': e.name_count::bigint,
        'name_switches': e.name_switches::bigint,
        'name_returns': e.name_returns::bigint,
        'overlapping_cals': e.overlaps::bigint,
        'licenses': e.licenses::bigint,
        'facts': e.facts::bigint
    } as evidence_counts,
    e.sources,
    case
        when e.hwid = th_text('freerdp_legacy_hwid') then 'high'
        when e.overlaps >= th('cloned_high_overlaps') then 'high'
        else 'medium'
    end as confidence,
    case
        when e.hwid = th_text('freerdp_legacy_hwid') then
            'the legacy FreeRDP HWID was presented by ' || e.name_count || ' name(s)'
        else
            e.overlaps || ' CAL(s) of this HWID were superseded while they still counted '
            || '(another machine presented it)' || case when e.name_count > 1
                then '; ' || e.name_count || ' names, ' || e.name_returns
                    || ' switch(es) back to a name used before (ping-pong)'
                else '; one name: clones that kept the computer name too' end
    end as reason,
    null::varchar as alternative_cause,
    case when e.hwid <> th_text('freerdp_legacy_hwid') and e.overlaps < th('cloned_high_overlaps')
        then 'a second overlap, or the trace showing two users present this HWID at once'
    end as decided_by,
    null::double as cadence_days
from hwid_evidence as e
where (e.hwid = th_text('freerdp_legacy_hwid')
        and (e.name_count >= th('min_names_per_hwid') or e.overlaps > 0))
    or e.overlaps > 0;

-- The name rules. Names with many HWIDs: the Store app (its HWIDs start with ff), else
-- non-persistent VDI (a new HWID at every boot) or a script deleting MSLicensing (at every
-- shutdown it runs at). Nothing the logs record tells those two apart: a desktop shut down
-- every evening by a deleting script and a VDI desktop booted every morning leave the same
-- HWIDs, and a VDI pool rebooted weekly or used on few days looks like a script run now and
-- then. The cadence only orders the two explanations; both are given, never with high
-- confidence. Names whose HWID changed once: a corrupted store (one machine's export holds
-- both), two machines (two exports with HWIDs of their own, a machine still holding the
-- older one, both HWIDs active at once, or each HWID with its own users), or a rebuilt
-- machine.
create or replace view name_candidates as
select
    case
        when e.store_app_hwids > 0 then 'store-app'
        when e.hwid_count >= th('churn_min_hwids')
            and e.multiday_hwids / e.hwid_count <= th('vdi_multiday_share_max')
            and coalesce(e.next_day_share, 0) >= th('vdi_next_day_share_min') then 'vdi'
        when e.hwid_count >= th('churn_min_hwids') then 'script'
        when e.registry_hwids_one_export >= 2 then 'corrupted-store'
        when e.exports_two then 'duplicate-names'
        when e.overlap_days > th('overlap_min_days') then 'duplicate-names'
        when e.users_differ then 'duplicate-names'
        else 'rebuilt'
    end as cause,
    e.*
from (
    select
        *,
        -- two machines' exports hold HWIDs of their own, or one holds the older HWID alone
        registry_hwid_sets >= 2 or registry_has_old as exports_two
    from name_evidence
) as e
where e.hwid_count >= th('min_hwids_per_name') or e.registry_hwids_one_export >= 2;

-- The name findings with what the evidence can separate: confidence, the other
-- explanation when the sources cannot rule it out, and the source that would decide.
create or replace view name_findings_rated as
with candidates as (
    select
        *,
        -- what makes two machines sure: both HWIDs active at once, or two machines' exports
        -- while the older HWID still renews. An export does not say when it was taken: one
        -- taken before the HWID changed (a collection run before a rebuild) holds the older
        -- HWID alone, and an older HWID quiet through its CAL's renewal window is no machine
        -- in use.
        overlap_days > th('overlap_min_days') or (exports_two and not old_quiet_through_renewal)
            as two_sure
    from name_candidates
)
select
    c.* exclude (exports_two, two_sure),
    case
        when c.cause = 'store-app' then 'high'
        when c.cause in ('vdi', 'script') and c.hwid_count < th('cadence_min_hwids') then 'low'
        when c.cause in ('vdi', 'script') then 'medium'
        when c.cause = 'corrupted-store' then 'high'
        when c.cause = 'duplicate-names' and c.two_sure then 'high'
        when c.cause = 'rebuilt' and c.registry_machines >= 1 and c.old_quiet_through_renewal
            then 'high'
        else 'medium'
    end as confidence,
    case
        when c.cause = 'vdi' then 'script'
        when c.cause = 'script' then 'vdi'
        when c.cause = 'duplicate-names' and not c.two_sure then 'rebuilt'
        when c.cause = 'rebuilt' and c.registry_machines = 0 then 'corrupted-store'
        when c.cause = 'rebuilt' and not c.old_quiet_through_renewal then 'duplicate-names'
    end as alternative_cause,
    case
        when c.cause in ('vdi', 'script') then
            'whether the machine is a non-persistent VDI desktop (the pool''s inventory) or '
            || 'runs a shutdown script deleting MSLicensing (gpresult /scope computer on it): '
            || 'no collected log records either'
        when c.cause = 'duplicate-names' and not c.two_sure and c.exports_two then
            'when each registry export was taken: one taken before the HWID changed holds the '
            || 'older HWID alone, and the older HWID has been quiet through its CAL''s renewal '
            || 'window (a second machine in use would have renewed it)'
        when c.cause = 'duplicate-names' and not c.two_sure then
            'a registry export (MSLicensing) from each machine of that name, or a trace '
            || 'showing both HWIDs after the change'
        when c.cause = 'rebuilt' and c.registry_machines = 0 then
            'a registry export (MSLicensing) of the machine: a corrupted store holds both HWIDs'
            || case when not c.old_quiet_through_renewal then '; and whether a second machine '
                || 'of that name still uses the older HWID (its export, or its CAL renewed '
                || 'in the days before it expires)' else '' end
        when c.cause = 'rebuilt' and not c.old_quiet_through_renewal then
            'whether a second machine of that name still uses the older HWID: its registry '
            || 'export, or its CAL renewed in the days before it expires'
    end as decided_by
from candidates as c
anti join names_explained_elsewhere as x using (client_name);

-- The name findings as rows (duplicate names count excess per HWID within the name: each
-- machine holds its own CAL).
-- (The excess CALs of the rated names alone, and their HWIDs from name_evidence: every
-- name's spans and excess, kept to the rated ones only by the join, cost 1 of the 1.5 s
-- these findings took at 50,000 devices.)
create or replace view findings_name as
with rated as (select * from name_findings_rated),
rated_excess_flags as (
    select * from name_excess_flags as f semi join rated as r using (client_name)
),
rated_hwid_excess_flags as (
    select * from name_hwid_excess_flags as f semi join rated as r using (client_name)
)
select
    r.cause,
    'name' as subject_kind,
    r.client_name as subject,
    [r.client_name] as names,
    r.hwids,
    r.first_seen,
    r.last_seen,
    map {
        'hwids': r.hwid_count::bigint,
        'hwids_active_on_several_days': r.multiday_hwids::bigint,
        'next_day_share_pct': (round(100 * coalesce(r.next_day_share, 0)))::bigint,
        'store_app_hwids': r.store_app_hwids::bigint,
        'overlap_days': (round(r.overlap_days))::bigint,
        'registry_machines': r.registry_machines::bigint,
        'registry_hwids_one_export': r.registry_hwids_one_export::bigint,
        'users_differ': r.users_differ::bigint,
        'old_hwid_quiet_through_renewal': r.old_quiet_through_renewal::bigint,
        'invalid_license_events': r.invalid_license_events::bigint,
        'facts': r.facts::bigint
    } as evidence_counts,
    case when r.registry_machines > 0 and not list_contains(r.sources, 'client')
        then list_append(r.sources, 'client') else r.sources end as sources,
    r.confidence,
    case r.cause
        when 'store-app' then
            r.store_app_hwids || ' of ' || r.hwid_count || ' HWIDs start with ff (Store app)'
        when 'corrupted-store' then
            'one machine''s registry export holds ' || r.registry_hwids_one_export
            || ' HWIDs; the server saw ' || r.hwid_count
        when 'vdi' then
            r.hwid_count || ' HWIDs, ' || r.multiday_hwids || ' active on more than one day, '
            || round(100 * coalesce(r.next_day_share, 0)) || '% the day after the previous one '
            || '(a new HWID at nearly every start)'
            || coalesce('; median ' || round(r.cadence_days, 1) || ' days between new HWIDs', '')
        when 'script' then
            r.hwid_count || ' HWIDs, ' || r.multiday_hwids || ' active on more than one day, '
            || round(100 * coalesce(r.next_day_share, 0)) || '% the day after the previous one '
            || '(a new HWID after some starts)'
            || coalesce('; median ' || round(r.cadence_days, 1) || ' days between new HWIDs', '')
        when 'duplicate-names' then
            case
                when r.registry_hwid_sets >= 2 then r.registry_machines
                    || ' machines of this name exported their registry, with different HWIDs'
                when r.registry_has_old then 'a machine of this name still holds the older HWID'
                when r.overlap_days > th('overlap_min_days') then 'two HWIDs active at the '
                    || 'same time for ' || round(r.overlap_days, 1) || ' days, each with its own CAL'
                else 'two HWIDs one after the other, each used by users of its own'
            end
        else
            'the HWID changed once, the old one was not seen again'
            || case when r.registry_machines = 0 then ' (no registry export of the machine: a '
                || 'corrupted store cannot be ruled out)' else '' end
            || case when not r.old_quiet_through_renewal then ' (the older CAL has not reached '
                || 'its renewal days yet: a second machine cannot be ruled out)' else '' end
    end as reason,
    r.alternative_cause,
    r.decided_by,
    r.cadence_days,
    x.* exclude (key, per_hwid)
from rated as r
left join (
    select * from excess_summary('rated_excess_flags')
    union all by name
    select *, true as per_hwid from excess_summary('rated_hwid_excess_flags')
) as x on x.key = r.client_name and coalesce(x.per_hwid, false) = (r.cause = 'duplicate-names');

-- Names the events say were issued CALs repeatedly, with no HWID in any source: no cause
-- can be named, and no excess counted.
create or replace view findings_events_only as
select
    'reissued-without-hwid' as cause,
    'name' as subject_kind,
    client_name as subject,
    [client_name] as names,
    []::varchar[] as hwids,
    min(ts) as first_seen,
    max(ts) as last_seen,
    count(*) as cals,
    map {
        'issue_events': count(*)::bigint,
        'temporary_issues': (count(*) filter (where fact = 'issued' and cal_type = 'temporary'))::bigint,
        'upgrades': (count(*) filter (where fact = 'upgraded'))::bigint
    } as evidence_counts,
    ['evtx'] as sources,
    'low' as confidence,
    count(*) || ' CALs issued to this name by the events alone ('
    || count(*) filter (where fact = 'issued' and cal_type = 'temporary') || ' temporary, '
    || count(*) filter (where fact = 'upgraded') || ' upgrades'
    || case when count(*) filter (where fact = 'issued' and cal_type = 'temporary')
            >= th('churn_min_hwids')
        then ': repeated temporary CALs suggest new HWIDs or several machines' else '' end
    || '); without HWIDs (Win32_TSIssuedLicense, trace, client registry) a cloned image, HWID '
    || 'churn (VDI, script, Store app), a rebuild and two machines sharing the name cannot be '
    || 'told apart, and excess CALs cannot be counted' as reason,
    null::varchar as alternative_cause,
    'Win32_TSIssuedLicense snapshots, the licensing trace or the client''s registry' as decided_by
from activity
where client_name is not null and fact in ('issued', 'upgraded')
group by client_name
having count(*) >= th('events_only_min_issues')
    and count(hwid) = 0
    and client_name not in (select client_name from activity where hwid is not null);

-- The licenses of the names of a fleet-wide HWID regeneration (summed by name alone: the
-- excess of every name, joined on list_contains, took 0.17 s at 50,000 devices, for a fleet
-- with no wave too).
create or replace view wave_name_excess_flags as
select *
from name_excess_flags
semi join (select unnest(names) as key from regeneration_waves) as w using (key);

-- A fleet-wide HWID regeneration: one finding for all its names, their excess CALs with it.
create or replace view findings_fleet as
select
    'mass-regeneration' as cause,
    'fleet' as subject_kind,
    coalesce(w.license_server, '?') as subject,
    w.names,
    []::varchar[] as hwids,
    w.wave_start as first_seen,
    w.wave_end as last_seen,
    map {'names': len(w.names)::bigint, 'names_active': w.names_active::bigint} as evidence_counts,
    ['wmi'] as sources,
    'high' as confidence,
    len(w.names) || ' of the ' || w.names_active || ' names active then got a new HWID '
        || 'between ' || strftime(w.wave_start, '%Y-%m-%d') || ' and '
        || strftime(w.wave_end, '%Y-%m-%d') || ', each once: one fleet-wide event' as reason,
    null::varchar as alternative_cause,
    null::varchar as decided_by,
    sum(x.cals)::bigint as cals,
    sum(x.excess_cals)::bigint as excess_cals,
    sum(x.excess_permanent)::bigint as excess_permanent,
    sum(x.excess_temporary)::bigint as excess_temporary,
    sum(x.excess_now)::bigint as excess_now,
    sum(x.excess_now_permanent)::bigint as excess_now_permanent,
    sum(x.excess_now_temporary)::bigint as excess_now_temporary,
    flatten(list(x.excess_licenses) filter (where x.excess_licenses is not null))
        as excess_licenses
from regeneration_waves as w
left join excess_summary('wave_name_excess_flags') as x on list_contains(w.names, x.key)
group by all;

-- The findings of each HWID and name, with the first 20 source rows behind each (in time
-- order, then by file and line: the same rows however the facts come in; each
-- fact listed under its HWID and its name, gathered by an equality join on (kind,
-- subject)). A row depends on its subject's group of names, HWIDs and licenses only, and
-- on the fleet's regeneration wave (the names it explains), so after a batch ingest the
-- rows of the subjects the batch touched are computed again and the others kept
-- (caltrail/pipeline/patch.py).
-- materialize: lake
-- patched per device: subject_kind subject
create or replace view subject_findings as
with all_rows as (
    select f.*, x.* exclude (key)
    from findings_hwid as f
    left join hwid_excess as x on x.key = f.subject
    union all by name
    select * from findings_name
    union all by name
    select * from findings_events_only
),
act as (select hwid, client_name, ts, source_path, source_line, recovered from activity),
subjects as (
    select 'hwid' as subject_kind, hwid as subject, ts, source_path, source_line, recovered
    from act
    union all
    select 'name', client_name, ts, source_path, source_line, recovered from act
),
evidence as (
    select
        a.subject_kind,
        a.subject,
        -- (the 20 first by time, file and line, in that order: a list of every row, ordered,
        -- sorted the FreeRDP HWID's 450,000 rows of 50,000 devices for 20 of them)
        arg_min(
            {'source_path': a.source_path, 'line': a.source_line, 'recovered': a.recovered},
            {'ts': a.ts, 'source_path': a.source_path, 'line': a.source_line},
            20
        ) as rows
    from subjects as a
    semi join all_rows as d on d.subject_kind = a.subject_kind and d.subject = a.subject
    group by a.subject_kind, a.subject
)
select d.*, e.rows as evidence_rows
from all_rows as d
left join evidence as e on e.subject_kind = d.subject_kind and e.subject = d.subject;

-- Every device finding: those of each HWID and name, and the fleet's (a regeneration wave,
-- which has no source rows of its own).
create or replace view device_findings as
select * exclude (evidence_rows), evidence_rows
from (
    select * from subject_findings
    union all by name
    select * from findings_fleet
);

-- Server and session-host problems from the events: one row per (problem, subject). A
-- session host's licensing events (RCM 1004, 1011, 1028, 1068, 1069) are its own: the
-- subject is the host; a refused revocation names its product version.
create or replace view server_findings as
with problems as (
    select
        case when action = 'revoke-refused' then 'revocation-limit' else problem end as cause,
        case
            when problem = 'host-not-in-group' then coalesce(norm_name(session_host), logged_by)
            when provider_family = 'rcm' then norm_name(logged_by)
            else coalesce(norm_name(license_server), norm_name(logged_by))
        end as subject,
        time_created,
        message,
        client_name,
        product,
        source_path,
        record_id,
        recovered
    from licensing_problems
    where (action = 'server-problem' or action = 'revoke-refused'
            or (provider_family = 'rcm' and problem is not null))
        -- event 44 with ESE error -1316 is benign (Microsoft KB 4078299)
        and not (event_id = 44 and coalesce(message, '') like '%-1316%')
)
select
    cause,
    'server' as subject_kind,
    subject,
    min(time_created) as first_seen,
    max(time_created) as last_seen,
    map {'events': count(*)::bigint} as evidence_counts,
    ['evtx'] as sources,
    'high' as confidence,
    count(*) || ' event(s)'
        || coalesce('; clients: ' || array_to_string(
            (list(distinct client_name order by client_name) filter (where client_name is not null))[1:10],
            ', '), '')
        || coalesce('; product versions: ' || array_to_string(
            list(distinct product order by product) filter (where product is not null
                and cause = 'revocation-limit'), ', '), '')
        || '; last: ' || coalesce(arg_max(message, time_created), '') as reason,
    list({'source_path': source_path, 'line': record_id, 'recovered': recovered}
        order by time_created)[1:20] as evidence_rows
from problems
where cause is not null
group by cause, subject;

-- A license database emptied between two full listings, seen in the snapshots alone
-- (snapshot_db_resets, 38_snapshots.sql): a server finding where no event of that server
-- says so (with the System log collected, its events' finding stands and dates it). High
-- when the later listing's license ids were numbered again (an export cut short or filtered
-- keeps some of the earlier ones), else medium.
create or replace view snapshot_server_findings as
select
    'database-rebuilt' as cause,
    'server' as subject_kind,
    r.license_server as subject,
    min(r.listed_at) as first_seen,
    max(r.missing_at) as last_seen,
    map {
        'listings_compared': count(*)::bigint,
        'cals_missing': sum(r.gone)::bigint,
        'cals_unexpired': sum(r.due)::bigint
    } as evidence_counts,
    ['wmi'] as sources,
    case when bool_and(r.ids_restart) then 'high' else 'medium' end as confidence,
    string_agg(
        r.gone || ' of the ' || r.due || ' permanent CALs listed on '
            || strftime(r.listed_at, '%Y-%m-%d') || ' and unexpired on '
            || strftime(r.missing_at, '%Y-%m-%d') || ' were no longer listed then'
            || case when r.ids_restart then ' (and that listing''s license ids start again: '
                || 'the highest ' || r.max_id || ', below the lowest before, '
                || r.min_id_before || ')' else '' end,
        '; ' order by r.listed_at
    ) || ': the database was emptied between the two listings' as reason,
    null::varchar as alternative_cause,
    'the license server''s System log (events 9, 47, 49, 52, 4100) dates it'
        || case when bool_and(r.ids_restart) then ''
            else '; whether the later export lists every CAL (one cut short, or filtered by '
                || 'status, also loses most of them)' end
        as decided_by,
    flatten(list(r.evidence_rows order by r.listed_at))[1:20] as evidence_rows
from snapshot_db_resets as r
where r.license_server not in (
    select subject from server_findings where cause = 'database-rebuilt' and subject is not null
)
group by r.license_server;

-- The per-device pool of a product version found empty in a key pack listing
-- (Win32_TSLicenseKeyPack: its permanent per-device packs together had no CAL available):
-- the server had no permanent CAL of that version left to issue then, and a device asking
-- for one got a temporary CAL or none (docs/LICENSING.md, "The pool in the key pack
-- listing"). A listing read, not inferred: high. Where the server's System log says so
-- (event 21), that finding stands.
create or replace view snapshot_pool_findings as
with listings as (
    select
        license_server,
        product_version,
        snapshot_time,
        sum(total_licenses) as installed,
        sum(total_licenses) > 0 and sum(available_licenses) <= 0 as empty,
        min({'source_path': source_path, 'line': line, 'recovered': false}) as evidence_row
    from keypack_listings
    where per_device_pack(product_type, keypack_type, total_unlimited)
        and license_server is not null
    group by all
),
empty_versions as (
    select
        license_server,
        product_version,
        count(*) filter (where empty) as listings,
        count(*) as listings_all,
        min(snapshot_time) filter (where empty) as first_empty,
        max(snapshot_time) filter (where empty) as last_empty,
        max(installed) filter (where empty) as installed,
        list(evidence_row order by snapshot_time) filter (where empty) as evidence_rows
    from listings
    group by all
    having bool_or(empty)
)
select
    'cals-exhausted' as cause,
    'server' as subject_kind,
    e.license_server as subject,
    min(e.first_empty) as first_seen,
    max(e.last_empty) as last_seen,
    map {
        'listings_empty': sum(e.listings)::bigint,
        'listings': sum(e.listings_all)::bigint
    } as evidence_counts,
    ['wmi'] as sources,
    'high' as confidence,
    string_agg(
        'none of the ' || e.installed || ' permanent per-device CALs of '
            || coalesce(e.product_version, 'an unknown product version') || ' was available in '
            || e.listings || ' of its ' || e.listings_all || ' key pack listing(s) ('
            || case when e.last_empty > e.first_empty
                then 'the first ' || strftime(e.first_empty, '%Y-%m-%d') || ', the last '
                    || strftime(e.last_empty, '%Y-%m-%d')
                else strftime(e.first_empty, '%Y-%m-%d') end || ')',
        '; ' order by e.first_empty, e.product_version
    ) as reason,
    null::varchar as alternative_cause,
    null::varchar as decided_by,
    flatten(list(e.evidence_rows order by e.first_empty, e.product_version))[1:20]
        as evidence_rows
from empty_versions as e
where e.license_server not in (
    select subject from server_findings where cause = 'cals-exhausted' and subject is not null
)
group by e.license_server;

-- findings: every cause, most excess first, with the meaning and the fix.
--   cause             cloned | freerdp | vdi | script | store-app | rebuilt | corrupted-store |
--                     duplicate-names | mass-regeneration | reissued-without-hwid |
--                     <server or session-host problem>
--   subject_kind      hwid | name | fleet | server;  subject: the HWID (40 hex), name, or the
--                     license server (fleet), server or session host
--   waste             false: the extra CALs are legitimate (duplicate names, server rows)
--   confidence        high | medium | low, with `reason` saying why (counts from the data);
--                     never high where the sources cannot separate two causes
--   alternative_cause the other explanation the sources cannot rule out (VDI vs script,
--                     rebuilt vs corrupted store without a registry export, two machines
--                     vs a rebuilt one); alternative_fix its fix
--   decided_by        the source that would decide between them
--   excess_cals       CALs issued while the holder's previous CAL (same product version)
--                     still counted: excess_permanent + excess_temporary (temporary CALs
--                     never come from the purchased pool); excess_now (_permanent,
--                     _temporary): still counted at the end of the data; NULL when no
--                     HWID source allows counting
--   cals, names, hwids, first_seen, last_seen, cadence_days (median days between new HWIDs)
--   evidence_counts   the counts the rule used;  evidence_rows: the first 20 source rows
--                     (source_path + line or EVTX record id; recovered: an EVTX record
--                     read from chunk slack);  excess_licenses: license keys
--   sources           the sources the finding rests on (wmi, trace, evtx, client)
--   meaning, fix      from cause_catalog (docs/LICENSING.md, "Why one device holds several CALs")
-- materialize: lake
create or replace view findings as
with final as (
    select * from device_findings
    union all by name
    select * from server_findings
    union all by name
    select * from snapshot_server_findings
    union all by name
    select * from snapshot_pool_findings
)
select
    f.cause, f.subject_kind, f.subject, c.waste, f.confidence, f.reason, f.alternative_cause,
    a.fix as alternative_fix, f.decided_by,
    f.excess_cals, f.excess_permanent, f.excess_temporary,
    f.excess_now, f.excess_now_permanent, f.excess_now_temporary,
    f.cals, f.names, f.hwids, f.first_seen, f.last_seen, f.cadence_days,
    f.evidence_counts, f.evidence_rows, f.excess_licenses, f.sources,
    c.meaning, c.fix
from final as f
left join cause_catalog as c using (cause)
left join cause_catalog as a on a.cause = f.alternative_cause
order by
    f.subject_kind = 'server',
    coalesce(f.excess_now_permanent, 0) desc,
    coalesce(f.excess_now, 0) desc,
    coalesce(f.excess_cals, 0) desc,
    f.cause,
    f.subject;
