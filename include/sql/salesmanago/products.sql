-- SALESmanago products (through Data Talks) changed in the window, sent as arrays of documented product
-- items: `id` (String 32, required), the required name/description/category/brand/url/image_url, and the
-- typed `price` (Decimal) and `stock_available` (Integer). The required fields, non-blank rules and length
-- limits are in the expectation suite (a blank or overlong field quarantines the row with the rule named).
-- Not sent: `special_price` (the warehouse has no discounted price), `sex` (no such column); NULL columns
-- are left out of the payload.
SELECT
    product_id                                   AS _key,
    deleted_at IS NOT NULL                       AS _deleted,
    updated_at                                   AS _updated_at,
    product_id                                   AS id,
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
    CAST(price_cents / 100.0 AS DECIMAL(12, 2))  AS price,
    CAST(stock_units AS INTEGER)                 AS stock_available
FROM products
WHERE updated_at >= TIMESTAMP '{{ window_start }}'
  AND updated_at <  TIMESTAMP '{{ window_end }}'
