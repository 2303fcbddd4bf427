-- The event catalog, kept as data (event_catalog.csv beside this file; what it holds and its
-- public sources: docs/LICENSING.md, "License-server events" and "Session-host events").
-- One row per event id of the license server (provider_family 'licensing'),
-- RemoteConnectionManager ('rcm') and LocalSessionManager ('lsm'). *_field columns name the
-- MAP keys holding each value, '|'-separated candidates. Qualifiers empty = any.
create or replace view event_catalog as
select
    provider_family,
    event_id::integer as event_id,
    try_cast(nullif(qualifiers, '') as integer) as qualifiers,
    log,
    action,
    nullif(problem, '') as problem,
    device_cal = 'true' as device_cal,
    nullif(client_field, '') as client_field,
    nullif(cal_type_field, '') as cal_type_field,
    nullif(product_field, '') as product_field,
    nullif(host_field, '') as host_field,
    nullif(user_field, '') as user_field,
    nullif(address_field, '') as address_field,
    nullif(server_field, '') as server_field,
    nullif(extra_fields, '') as extra_fields,
    nullif(message, '') as message,
    nullif(description, '') as description
from reference_table('event_catalog.csv');
