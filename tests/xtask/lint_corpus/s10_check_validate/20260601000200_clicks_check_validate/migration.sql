ALTER TABLE "MetricDaily" VALIDATE CONSTRAINT "MetricDaily_clicks_check";
