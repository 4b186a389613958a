-- Each batch commits: no row stays locked for more than one batch.
DO $$
DECLARE
    n INTEGER;
BEGIN
    LOOP
        UPDATE "MetricDaily" SET "currencyCode" = 'EUR'
        WHERE "id" IN (SELECT "id" FROM "MetricDaily" WHERE "currencyCode" IS NULL ORDER BY "id" LIMIT 5);
        GET DIAGNOSTICS n = ROW_COUNT;
        EXIT WHEN n = 0;
        COMMIT;
    END LOOP;
END $$;
