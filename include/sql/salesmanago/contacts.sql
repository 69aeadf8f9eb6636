-- SALESmanago contacts (through Data Talks) changed in the window, keyed by email (the upsert key).
-- data must be flat: one column per Data Talks field; fields beyond these need Data Talks to map them.
-- A soft-deleted customer (deleted_at) deletes the contact at SALESmanago, if this pipeline sent it; a
-- customer erased outright is found by contacts.keys.sql (the erasure sweep).
SELECT
    LOWER(email)                                 AS _key,
    deleted_at IS NOT NULL                       AS _deleted,
    updated_at                                   AS _updated_at,
    LOWER(email)                                 AS email,
    NULLIF(CONCAT_WS(' ', first_name, last_name), '') AS name,
    phone                                        AS phone,
    company                                      AS company,
    address_line1                                AS "streetAddress",
    postal_code                                  AS "zipCode",
    city                                         AS city,
    country_code                                 AS country
FROM customers
WHERE email IS NOT NULL
  AND updated_at >= TIMESTAMP '{{ window_start }}'
  AND updated_at <  TIMESTAMP '{{ window_end }}'
