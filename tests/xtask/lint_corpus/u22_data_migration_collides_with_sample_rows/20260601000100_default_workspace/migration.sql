-- A data migration: its row collides with the shadow's sample rows (ids '1' to '20'), not
-- with production's. The statements after it are still judged, on tables without rows, and
-- the UPDATE, which needs rows to be judged, is reported as not judged.
INSERT INTO "Workspace" ("id", "name", "slug") VALUES ('1', 'Default', 'default');
UPDATE "MetricDaily" SET "currencyCode" = 'EUR';
CREATE INDEX "MetricDaily_provider_idx" ON "MetricDaily"("provider");
