ALTER TABLE "Insight" ADD COLUMN "reviewerId" TEXT;
