-- Connectif purchases: paid or fulfilled orders changed in the window, with their lines (products__json).
WITH changed AS (
    SELECT o.*, c.email
    FROM orders o
    JOIN customers c ON c.customer_id = o.customer_id AND c.deleted_at IS NULL
    WHERE o.updated_at >= TIMESTAMP '{{ window_start }}'
      AND o.updated_at <  TIMESTAMP '{{ window_end }}'
      AND o.deleted_at IS NULL
),
lines AS (
    SELECT
        i.order_id,
        CAST(SUM(i.quantity) AS BIGINT) AS total_quantity,
{% if dialect == 'postgres' %}
        json_agg(json_build_object(
            'productId', i.product_id, 'name', p.name, 'unitPrice', i.unit_price_cents / 100.0,
            'quantity', i.quantity, 'price', i.quantity * i.unit_price_cents / 100.0
        ) ORDER BY i.line_no)::text AS products_json
{% else %}
        to_json(list(json_object(
            'productId', i.product_id, 'name', p.name, 'unitPrice', i.unit_price_cents / 100.0,
            'quantity', i.quantity, 'price', i.quantity * i.unit_price_cents / 100.0
        ) ORDER BY i.line_no))::VARCHAR AS products_json
{% endif %}
    FROM order_items i
    JOIN changed c ON c.order_id = i.order_id
    JOIN (SELECT DISTINCT ON (product_id) product_id, name FROM products ORDER BY product_id, updated_at DESC) p
      ON p.product_id = i.product_id
    WHERE i.deleted_at IS NULL
    GROUP BY i.order_id
)
SELECT
    c.order_id                                   AS _key,
    FALSE                                        AS _deleted,
    c.updated_at                                 AS _updated_at,
    c.status                                     AS _status,
    c.order_id                                   AS "purchaseId",
    c.order_id                                   AS "cartId",
    LOWER(c.email)                               AS "contactEmail",
    c.ordered_at                                 AS "purchaseDate",
    CAST(c.total_cents AS DOUBLE PRECISION) / 100 AS "totalPrice",
    l.total_quantity                             AS "totalQuantity",
    l.products_json                              AS products__json
FROM changed c
JOIN lines l ON l.order_id = c.order_id
WHERE UPPER(c.status) IN ('PAID', 'FULFILLED')
