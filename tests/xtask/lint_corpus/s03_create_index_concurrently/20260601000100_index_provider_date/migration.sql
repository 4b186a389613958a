CREATE INDEX CONCURRENTLY "MetricDaily_provider_date_idx" ON "MetricDaily"("provider", "date");
