-- Splio Referral contacts changed in the window, one CSV line each. The column aliases are the file's
-- header: the four mandatory fields (unique id, email, last name, first name) first, then the custom
-- fields created in Splio Referral's settings (each must exist there, or Splio skips the file).
-- Splio has not published Referral's header names: these follow its Datahub conventions; rename here.
SELECT
    referral_id                                  AS _key,
    deleted_at IS NOT NULL                       AS _deleted,
    updated_at                                   AS _updated_at,
    referral_id                                  AS unique_id,
    LOWER(email)                                 AS email,
    last_name                                    AS lastname,
    first_name                                   AS firstname,
    LOWER(language)                              AS language,
    phone                                        AS cellphone,
    referrer_code                                AS referrer_code,
    referred_by                                  AS referred_by,
    loyalty_card                                 AS loyalty_card
FROM referral_contacts
WHERE updated_at >= TIMESTAMP '{{ window_start }}'
  AND updated_at <  TIMESTAMP '{{ window_end }}'
ORDER BY referral_id, updated_at  -- a stable line order: the same window always builds the same file
