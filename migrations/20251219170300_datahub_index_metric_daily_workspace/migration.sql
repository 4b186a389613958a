-- Built CONCURRENTLY, so inserts and updates of "MetricDaily" go on while it builds. PostgreSQL runs
-- CREATE INDEX CONCURRENTLY only outside a transaction: it is the only statement in this file.

-- CreateIndex
CREATE INDEX CONCURRENTLY "MetricDaily_workspaceId_idx" ON "MetricDaily"("workspaceId");
