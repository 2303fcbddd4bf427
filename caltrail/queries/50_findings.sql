-- Layer 4, findings: one row per (cause, subject), for every cause in
-- docs/LICENSING.md ("Why one device holds several CALs") and the server problems of the
-- events.
--
-- Each rule is a CTE that says which subjects show a cause's signature; thresholds are named
-- in diagnosis_thresholds.csv (th('...')). Excess CALs are counted as truth.json defines them:
-- a CAL is excess when its holder was issued a newer CAL while it still counted.

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
         'a script deletes MSLicensing at shutdown: a new HWID after some shutdowns',
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
        ('renamed', 'hwid', false,
         'one HWID under two names, one after the other: most likely a renamed machine',
         'nothing to do if the machine was renamed; otherwise treat as a cloned image'),
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
         'follow revoke_plan: the next batch is allowed when revoked CALs expire'),
        ('certificate-corrupt', 'server', false,
         'the license server certificate is corrupt', 're-activate the license server'),
        ('database-error', 'server', false,
         'the licensing database reported an error', 'check the database (TLSLic.edb) and disk'),
        ('no-licenses-installed', 'server', false,
         'no licenses are installed for a product', 'install CALs for the product version'),
        ('cannot-issue', 'server', false,
         'the server could not issue a license', 'see the event message for the error')
) as t(cause, subject_kind, waste, meaning, fix);

-- HWID-level evidence: the names each HWID was used with, in issuance order.
-- materialize: lake
create or replace view hwid_evidence as
with facts as (
    select * from activity where hwid is not null and client_name is not null
),
switches as (
    -- a name switch: consecutive facts of one HWID under different names (ping-pong)
    select
        hwid,
        count(*) filter (where client_name <> previous_name) as name_switches
    from (select hwid, client_name, lag(client_name) over (partition by hwid order by ts, client_name) as previous_name from facts)
    group by hwid
),
spans as (
    -- per HWID and name, when it was active: overlapping spans mean machines in parallel
    select
        hwid,
        client_name,
        min(ts) as first_seen,
        max(ts) as last_seen
    from facts
    group by all
),
per_hwid as (
    select
        hwid,
        list(client_name order by first_seen) as names,
        count(*) as name_count,
        min(first_seen) as first_seen,
        max(last_seen) as last_seen
    from spans
    group by hwid
),
fact_counts as (
    -- sources in name order (they came in the order the rows were read)
    select hwid, count(*) as facts, list_sort(list_distinct(list(source))) as sources
    from facts
    group by hwid
)
select
    p.*,
    coalesce(s.name_switches, 0) as name_switches,
    coalesce(c.facts, 0) as facts,
    c.sources
from per_hwid as p
left join switches as s using (hwid)
left join fact_counts as c using (hwid);

