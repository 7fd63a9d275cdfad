-- The audit filter `type` finds every entry of that type (CONTRACT section 4), and entries need
-- not name an object: each such entry is kept under the object '' (which no identifier a caller
-- can search for normalises to), written with the request from now on, and here for those before.
INSERT OR IGNORE INTO request_objects (type, object, request_id)
  SELECT DISTINCT json_extract(d.value, '$.type'), '', r.id
  FROM requests r, json_each(r.authorization_details) d
  WHERE r.authorization_details IS NOT NULL AND json_extract(d.value, '$.identifier') IS NULL;
