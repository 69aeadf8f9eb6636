-- Voucherify products changed in the window; price in minor units as Voucherify expects.
-- Optional metadata that is blank ('' or spaces) is not sent: NULL means "not given" (see docs/mapping.md).
SELECT
    product_id                 AS _key,
    deleted_at IS NOT NULL     AS _deleted,
    updated_at                 AS _updated_at,
    product_id                 AS source_id,
    name                       AS name,
    price_cents                AS price,
    image_url                  AS image_url,
    sku                        AS metadata__sku,
    CASE WHEN TRIM(brand) = '' THEN NULL ELSE brand END       AS metadata__brand,
    CASE WHEN TRIM(category) = '' THEN NULL ELSE category END AS metadata__category,
    currency                   AS metadata__currency,
    url                        AS metadata__url,
    in_stock                   AS metadata__in_stock
FROM products
WHERE updated_at >= TIMESTAMP '{{ window_start }}'
  AND updated_at <  TIMESTAMP '{{ window_end }}'
