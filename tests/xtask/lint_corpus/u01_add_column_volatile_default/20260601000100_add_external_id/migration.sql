-- A volatile default is evaluated for every existing row: PostgreSQL rewrites the table.
ALTER TABLE "MetricDaily" ADD COLUMN "externalId" UUID NOT NULL DEFAULT gen_random_uuid();
