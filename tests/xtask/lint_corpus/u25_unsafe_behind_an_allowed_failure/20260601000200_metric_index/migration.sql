CREATE INDEX "MetricDaily_provider_idx" ON "MetricDaily"("provider");
