-- The audit filter `type` finds every entry of that type (CONTRACT section 4), and entries need
-- not name an object: each such entry is kept under the object '' (which no identifier a caller
-- can search for normalises to), written with the request from now on, and here for those before.
INSERT INTO request_objects (type, object, request_id)
  SELECT DISTINCT d->>'type', '', r.id
  FROM requests r, jsonb_array_elements(r.authorization_details::jsonb) d
  WHERE r.authorization_details IS NOT NULL AND NOT (d ? 'identifier')
ON CONFLICT DO NOTHING;
