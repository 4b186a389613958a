-- The columns the lint corpus works on, added the online-safe way: nullable, no default, so
-- ALTER TABLE only changes the catalog (a brief ACCESS EXCLUSIVE lock, no scan).
ALTER TABLE "Connection" ADD COLUMN "currency" VARCHAR(10);
ALTER TABLE "MetricDaily" ADD COLUMN "currencyCode" TEXT;
ALTER TABLE "Insight" ADD COLUMN "teamId" TEXT;
