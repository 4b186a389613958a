CREATE INDEX "MetricDaily_provider_date_idx" ON "MetricDaily"("provider", "date");
