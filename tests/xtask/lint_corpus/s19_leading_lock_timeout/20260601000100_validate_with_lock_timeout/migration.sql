-- A migration that sets its own lock_timeout first, then changes the catalog only.
SET lock_timeout = '500ms';
ALTER TABLE "Insight" ADD COLUMN "reviewerId" TEXT;
ALTER TABLE "Insight" ADD CONSTRAINT "Insight_reviewerId_fkey" FOREIGN KEY ("reviewerId") REFERENCES "User"("id") ON DELETE SET NULL ON UPDATE CASCADE NOT VALID;
