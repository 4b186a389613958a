-- Built CONCURRENTLY, so inserts and updates of "Connection" go on while it builds. PostgreSQL runs
-- CREATE INDEX CONCURRENTLY only outside a transaction: it is the only statement in this file.

-- CreateIndex
CREATE INDEX CONCURRENTLY "Connection_workspaceId_provider_idx" ON "Connection"("workspaceId", "provider");
