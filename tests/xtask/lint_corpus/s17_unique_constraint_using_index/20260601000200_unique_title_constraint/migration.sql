-- The index exists and is valid: the constraint only adopts it (catalog only).
ALTER TABLE "Insight" ADD CONSTRAINT "Insight_userId_title_key" UNIQUE USING INDEX "Insight_userId_title_key";
