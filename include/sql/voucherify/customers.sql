-- Voucherify customers changed in the window [window_start, window_end).
-- Field mapping: column names are Voucherify's fields; a__b nests as {"a": {"b": ...}}; NULLs are not sent.
-- Meta columns: _key (source_id at Voucherify), _deleted (soft delete -> delete at Voucherify if we created it).
SELECT
    CAST(customer_id AS VARCHAR)                 AS _key,
    deleted_at IS NOT NULL                       AS _deleted,
    updated_at                                   AS _updated_at,
    CAST(customer_id AS VARCHAR)                 AS source_id,
    NULLIF(CONCAT_WS(' ', first_name, last_name), '') AS name,
    email                                        AS email,
    phone                                        AS phone,
    birth_date                                   AS birthdate,
    address_line1                                AS address__line_1,
    address_line2                                AS address__line_2,
    city                                         AS address__city,
    region                                       AS address__state,
    postal_code                                  AS address__postal_code,
    country_code                                 AS address__country,
    language                                     AS metadata__language,
    email_marketing_consent                      AS metadata__email_marketing_consent,
    email_transactional_consent                  AS metadata__email_transactional_consent,
    sms_marketing_consent                        AS metadata__sms_marketing_consent,
    sms_transactional_consent                    AS metadata__sms_transactional_consent,
    loyalty_points                               AS metadata__loyalty_points
FROM customers
WHERE updated_at >= TIMESTAMP '{{ window_start }}'
  AND updated_at <  TIMESTAMP '{{ window_end }}'
