ALTER TABLE "Insight" ADD CONSTRAINT "Insight_userId_title_key" UNIQUE ("userId", "title");
