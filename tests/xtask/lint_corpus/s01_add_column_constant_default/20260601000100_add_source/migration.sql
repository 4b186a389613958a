-- A constant default is stored in the catalog ("fast default"): no rewrite, a brief lock.
ALTER TABLE "MetricDaily" ADD COLUMN "source" TEXT NOT NULL DEFAULT 'api';
