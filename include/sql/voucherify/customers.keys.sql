-- Every Voucherify customer key the warehouse still holds (no window): the erasure sweep deletes at
-- Voucherify the customers this pipeline delivered whose key is no longer here (a hard delete, e.g. a GDPR
-- erasure). _key must be the same expression as in customers.sql. Soft-deleted rows stay in: the delta
-- deletes those.
SELECT DISTINCT
    CAST(customer_id AS VARCHAR)                 AS _key
FROM customers
