-- Expand: every daily metric row names the connection it was measured through
-- ("MetricDaily"."connectionId", nullable for now). No existing row is changed here;
-- `cargo xtask backfill --release metric-connection` fills the column afterwards.

SET LOCAL lock_timeout = '500ms';

-- AlterTable
ALTER TABLE "MetricDaily" ADD COLUMN "connectionId" TEXT;

-- AddForeignKey
ALTER TABLE "MetricDaily" ADD CONSTRAINT "MetricDaily_connectionId_fkey" FOREIGN KEY ("connectionId") REFERENCES "Connection"("id") ON DELETE CASCADE ON UPDATE CASCADE NOT VALID;

-- The connection of a metric row: the workspace's connection of the row's user for its
-- provider, created DISCONNECTED when the user never connected it (an id derived from the
-- three, so running this twice, or from two sessions at once, creates it once).
CREATE FUNCTION "datahub_metric_connection_id"(p_workspace_id TEXT, p_user_id TEXT, p_provider TEXT) RETURNS TEXT
LANGUAGE plpgsql AS $$
DECLARE
    found_id TEXT;
BEGIN
    SELECT c."id" INTO found_id FROM "Connection" c
    WHERE c."workspaceId" = p_workspace_id AND c."userId" = p_user_id AND c."provider" = p_provider;
    IF found_id IS NULL THEN
        found_id := 'conn_' || md5(p_workspace_id || '/' || p_user_id || '/' || p_provider);
        INSERT INTO "Connection" ("id", "workspaceId", "userId", "provider", "status")
        VALUES (found_id, p_workspace_id, p_user_id, p_provider, 'DISCONNECTED')
        ON CONFLICT DO NOTHING;
        SELECT c."id" INTO found_id FROM "Connection" c
        WHERE c."workspaceId" = p_workspace_id AND c."userId" = p_user_id AND c."provider" = p_provider;
    END IF;
    RETURN found_id;
END;
$$;

-- The previous app writes metric rows without it: a trigger fills it.
-- Triggers fire in name order, so this one runs before the tenancy release's, which fills
-- "workspaceId" on rows an app from before tenancy writes: the workspace comes first here too.
CREATE FUNCTION "datahub_fill_metric_connection_id"() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW."workspaceId" IS NULL THEN
        NEW."workspaceId" := "datahub_home_workspace_id"(NEW."userId");
    END IF;
    NEW."connectionId" := "datahub_metric_connection_id"(NEW."workspaceId", NEW."userId", NEW."provider");
    RETURN NEW;
END;
$$;

-- CreateTrigger
CREATE TRIGGER "MetricDaily_fill_connectionId" BEFORE INSERT OR UPDATE ON "MetricDaily"
FOR EACH ROW WHEN (NEW."connectionId" IS NULL) EXECUTE FUNCTION "datahub_fill_metric_connection_id"();

-- The contract's NOT NULL, announced: enforced on new and changed rows, existing ones unscanned.
ALTER TABLE "MetricDaily" ADD CONSTRAINT "MetricDaily_connectionId_not_null" CHECK ("connectionId" IS NOT NULL) NOT VALID;
