-- Prisma's "added a required column without a default": refused on any table with rows.
ALTER TABLE "MetricDaily" ADD COLUMN "source" TEXT NOT NULL;
