-- Two "batches" in one migration are still one transaction: every row stays locked to the end.
UPDATE "MetricDaily" SET "currencyCode" = 'EUR' WHERE "id" IN (SELECT "id" FROM "MetricDaily" WHERE "currencyCode" IS NULL ORDER BY "id" LIMIT 10);
UPDATE "MetricDaily" SET "currencyCode" = 'EUR' WHERE "id" IN (SELECT "id" FROM "MetricDaily" WHERE "currencyCode" IS NULL ORDER BY "id" LIMIT 10);
