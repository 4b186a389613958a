-- A user connects a provider once per workspace: the key of "Connection" becomes
-- ("workspaceId", "userId", "provider"). Its unique index is built CONCURRENTLY, so inserts and
-- updates of "Connection" go on while it builds. PostgreSQL runs CREATE INDEX CONCURRENTLY only
-- outside a transaction: it is the only statement in this file. The next migration makes it
-- the table's key and drops the pre-tenancy key ("userId", "provider").

-- CreateIndex
CREATE UNIQUE INDEX CONCURRENTLY "Connection_workspaceId_userId_provider_key" ON "Connection"("workspaceId", "userId", "provider");
