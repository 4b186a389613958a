-- Contract: "MetricDaily"."connectionId" becomes NOT NULL. No data is changed. The guard fails
-- the whole migration while any NULL is left.

SET LOCAL lock_timeout = '500ms';

DO $$
DECLARE
    nulls BIGINT;
BEGIN
    SELECT COUNT(*) INTO nulls FROM "MetricDaily" WHERE "connectionId" IS NULL;
    IF nulls > 0 THEN
        RAISE EXCEPTION 'Cannot enforce NOT NULL: NULL values found (MetricDaily: %). Run the backfill first.', nulls;
    END IF;
END $$;

-- VALIDATE scans under SHARE UPDATE EXCLUSIVE, which blocks neither reads nor writes.
SET LOCAL lock_timeout = '10s';
ALTER TABLE "MetricDaily" VALIDATE CONSTRAINT "MetricDaily_connectionId_not_null";
ALTER TABLE "MetricDaily" VALIDATE CONSTRAINT "MetricDaily_connectionId_fkey";

-- Catalog only: the validated check proves there is no NULL.
SET LOCAL lock_timeout = '500ms';
ALTER TABLE "MetricDaily" ALTER COLUMN "connectionId" SET NOT NULL;
ALTER TABLE "MetricDaily" DROP CONSTRAINT "MetricDaily_connectionId_not_null";
