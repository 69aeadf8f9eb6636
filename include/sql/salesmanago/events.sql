-- SALESmanago external events: behavioural events and orders that changed in the window, one event each.
-- externalId is the ledger key: an event goes once (Data Talks' de-duplication of externalId is unknown).
-- An order gives a PURCHASE when paid or fulfilled and a CANCELLED when cancelled: two distinct events.
-- contactExtEventType must be one of the documented values (checked by the suite). detail2 carries when the
-- event happened; _occurred_at (typed, never sent) lets the suite refuse a date after the window end.
WITH order_products AS (  -- the window's orders' product ids, in line order
    SELECT i.order_id, STRING_AGG(i.product_id, ',' ORDER BY i.line_no) AS products
    FROM order_items i
    JOIN orders o ON o.order_id = i.order_id
    WHERE o.updated_at >= TIMESTAMP '{{ window_start }}'
      AND o.updated_at <  TIMESTAMP '{{ window_end }}'
    GROUP BY i.order_id
)
SELECT
    'event-' || e.event_id                       AS _key,
    e.deleted_at IS NOT NULL                     AS _deleted,
    e.updated_at                                 AS _updated_at,
    LOWER(c.email)                               AS email,
    CASE e.event_type
        WHEN 'page_view' THEN 'VISIT' WHEN 'product_view' THEN 'VISIT' WHEN 'add_to_cart' THEN 'CART'
        WHEN 'checkout' THEN 'CART' WHEN 'login' THEN 'LOGIN' WHEN 'search' THEN 'OTHER'
        ELSE UPPER(e.event_type) END             AS "contactExtEventType",
    'event-' || e.event_id                       AS "externalId",
    e.event_type                                 AS description,
    e.product_id                                 AS products,
    e.url                                        AS location,
    CAST(e.value_cents AS DOUBLE PRECISION) / 100 AS value,
    'shop.example.com'                           AS "shopDomain",
    e.session_id                                 AS detail1,
    CAST(e.occurred_at AS VARCHAR)               AS detail2,
    e.occurred_at                                AS _occurred_at
FROM events e
JOIN customers c ON c.customer_id = e.customer_id AND c.deleted_at IS NULL
WHERE e.updated_at >= TIMESTAMP '{{ window_start }}'
  AND e.updated_at <  TIMESTAMP '{{ window_end }}'
UNION ALL
SELECT
    'order-' || o.order_id || '-' || CASE WHEN UPPER(o.status) = 'CANCELED' THEN 'CANCELLED' ELSE 'PURCHASE' END AS _key,
    o.deleted_at IS NOT NULL                     AS _deleted,
    o.updated_at                                 AS _updated_at,
    LOWER(c.email)                               AS email,
    CASE WHEN UPPER(o.status) = 'CANCELED' THEN 'CANCELLED' ELSE 'PURCHASE' END AS "contactExtEventType",
    'order-' || o.order_id || '-' || CASE WHEN UPPER(o.status) = 'CANCELED' THEN 'CANCELLED' ELSE 'PURCHASE' END AS "externalId",
    'order ' || o.order_id                       AS description,
    op.products                                  AS products,
    NULL                                         AS location,
    CAST(o.total_cents AS DOUBLE PRECISION) / 100 AS value,
    'shop.example.com'                           AS "shopDomain",
    o.currency                                   AS detail1,
    CAST(o.ordered_at AS VARCHAR)                AS detail2,
    o.ordered_at                                 AS _occurred_at
FROM orders o
JOIN customers c ON c.customer_id = o.customer_id AND c.deleted_at IS NULL
LEFT JOIN order_products op ON op.order_id = o.order_id
WHERE o.updated_at >= TIMESTAMP '{{ window_start }}'
  AND o.updated_at <  TIMESTAMP '{{ window_end }}'
  AND UPPER(o.status) IN ('PAID', 'FULFILLED', 'CANCELED')
