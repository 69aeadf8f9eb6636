-- Every SALESmanago contact key the warehouse still holds (no window): the erasure sweep deletes at
-- SALESmanago the contacts this pipeline delivered whose key is no longer here (a hard delete, e.g. a GDPR
-- erasure, or an email changed since: the old address's contact goes). _key must be the same expression as
-- in contacts.sql. Soft-deleted rows stay in: the delta deletes those.
SELECT DISTINCT
    LOWER(email)                                 AS _key
FROM customers
WHERE email IS NOT NULL
