-- Before licenses is patched: the licenses kept as they were of the HWIDs whose licenses are
-- computed again (every HWID of a touched device, and the partitions of the licenses
-- computed, patch.license_hwids, '' standing for a license without a HWID), read beside
-- them by the windows ordering a HWID's licenses (license_window_peers in 42_licenses.sql).
-- Their values are those of the base: a license's own dates, status and listings depend on
-- its own facts only.
create table if not exists patch.license_hwids (hwid varchar);

insert into patch.license_hwids
select key from patch.touched where kind = 'hwid'
union
select coalesce(b.hwid, '')
from patch.base_licenses as b
where b.client_name in (select key from patch.touched where kind = 'name')
    or b.license_key in (select key from patch.touched where kind = 'license')
except
select hwid from patch.license_hwids;

create or replace table patch.input_license_window_peers as
select
    b.license_key,
    b.counted,
    b.license_server,
    b.version_key,
    b.hwid,
    b.issued_at,
    b.first_listed
from patch.base_licenses as b
where coalesce(b.hwid, '') in (select hwid from patch.license_hwids)
    and (b.client_name is null
        or b.client_name not in (select key from patch.touched where kind = 'name'))
    and b.license_key not in (select key from patch.touched where kind = 'license');
