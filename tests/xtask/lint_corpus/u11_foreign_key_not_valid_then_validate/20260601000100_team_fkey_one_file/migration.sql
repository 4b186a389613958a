-- NOT VALID, then VALIDATE in the same file: the ADD's SHARE ROW EXCLUSIVE on both tables is
-- still held (a migration is one transaction) while VALIDATE reads every row.
ALTER TABLE "Insight" ADD CONSTRAINT "Insight_teamId_fkey" FOREIGN KEY ("teamId") REFERENCES "Workspace"("id") ON DELETE SET NULL ON UPDATE CASCADE NOT VALID;
ALTER TABLE "Insight" VALIDATE CONSTRAINT "Insight_teamId_fkey";
