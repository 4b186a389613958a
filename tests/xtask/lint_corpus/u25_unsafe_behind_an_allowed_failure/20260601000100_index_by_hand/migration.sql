-- lint: allow fails because the index is built by hand in production
CREATE INDEX CONCURRENTLY "Insight_title_idx" ON "Insight"("title");
SELECT 1;
