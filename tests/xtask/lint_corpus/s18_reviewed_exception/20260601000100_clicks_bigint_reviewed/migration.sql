-- lint: allow table-rewrite because MetricDaily is rewritten in the maintenance window of 2026-06-01
ALTER TABLE "MetricDaily" ALTER COLUMN "clicks" SET DATA TYPE BIGINT;
