-- No valid CHECK proves it: SET NOT NULL reads every row under ACCESS EXCLUSIVE.
ALTER TABLE "Insight" ALTER COLUMN "teamId" SET NOT NULL;
