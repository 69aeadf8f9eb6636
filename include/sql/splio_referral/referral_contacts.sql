-- Splio Referral contacts changed in the window, one CSV line each. The column aliases are the file's
-- header: the four mandatory fields (unique id, email, last name, first name) first, then the custom
-- fields created in Splio Referral's settings (each must exist there, or Splio skips the file).
-- Splio has not published Referral's header names: these follow its Datahub conventions; rename here.
-- Mandatory values are sent as they are (never trimmed to empty): the suite quarantines blank ones.
SELECT
    referral_id                                  AS _key,
    deleted_at IS NOT NULL                       AS _deleted,
    updated_at                                   AS _updated_at,
    referral_id                                  AS unique_id,
    LOWER(email)                                 AS email,
    last_name                                    AS lastname,
    first_name                                   AS firstname,
    CASE  -- Splio's 2-letter codes; a language Splio does not list is left empty (optional column)
        WHEN LOWER(TRIM(language)) IN ('ar', 'br', 'ca', 'cz', 'de', 'en', 'es', 'fr', 'gr', 'it', 'ja',
                                       'kr', 'nl', 'pl', 'ru', 'tr', 'zh') THEN LOWER(TRIM(language))
        WHEN LOWER(TRIM(language)) = 'el' THEN 'gr'  -- ISO 639-1 Greek
        WHEN LOWER(TRIM(language)) = 'cs' THEN 'cz'  -- ISO 639-1 Czech
        WHEN LOWER(TRIM(language)) = 'ko' THEN 'kr'  -- ISO 639-1 Korean
    END                                          AS language,
    CASE WHEN phone LIKE '+%' THEN '00' || SUBSTRING(phone, 2) ELSE phone END
                                                 AS cellphone,  -- Splio's form: 0033...
    referrer_code                                AS referrer_code,
    referred_by                                  AS referred_by,
    loyalty_card                                 AS loyalty_card
FROM referral_contacts
WHERE updated_at >= TIMESTAMP '{{ window_start }}'
  AND updated_at <  TIMESTAMP '{{ window_end }}'
ORDER BY referral_id, updated_at  -- a stable line order: the same window always builds the same file
