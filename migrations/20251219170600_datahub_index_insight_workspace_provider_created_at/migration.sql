-- Built CONCURRENTLY, so inserts and updates of "Insight" go on while it builds. PostgreSQL runs
-- CREATE INDEX CONCURRENTLY only outside a transaction: it is the only statement in this file.

-- CreateIndex
CREATE INDEX CONCURRENTLY "Insight_workspaceId_provider_createdAt_idx" ON "Insight"("workspaceId", "provider", "createdAt");
