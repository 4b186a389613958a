-- lint: allow table-rewrite
ALTER TABLE "MetricDaily" ALTER COLUMN "clicks" SET DATA TYPE BIGINT;
