CREATE UNIQUE INDEX CONCURRENTLY "Insight_userId_title_key" ON "Insight"("userId", "title");
