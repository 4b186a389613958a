ALTER TABLE "MetricDaily" ADD CONSTRAINT "MetricDaily_clicks_check" CHECK ("clicks" >= 0) NOT VALID;
