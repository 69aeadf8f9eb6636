-- Connectif contacts changed in the window, keyed by email (Connectif's upsert key).
-- Built-in fields without their leading underscore (name -> _name); custom fields as custom__<field id>.
SELECT
    LOWER(email)                                   AS _key,
    deleted_at IS NOT NULL                         AS _deleted,
    updated_at                                     AS _updated_at,
    email_marketing_consent                        AS _email_marketing_consent,
    sms_marketing_consent                          AS _sms_marketing_consent,
    first_name                                     AS name,
    last_name                                      AS surname,
    birth_date                                     AS birthdate,
    phone                                          AS "mobilePhone",
    CASE email_marketing_consent WHEN 'GRANTED' THEN 'subscribed' WHEN 'DENIED' THEN 'unsubscribed' ELSE 'none' END
                                                   AS "newsletterSubscriptionStatus",
    CASE sms_marketing_consent WHEN 'GRANTED' THEN 'subscribed' WHEN 'DENIED' THEN 'unsubscribed' ELSE 'none' END
                                                   AS "smsSubscriptionStatus",
    loyalty_points                                 AS points,
    language                                       AS custom__language,
    city                                           AS custom__city
FROM customers
WHERE email IS NOT NULL
  AND updated_at >= TIMESTAMP '{{ window_start }}'
  AND updated_at <  TIMESTAMP '{{ window_end }}'
