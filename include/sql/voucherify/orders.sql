-- Voucherify orders changed in the window, with their lines as a JSON array (items__json).
-- Amounts are integers in minor units. Deleted orders are not sent (Voucherify has no order delete).
-- The order date goes out twice: as `created_at` (a documented field of POST /v1/orders) and as
-- `metadata.ordered_at` (ISO 8601), because POST /v1/orders/import stamps `created_at` with the import
-- time and its page says to keep the real order date in order metadata; the import drops `created_at`.
-- `_item_count` (not sent) lets the suite check the documented cap of 500 items per order.
WITH changed AS (
    SELECT *
    FROM orders
    WHERE updated_at >= TIMESTAMP '{{ window_start }}'
      AND updated_at <  TIMESTAMP '{{ window_end }}'
),
lines AS (
    SELECT
        i.order_id,
        CAST(SUM(i.quantity * i.unit_price_cents) AS BIGINT) AS initial_amount,
        COUNT(*)                                             AS item_count,
{% if dialect == 'postgres' %}
        json_agg(json_build_object(
            'source_id', i.product_id, 'related_object', 'product', 'quantity', i.quantity,
            'price', i.unit_price_cents, 'amount', i.quantity * i.unit_price_cents
        ) ORDER BY i.line_no)::text AS items_json
{% else %}
        to_json(list(json_object(
            'source_id', i.product_id, 'related_object', 'product', 'quantity', i.quantity,
            'price', i.unit_price_cents, 'amount', i.quantity * i.unit_price_cents
        ) ORDER BY i.line_no))::VARCHAR AS items_json
{% endif %}
    FROM order_items i
    JOIN changed c ON c.order_id = i.order_id
    WHERE i.deleted_at IS NULL
    GROUP BY i.order_id
)
SELECT
    c.order_id                               AS _key,
    FALSE                                    AS _deleted,
    c.updated_at                             AS _updated_at,
    l.item_count                             AS _item_count,
    c.order_id                               AS source_id,
    c.status                                 AS status,
    c.total_cents                            AS amount,
    l.initial_amount                         AS initial_amount,
    c.discount_cents                         AS discount_amount,
    CAST(c.customer_id AS VARCHAR)           AS customer__source_id,
    c.ordered_at                             AS created_at,
    l.items_json                             AS items__json,
    c.currency                               AS metadata__currency,
    c.coupon_code                            AS metadata__coupon_code,
    c.ordered_at                             AS metadata__ordered_at
FROM changed c
LEFT JOIN lines l ON l.order_id = c.order_id
WHERE c.deleted_at IS NULL
