-- Built CONCURRENTLY, so inserts and updates of "ChatMessage" go on while it builds. PostgreSQL runs
-- CREATE INDEX CONCURRENTLY only outside a transaction: it is the only statement in this file.

-- CreateIndex
CREATE INDEX CONCURRENTLY "ChatMessage_workspaceId_createdAt_idx" ON "ChatMessage"("workspaceId", "createdAt");
