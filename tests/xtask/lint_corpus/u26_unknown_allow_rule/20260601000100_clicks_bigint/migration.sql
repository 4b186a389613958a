-- lint: allow tabel-rewrite because MetricDaily is rewritten in the maintenance window
ALTER TABLE "MetricDaily" ALTER COLUMN "clicks" SET DATA TYPE BIGINT;
