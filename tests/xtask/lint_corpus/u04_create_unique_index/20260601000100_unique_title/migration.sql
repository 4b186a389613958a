CREATE UNIQUE INDEX "Insight_userId_title_key" ON "Insight"("userId", "title");