-- Name-level evidence: the HWIDs of each name, how long each stayed, and overlaps.
-- materialize: lake
create or replace view name_evidence as
with facts as (
    select * from activity where client_name is not null and hwid is not null
),
held as (
    -- a HWID known only from a license (e.g. an old CAL an administrator revoked, never
    -- renewed within the logs): part of the name's HWIDs, without an active span
    select
        client_name,
        hwid,
        null::timestamptz as ts,
        case when hwid like 'ff%' then 'store_app_ff' end as hwid_flag
    from licenses
    where client_name is not null and hwid is not null
),
per_hwid as (
    -- one row per (name, HWID): its active span and on how many days it was seen
    select
        client_name,
        hwid,
        min(ts) as first_seen,
        max(ts) as last_seen,
        count(distinct ts::date) as active_days,
        bool_or(hwid_flag = 'store_app_ff') as store_app
    from (
        select client_name, hwid, ts, hwid_flag from facts
        union all
        select * from held
    )
    group by all
),
pairs as (
    -- the longest overlap of two HWIDs of one name, in days (two machines alive at once):
    -- the overlap of a HWID with one that started before it is largest with the one that
    -- lasted longest, so each HWID is paired with the latest end before it in start order
    -- (linear; pairing every two HWIDs of a name grew with the square of its HWIDs)
    select
        client_name,
        max(epoch(least(last_seen, latest_end_before) - first_seen)) / 86400.0
            as max_overlap_days
    from (
        select
            client_name,
            first_seen,
            last_seen,
            max(last_seen) over (partition by client_name order by first_seen, hwid
                rows between unbounded preceding and 1 preceding) as latest_end_before
        from per_hwid
        where first_seen is not null
    )
    where latest_end_before is not null
    group by client_name
),
registry as (
    select
        client_name,
        count(distinct hwid) as registry_hwids
    from cal_events
    where source = 'client' and client_name is not null
    group by client_name
),
fact_counts as (
    -- sources in name order (they came in the order the rows were read)
    select client_name, count(*) as facts, list_sort(list_distinct(list(source))) as sources
    from facts
    group by client_name
),
per_name as (
    select
        client_name,
        count(*) as hwid_count,
        count(*) filter (where active_days > 1) as multiday_hwids,
        count(*) filter (where store_app) as store_app_hwids,
        min(first_seen) as first_seen,
        max(last_seen) as last_seen,
        -- median time from one new HWID to the next: the cadence of churn
        median(gap_days) as cadence_days,
        -- share of new HWIDs that came the day after the previous one (a new HWID per boot
        -- on every working day gives most; a script after some shutdowns far fewer)
        count(*) filter (where gap_days < 1.5) / nullif(count(gap_days), 0) as next_day_share
    from (
        select
            *,
            epoch(first_seen - lag(first_seen) over (partition by client_name order by first_seen))
                / 86400.0 as gap_days
        from per_hwid
    )
    group by client_name
)
select
    n.*,
    coalesce(p.max_overlap_days, 0) as max_overlap_days,
    coalesce(r.registry_hwids, 0) as registry_hwids,
    coalesce(c.facts, 0) as facts,
    c.sources
from per_name as n
left join pairs as p using (client_name)
left join registry as r using (client_name)
left join fact_counts as c using (client_name);

-- Excess CALs, per license (the columns live in licenses; this name is kept for readers).
create or replace view license_excess as
select * from licenses;

