ALTER TABLE "Insight" ADD COLUMN "reviewerId" TEXT;
ALTER TABLE "Insight" ADD CONSTRAINT "Insight_reviewerId_fkey" FOREIGN KEY ("reviewerId") REFERENCES "User"("id") ON DELETE SET NULL ON UPDATE CASCADE;
CREATE INDEX "Insight_reviewerId_idx" ON "Insight"("reviewerId");
