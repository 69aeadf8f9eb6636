-- Connectif coupons: codes free to hand out (status NEW) that appeared in the window, keyed by the code.
-- couponSetId is Connectif's id of the set: here the warehouse's own set id; join a mapping table or use
-- a CASE if your Connectif coupon sets have other ids. The payload is the set only, so a code goes once.
SELECT
    coupon_code                                  AS _key,
    deleted_at IS NOT NULL                       AS _deleted,
    updated_at                                   AS _updated_at,
    status                                       AS _status,
    coupon_set_id                                AS "couponSetId"
FROM coupons
WHERE status = 'NEW'
  AND updated_at >= TIMESTAMP '{{ window_start }}'
  AND updated_at <  TIMESTAMP '{{ window_end }}'