-- The rules. Each CTE below is one signature from docs/LICENSING.md.
-- materialize: lake
create or replace view device_findings as
with act as (
    select * from activity
),
lx as (
    select * from licenses
),
he as (
    select * from hwid_evidence
),
hwid_rules as (
    select
        e.*,
        case
            -- every legacy FreeRDP client sends this HWID
            when e.hwid = th_text('freerdp_legacy_hwid') then 'freerdp'
            -- several machines take turns on one HWID (ping-pong), or three or more names
            when e.name_switches >= 2 or e.name_count >= 3 then 'cloned'
            -- one switch between two names: a renamed machine is the simpler explanation
            else 'renamed'
        end as cause
    from he as e
    where e.name_count >= th('min_names_per_hwid')
),
name_rules as (
    select
        e.*,
        e.multiday_hwids / e.hwid_count as multiday_share,
        case
            -- HWIDs starting ff: the Microsoft Store Remote Desktop app
            when e.store_app_hwids > 0 then 'store-app'
            -- the client's own registry holds more than one HWID
            when e.registry_hwids >= 2 then 'corrupted-store'
            -- many HWIDs, each for about one boot (VDI) or for a few days (script)
            when e.hwid_count >= th('churn_min_hwids')
                and e.multiday_hwids / e.hwid_count <= th('vdi_multiday_share_max')
                and coalesce(e.next_day_share, 0) >= th('vdi_next_day_share_min') then 'vdi'
            when e.hwid_count >= th('churn_min_hwids') then 'script'
            -- two HWIDs alive at the same time: two machines under one name
            when e.max_overlap_days > th('overlap_min_days') then 'duplicate-names'
            -- one clean switch: a rebuilt machine
            else 'rebuilt'
        end as cause
    from name_evidence as e
    where (e.hwid_count >= th('min_hwids_per_name') or e.registry_hwids >= 2)
        -- a legacy FreeRDP or cloned HWID shared with other names is explained by its HWID
        and e.client_name not in (
            select unnest(names) from he where name_count >= th('min_names_per_hwid')
        )
),
events_only as (
    -- names the events say were issued CALs repeatedly, with no HWID in any source
    select
        client_name,
        count(*) as issue_facts,
        -- a device keeping its HWID gets one temporary CAL, then upgrades it; many temporary
        -- CALs for one name point at new HWIDs (churn) or several machines
        count(*) filter (where fact = 'issued' and cal_type = 'temporary') as temporary_issues,
        count(*) filter (where fact = 'upgraded') as upgrades,
        min(ts) as first_seen,
        max(ts) as last_seen
    from act
    where client_name is not null and fact in ('issued', 'upgraded')
    group by client_name
    having count(*) >= th('events_only_min_issues')
        and count(hwid) = 0
        and client_name not in (select client_name from act where hwid is not null)
),
hwid_excess as (
    select
        hwid,
        count(*) as cals,
        count(*) filter (where excess_by_name) as excess_cals,
        count(*) filter (where excess_by_name and cal_type = 'permanent') as excess_permanent,
        count(*) filter (where excess_by_name and counted_now) as excess_now,
        list(license_key order by issued_at) filter (where excess_by_name) as excess_licenses
    from lx
    where hwid is not null
    group by hwid
),
name_excess as (
    select
        client_name,
        count(*) as cals,
        count(*) filter (where excess_by_name) as excess_cals,
        count(*) filter (where excess_by_name and cal_type = 'permanent') as excess_permanent,
        count(*) filter (where excess_by_name and counted_now) as excess_now,
        list(license_key order by issued_at) filter (where excess_by_name) as excess_licenses,
        count(*) filter (where excess_by_name_hwid) as excess_per_hwid,
        count(*) filter (where excess_by_name_hwid and cal_type = 'permanent')
            as excess_per_hwid_permanent,
        count(*) filter (where excess_by_name_hwid and counted_now) as excess_per_hwid_now
    from lx
    where client_name is not null
    group by client_name
),
hwid_rows as (
    select
        r.cause,
        'hwid' as subject_kind,
        r.hwid as subject,
        r.names,
        [r.hwid] as hwids,
        r.first_seen,
        r.last_seen,
        coalesce(x.cals, 0) as cals,
        case when r.cause = 'renamed' then 0 else coalesce(x.excess_cals, 0) end as excess_cals,
        case when r.cause = 'renamed' then 0 else coalesce(x.excess_permanent, 0) end
            as excess_permanent,
        case when r.cause = 'renamed' then 0 else coalesce(x.excess_now, 0) end as excess_now,
        x.excess_licenses,
        map {
            'names': (r.name_count)::bigint,
            'name_switches': (r.name_switches)::bigint,
            'licenses': (coalesce(x.cals, 0))::bigint,
            'facts': (r.facts)::bigint
        } as evidence_counts,
        r.sources,
        case
            when r.cause = 'freerdp' then 'high'
            when r.cause = 'cloned' and r.name_switches >= 4 then 'high'
            when r.cause = 'cloned' then 'medium'
            else 'low'
        end as confidence,
        case
            when r.cause = 'freerdp' then
                'the legacy FreeRDP HWID was presented by ' || r.name_count || ' names'
            when r.cause = 'cloned' then
                r.name_count || ' names present one HWID; the name changed '
                || r.name_switches || ' times between consecutive requests (ping-pong)'
            else
                'two names one after the other on one HWID, without ping-pong: a rename is '
                || 'likelier than a cloned image'
        end as reason,
        null::varchar as alternative_cause,
        null::double as cadence_days
    from hwid_rules as r
    left join hwid_excess as x using (hwid)
),
name_rows as (
    select
        r.cause,
        'name' as subject_kind,
        r.client_name as subject,
        [r.client_name] as names,
        (
            select list(distinct a.hwid order by a.hwid)
            from act as a
            where a.client_name = r.client_name and a.hwid is not null
        ) as hwids,
        r.first_seen,
        r.last_seen,
        coalesce(x.cals, 0) as cals,
        case
            when r.cause = 'duplicate-names' then coalesce(x.excess_per_hwid, 0)
            else coalesce(x.excess_cals, 0)
        end as excess_cals,
        case
            when r.cause = 'duplicate-names' then coalesce(x.excess_per_hwid_permanent, 0)
            else coalesce(x.excess_permanent, 0)
        end as excess_permanent,
        case
            when r.cause = 'duplicate-names' then coalesce(x.excess_per_hwid_now, 0)
            else coalesce(x.excess_now, 0)
        end as excess_now,
        x.excess_licenses,
        map {
            'hwids': (r.hwid_count)::bigint,
            'hwids_active_on_several_days': (r.multiday_hwids)::bigint,
            'next_day_share_pct': (round(100 * coalesce(r.next_day_share, 0)))::bigint,
            'store_app_hwids': (r.store_app_hwids)::bigint,
            'registry_hwids': (r.registry_hwids)::bigint,
            'licenses': (coalesce(x.cals, 0))::bigint,
            'facts': (r.facts)::bigint
        } as evidence_counts,
        case when r.registry_hwids > 0 then list_append(r.sources, 'client') else r.sources end
            as sources,
        case
            when r.cause in ('vdi', 'script') and r.hwid_count < th('cadence_min_hwids') then 'low'
            -- the cadence sits near the line between the two explanations
            when r.cause in ('vdi', 'script')
                and abs(coalesce(r.next_day_share, 0) - th('vdi_next_day_share_min'))
                    < th('cadence_ambiguity_margin') then 'medium'
            when r.cause in ('vdi', 'script') then 'high'
            when r.cause in ('store-app', 'corrupted-store') then 'high'
            when r.cause = 'rebuilt' and r.registry_hwids = 0 then 'medium'
            else 'high'
        end as confidence,
        case r.cause
            when 'store-app' then
                r.store_app_hwids || ' of ' || r.hwid_count || ' HWIDs start with ff (Store app)'
            when 'corrupted-store' then
                'the client registry holds ' || r.registry_hwids || ' HWIDs; the server saw '
                || r.hwid_count
            when 'vdi' then
                r.hwid_count || ' HWIDs, each active on a single day, '
                || round(100 * r.next_day_share) || '% of them the day after the previous one '
                || '(a new HWID at every boot); median ' || round(r.cadence_days, 1)
                || ' days between new HWIDs'
            when 'script' then
                r.hwid_count || ' HWIDs, ' || r.multiday_hwids || ' seen on several days, only '
                || round(100 * coalesce(r.next_day_share, 0)) || '% the day after the previous '
                || 'one (a new HWID after some shutdowns, not every boot); median '
                || round(r.cadence_days, 1) || ' days between new HWIDs'
            when 'duplicate-names' then
                'two HWIDs active at the same time for ' || round(r.max_overlap_days, 1)
                || ' days, each with its own CAL'
            else
                'the HWID changed once, the old one was not seen again'
                || case when r.registry_hwids = 0 then ' (no client registry export: a '
                    || 'corrupted store cannot be ruled out)' else '' end
        end as reason,
        case
            when r.cause = 'vdi'
                and (r.hwid_count < th('cadence_min_hwids')
                    or abs(coalesce(r.next_day_share, 0) - th('vdi_next_day_share_min'))
                        < th('cadence_ambiguity_margin')) then 'script'
            when r.cause = 'script'
                and (r.hwid_count < th('cadence_min_hwids')
                    or abs(coalesce(r.next_day_share, 0) - th('vdi_next_day_share_min'))
                        < th('cadence_ambiguity_margin')) then 'vdi'
            when r.cause = 'rebuilt' and r.registry_hwids = 0 then 'corrupted-store'
        end as alternative_cause,
        r.cadence_days
    from name_rules as r
    left join name_excess as x using (client_name)
),
events_rows as (
    select
        'reissued-without-hwid' as cause,
        'name' as subject_kind,
        o.client_name as subject,
        [o.client_name] as names,
        []::varchar[] as hwids,
        o.first_seen,
        o.last_seen,
        coalesce(x.cals, o.issue_facts) as cals,
        null::bigint as excess_cals,
        null::bigint as excess_permanent,
        null::bigint as excess_now,
        null::varchar[] as excess_licenses,
        map {
            'issue_events': (o.issue_facts)::bigint,
            'temporary_issues': (o.temporary_issues)::bigint,
            'upgrades': (o.upgrades)::bigint
        } as evidence_counts,
        ['evtx'] as sources,
        'low' as confidence,
        o.issue_facts || ' CALs issued to this name by the events alone ('
        || o.temporary_issues || ' temporary, ' || o.upgrades || ' upgrades'
        || case when o.temporary_issues >= th('churn_min_hwids')
            then ': repeated temporary CALs suggest new HWIDs or several machines' else '' end
        || '); without HWIDs '
        || '(Win32_TSIssuedLicense, trace, client registry) a cloned image, HWID churn '
        || '(VDI, script, Store app), a rebuild and two machines sharing the name cannot be '
        || 'told apart, and excess CALs cannot be counted' as reason,
        null::varchar as alternative_cause,
        null::double as cadence_days
    from events_only as o
    left join name_excess as x using (client_name)
),
all_rows as (
    select * from hwid_rows
    union all by name
    select * from name_rows
    union all by name
    select * from events_rows
),
-- the source rows behind each finding (the first 20, in time order): each fact is listed
-- under its HWID and under its name, then gathered by an equality join on (kind, subject)
-- (one condition with OR paired every finding with every fact)
act_subjects as (
    select 'hwid' as subject_kind, hwid as subject, ts, source_path, source_line from act
    union all
    select 'name', client_name, ts, source_path, source_line from act
),
evidence as (
    select
        a.subject_kind,
        a.subject,
        list({'source_path': a.source_path, 'line': a.source_line} order by a.ts)[1:20] as rows
    from act_subjects as a
    semi join all_rows as d on d.subject_kind = a.subject_kind and d.subject = a.subject
    group by a.subject_kind, a.subject
)
select
    d.*,
    e.rows as evidence_rows
