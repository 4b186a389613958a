-- Contract: "workspaceId" becomes NOT NULL on the four Data Hub tables. No data is changed.
-- The guard fails the whole migration, with the NULL count per table, while any NULL is left:
-- run `cargo xtask backfill` (and `cargo xtask check`) first.

-- No statement here waits more than 500 ms for a table lock, whichever tool runs the file: a
-- migration that cannot get its lock fails (`cargo xtask migrate deploy` retries it) instead of
-- queueing the app's queries behind its request. SET LOCAL ends with this script, so the next
-- migration of the same deploy (a CONCURRENTLY index build, say) does not inherit it.
SET LOCAL lock_timeout = '500ms';

DO $$
DECLARE
    connection_nulls BIGINT;
    metric_daily_nulls BIGINT;
    insight_nulls BIGINT;
    chat_message_nulls BIGINT;
BEGIN
    -- Count NULLs first
    SELECT COUNT(*) INTO connection_nulls FROM "Connection" WHERE "workspaceId" IS NULL;
    SELECT COUNT(*) INTO metric_daily_nulls FROM "MetricDaily" WHERE "workspaceId" IS NULL;
    SELECT COUNT(*) INTO insight_nulls FROM "Insight" WHERE "workspaceId" IS NULL;
    SELECT COUNT(*) INTO chat_message_nulls FROM "ChatMessage" WHERE "workspaceId" IS NULL;

    -- Fail if any NULLs exist
    IF connection_nulls > 0 OR metric_daily_nulls > 0 OR insight_nulls > 0 OR chat_message_nulls > 0 THEN
        RAISE EXCEPTION 'Cannot enforce NOT NULL: NULL values found (Connection: %, MetricDaily: %, Insight: %, ChatMessage: %). Run the backfill first.',
            connection_nulls, metric_daily_nulls, insight_nulls, chat_message_nulls;
    END IF;

    -- The expand migration added the NOT NULL checks NOT VALID; an emergency rollback re-adds
    -- them. Should one be missing all the same, add it here (a brief lock, held to commit).
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'Connection_workspaceId_not_null' AND conrelid = '"Connection"'::regclass) THEN
        ALTER TABLE "Connection" ADD CONSTRAINT "Connection_workspaceId_not_null" CHECK ("workspaceId" IS NOT NULL) NOT VALID;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'MetricDaily_workspaceId_not_null' AND conrelid = '"MetricDaily"'::regclass) THEN
        ALTER TABLE "MetricDaily" ADD CONSTRAINT "MetricDaily_workspaceId_not_null" CHECK ("workspaceId" IS NOT NULL) NOT VALID;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'Insight_workspaceId_not_null' AND conrelid = '"Insight"'::regclass) THEN
        ALTER TABLE "Insight" ADD CONSTRAINT "Insight_workspaceId_not_null" CHECK ("workspaceId" IS NOT NULL) NOT VALID;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'ChatMessage_workspaceId_not_null' AND conrelid = '"ChatMessage"'::regclass) THEN
        ALTER TABLE "ChatMessage" ADD CONSTRAINT "ChatMessage_workspaceId_not_null" CHECK ("workspaceId" IS NOT NULL) NOT VALID;
    END IF;
END $$;

-- VALIDATE scans each table under SHARE UPDATE EXCLUSIVE, which blocks neither reads nor writes,
-- so waiting for it queues no app query and the wait may be longer: past `deadlock_timeout`
-- (1 s by default), after which PostgreSQL cancels an autovacuum that holds the table, as one
-- does for minutes after a backfill has updated every row. A 500 ms try never outlasts it.
SET LOCAL lock_timeout = '10s';
ALTER TABLE "Connection" VALIDATE CONSTRAINT "Connection_workspaceId_not_null";
ALTER TABLE "MetricDaily" VALIDATE CONSTRAINT "MetricDaily_workspaceId_not_null";
ALTER TABLE "Insight" VALIDATE CONSTRAINT "Insight_workspaceId_not_null";
ALTER TABLE "ChatMessage" VALIDATE CONSTRAINT "ChatMessage_workspaceId_not_null";

ALTER TABLE "Connection" VALIDATE CONSTRAINT "Connection_workspaceId_fkey";
ALTER TABLE "MetricDaily" VALIDATE CONSTRAINT "MetricDaily_workspaceId_fkey";
ALTER TABLE "Insight" VALIDATE CONSTRAINT "Insight_workspaceId_fkey";
ALTER TABLE "ChatMessage" VALIDATE CONSTRAINT "ChatMessage_workspaceId_fkey";

-- SET NOT NULL takes ACCESS EXCLUSIVE, held until commit, but skips its table scan because the
-- validated check already proves there are no NULLs; the check is then redundant and dropped.
-- ACCESS EXCLUSIVE queues every app query behind its request: short waits again. No autovacuum
-- can hold these tables now, since this transaction holds SHARE UPDATE EXCLUSIVE on all four.
SET LOCAL lock_timeout = '500ms';
ALTER TABLE "Connection" ALTER COLUMN "workspaceId" SET NOT NULL;
ALTER TABLE "Connection" DROP CONSTRAINT "Connection_workspaceId_not_null";
ALTER TABLE "MetricDaily" ALTER COLUMN "workspaceId" SET NOT NULL;
ALTER TABLE "MetricDaily" DROP CONSTRAINT "MetricDaily_workspaceId_not_null";
ALTER TABLE "Insight" ALTER COLUMN "workspaceId" SET NOT NULL;
ALTER TABLE "Insight" DROP CONSTRAINT "Insight_workspaceId_not_null";
ALTER TABLE "ChatMessage" ALTER COLUMN "workspaceId" SET NOT NULL;
ALTER TABLE "ChatMessage" DROP CONSTRAINT "ChatMessage_workspaceId_not_null";
