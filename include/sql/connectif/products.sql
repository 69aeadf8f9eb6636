-- Connectif products changed in the window, keyed by the store's product id; prices in currency units.
SELECT
    product_id                                   AS _key,
    deleted_at IS NOT NULL                       AS _deleted,
    updated_at                                   AS _updated_at,
    name                                         AS name,
    description                                  AS description,
    brand                                        AS brand,
    CASE WHEN in_stock THEN 'instock' ELSE 'outofstock' END AS availability,
    CAST(price_cents AS DOUBLE PRECISION) / 100  AS "unitPrice",
    image_url                                    AS "imageUrl",
    url                                          AS "productDetailUrl",
    stock_units                                  AS "inStockUnits"
FROM products
WHERE updated_at >= TIMESTAMP '{{ window_start }}'
  AND updated_at <  TIMESTAMP '{{ window_end }}'