from all_rows as d
left join evidence as e on e.subject_kind = d.subject_kind and e.subject = d.subject;

-- Server problems from the events: one row per (problem, subject).
create or replace view server_findings as
with problems as (
    select
        case when action = 'revoke-refused' then 'revocation-limit' else problem end as cause,
        case
            when problem = 'host-not-in-group' then coalesce(norm_name(session_host), logged_by)
            else coalesce(norm_name(license_server), norm_name(logged_by))
        end as subject,
        time_created,
        message,
        source_path,
        record_id
    from licensing_problems
    where (action = 'server-problem' or action = 'revoke-refused')
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
    count(*) || ' event(s); last: ' || arg_max(message, time_created) as reason,
    list({'source_path': source_path, 'line': record_id} order by time_created)[1:20]
        as evidence_rows
from problems
where cause is not null
group by cause, subject;

-- findings: every cause, most excess first, with the meaning and the fix.
--   cause             cloned | freerdp | vdi | script | store-app | rebuilt | corrupted-store |
--                     duplicate-names | renamed | reissued-without-hwid | <server problem>
--   subject_kind      hwid | name | server;  subject: the HWID (40 hex), name or server
--   waste             false: the extra CALs are legitimate (duplicate names, server rows)
--   confidence        high | medium | low, with `reason` saying why (counts from the data)
--   alternative_cause the other explanation when the data cannot tell (VDI vs script,
--                     rebuilt vs corrupted store without a client registry export)
--   excess_cals       CALs issued while the holder's previous CAL still counted
--                     (excess_permanent: of them permanent; excess_now: still counted at
--                     the end of the data); NULL when no HWID source allows counting
--   cals, names, hwids, first_seen, last_seen, cadence_days (median days between new HWIDs)
--   evidence_counts   the counts the rule used;  evidence_rows: the first 20 source rows
--                     (source_path + line or EVTX record id);  excess_licenses: license keys
--   sources           the sources the finding rests on (wmi, trace, evtx, client)
--   meaning, fix      from cause_catalog (docs/LICENSING.md, "Why one device holds several CALs")
-- materialize: lake
create or replace view findings as
with final as (
    select * from device_findings
    union all by name
    select * from server_findings
)
select
    f.cause,
    f.subject_kind,
    f.subject,
    c.waste,
    f.confidence,
    f.reason,
    f.alternative_cause,
    f.excess_cals,
    f.excess_permanent,
    f.excess_now,
    f.cals,
    f.names,
    f.hwids,
    f.first_seen,
    f.last_seen,
    f.cadence_days,
    f.evidence_counts,
    f.evidence_rows,
    f.excess_licenses,
    f.sources,
    c.meaning,
    c.fix
from final as f
left join cause_catalog as c using (cause)
order by
    f.subject_kind = 'server',
    coalesce(f.excess_now, 0) desc,
    coalesce(f.excess_cals, 0) desc,
    f.cause,
    f.subject;
