-- Salesfire customers changed in the window, one request each, to the list named in _list.
-- Lists: UK customers to 'customers-uk', everyone else to 'customers-eu' (each list's secret is in the
-- connection's extra "lists"). Types and channels follow the customer's consents; attribute keys are
-- Salesfire attributes (lowercase snake_case) and their values are text.
-- update_existing is not mapped here: it is a per-list setting of the connection (extra "update_existing").
-- Meta columns: _key (ledger key), _deleted (Salesfire has no delete: counted, not sent), _list (target list),
-- _email_or_mobile (email and phone as they are, joined: the suite checks that one is present and not blank)
-- and the raw consents (checked by the suite, never sent).
SELECT
    CAST(customer_id AS VARCHAR)                         AS _key,
    deleted_at IS NOT NULL                               AS _deleted,
    updated_at                                           AS _updated_at,
    CASE WHEN country_code = 'GB' THEN 'customers-uk' ELSE 'customers-eu' END AS _list,
    CONCAT_WS('', email, phone)                          AS _email_or_mobile,
    email_marketing_consent                              AS _email_marketing_consent,
    email_transactional_consent                          AS _email_transactional_consent,
    sms_marketing_consent                                AS _sms_marketing_consent,
    sms_transactional_consent                            AS _sms_transactional_consent,
    email                                                AS email,
    phone                                                AS mobile_number,
    CASE
        WHEN (email_marketing_consent = 'GRANTED' OR sms_marketing_consent = 'GRANTED')
         AND (email_transactional_consent = 'GRANTED' OR sms_transactional_consent = 'GRANTED')
            THEN '["MARKETING","TRANSACTIONAL"]'
        WHEN email_marketing_consent = 'GRANTED' OR sms_marketing_consent = 'GRANTED' THEN '["MARKETING"]'
        WHEN email_transactional_consent = 'GRANTED' OR sms_transactional_consent = 'GRANTED'
            THEN '["TRANSACTIONAL"]'
        ELSE '[]'
    END                                                  AS types__json,
    CASE
        WHEN email IS NOT NULL AND phone IS NOT NULL THEN '["EMAIL","SMS"]'
        WHEN email IS NOT NULL THEN '["EMAIL"]'
        WHEN phone IS NOT NULL THEN '["SMS"]'
        ELSE '[]'
    END                                                  AS channels__json,
    NULLIF(CONCAT_WS(' ', first_name, last_name), '')    AS attributes__name,
    birth_date                                           AS attributes__date_of_birth,
    city                                                 AS attributes__city,
    CAST(loyalty_points AS VARCHAR)                      AS attributes__loyalty_points
FROM customers
WHERE updated_at >= TIMESTAMP '{{ window_start }}'
  AND updated_at <  TIMESTAMP '{{ window_end }}'
