-- The valid CHECK proves there is no NULL: SET NOT NULL skips its scan.
ALTER TABLE "Insight" ALTER COLUMN "teamId" SET NOT NULL;
ALTER TABLE "Insight" DROP CONSTRAINT "Insight_teamId_not_null";
