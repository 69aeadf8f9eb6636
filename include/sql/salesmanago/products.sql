-- SALESmanago products (through Data Talks) changed in the window, sent as arrays; the documented
-- required fields and length limits are in the expectation suite (an overlong field quarantines the row).
SELECT
    product_id                                   AS _key,
    deleted_at IS NOT NULL                       AS _deleted,
    updated_at                                   AS _updated_at,
    product_id                                   AS product_id,
    name                                         AS name,
    description                                  AS description,
    category                                     AS category,
    sub_category                                 AS sub_category,
    brand                                        AS brand,
    url                                          AS url,
    image_url                                    AS image_url,
    color                                        AS color,
    season                                       AS season,
    sku                                          AS detail1,
    CAST(CAST(price_cents AS DOUBLE PRECISION) / 100 AS VARCHAR) AS detail2
FROM products
WHERE updated_at >= TIMESTAMP '{{ window_start }}'
  AND updated_at <  TIMESTAMP '{{ window_end }}'
