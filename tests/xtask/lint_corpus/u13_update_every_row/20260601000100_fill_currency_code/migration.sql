UPDATE "MetricDaily" SET "currencyCode" = 'EUR' WHERE "currencyCode" IS NULL;
