UPDATE "MetricDaily" SET "currencyCode" = 'USD' WHERE "id" = (SELECT min("id") FROM "MetricDaily");
