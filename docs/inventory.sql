-- The inventory of a typical vendor schema (msps, customers, users, devices) as one statement
-- whose rows each carry one inventory record in the column `record` (README "Pull sources").
-- Channels first, then workspaces, then modules and units: a record may only name what an
-- earlier one (or the store) defines.
SELECT record FROM (
    SELECT 1 AS k, json_build_object('type', 'channel', 'id', m.id, 'name', m.name) AS record
      FROM msps m
    UNION ALL
    SELECT 2, json_build_object('type', 'workspace', 'id', c.id, 'channel', c.msp_id, 'name', c.name)
      FROM customers c
    UNION ALL
    SELECT 3, json_build_object('type', 'module', 'workspace', c.id, 'module', 'endpoint_security',
                                'enabled', c.edr_enabled)
      FROM customers c
    UNION ALL
    SELECT 3, json_build_object('type', 'module', 'workspace', c.id, 'module', 'email_security',
                                'enabled', c.mail_enabled)
      FROM customers c
    UNION ALL
    SELECT 4, json_build_object('type', 'user', 'workspace', u.customer_id, 'id', u.id,
                                'protected', u.protected)
      FROM users u
    UNION ALL
    SELECT 4, json_build_object('type', 'device', 'workspace', d.customer_id, 'id', d.id,
                                'protected', d.protected)
      FROM devices d
) inventory
ORDER BY k
