-- The contract's pattern: VALIDATE first (no blocking lock held yet), then SET NOT NULL, proved.
ALTER TABLE "Insight" VALIDATE CONSTRAINT "Insight_teamId_not_null";
ALTER TABLE "Insight" ALTER COLUMN "teamId" SET NOT NULL;
ALTER TABLE "Insight" DROP CONSTRAINT "Insight_teamId_not_null";
