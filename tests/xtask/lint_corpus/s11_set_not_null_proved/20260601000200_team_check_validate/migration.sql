ALTER TABLE "Insight" VALIDATE CONSTRAINT "Insight_teamId_not_null";
