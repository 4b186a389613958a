-- Expand: the four Data Hub tables get a nullable "workspaceId".
-- No existing row is changed here; `cargo xtask backfill` fills the column afterwards.
-- Every statement only touches the catalog or takes a brief lock: the foreign keys and the
-- NOT NULL checks are added NOT VALID (no table scan), and the contract migration validates them.
-- The indexes on "workspaceId" follow in migrations of their own, built CONCURRENTLY.

-- No statement here waits more than 500 ms for a table lock, whichever tool runs the file: a
-- migration that cannot get its lock fails (`cargo xtask migrate deploy` retries it) instead of
-- queueing the app's queries behind its request. SET LOCAL ends with this script, so the next
-- migration of the same deploy (a CONCURRENTLY index build, say) does not inherit it.
SET LOCAL lock_timeout = '500ms';

-- AlterTable
ALTER TABLE "Connection" ADD COLUMN "workspaceId" TEXT;

-- AlterTable
ALTER TABLE "MetricDaily" ADD COLUMN "workspaceId" TEXT;

-- AlterTable
ALTER TABLE "Insight" ADD COLUMN "workspaceId" TEXT;

-- AlterTable
ALTER TABLE "ChatMessage" ADD COLUMN "workspaceId" TEXT;

-- AddForeignKey
ALTER TABLE "Connection" ADD CONSTRAINT "Connection_workspaceId_fkey" FOREIGN KEY ("workspaceId") REFERENCES "Workspace"("id") ON DELETE CASCADE ON UPDATE CASCADE NOT VALID;

-- AddForeignKey
ALTER TABLE "MetricDaily" ADD CONSTRAINT "MetricDaily_workspaceId_fkey" FOREIGN KEY ("workspaceId") REFERENCES "Workspace"("id") ON DELETE CASCADE ON UPDATE CASCADE NOT VALID;

-- AddForeignKey
ALTER TABLE "Insight" ADD CONSTRAINT "Insight_workspaceId_fkey" FOREIGN KEY ("workspaceId") REFERENCES "Workspace"("id") ON DELETE CASCADE ON UPDATE CASCADE NOT VALID;

-- AddForeignKey
ALTER TABLE "ChatMessage" ADD CONSTRAINT "ChatMessage_workspaceId_fkey" FOREIGN KEY ("workspaceId") REFERENCES "Workspace"("id") ON DELETE CASCADE ON UPDATE CASCADE NOT VALID;

-- The home workspace of each user (the backfill rule): the earliest OWNER membership, else the
-- earliest membership of any role; ties broken by the smallest membership id.
CREATE VIEW "datahub_home_workspace" AS
SELECT DISTINCT ON (m."userId") m."userId" AS "userId", m."workspaceId" AS "workspaceId"
FROM "WorkspaceMember" m
ORDER BY m."userId", (m."role" = 'OWNER') DESC, m."createdAt", m."id";

-- A user without any membership gets a personal workspace with an id and slug derived from the
-- user id, so that running this twice (or from two sessions at once) creates it only once.
CREATE FUNCTION "datahub_ensure_personal_workspace"(user_id TEXT) RETURNS TEXT
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO "Workspace" ("id", "name", "slug")
    SELECT 'personal_' || u."id", COALESCE(u."name", u."email") || '''s workspace', 'personal-' || u."id"
    FROM "User" u
    WHERE u."id" = user_id
    ON CONFLICT DO NOTHING;

    INSERT INTO "WorkspaceMember" ("id", "workspaceId", "userId", "role")
    VALUES ('personal_' || user_id, 'personal_' || user_id, user_id, 'OWNER')
    ON CONFLICT DO NOTHING;

    RETURN 'personal_' || user_id;
END;
$$;

-- The workspace a row of `user_id` belongs to, creating the personal workspace when needed.
CREATE FUNCTION "datahub_home_workspace_id"(user_id TEXT) RETURNS TEXT
LANGUAGE plpgsql AS $$
DECLARE
    home_id TEXT;
BEGIN
    SELECT h."workspaceId" INTO home_id FROM "datahub_home_workspace" h WHERE h."userId" = user_id;
    IF home_id IS NULL THEN
        home_id := "datahub_ensure_personal_workspace"(user_id);
    END IF;
    RETURN home_id;
END;
$$;

-- An app version that does not know "workspaceId" keeps running between expand and contract.
-- Its inserts and updates must not leave NULLs behind, so a BEFORE trigger fills the column from
-- "userId" by the backfill rule. The WHEN clause keeps the trigger off rows that already have one.
CREATE FUNCTION "datahub_fill_workspace_id"() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
BEGIN
    NEW."workspaceId" := "datahub_home_workspace_id"(NEW."userId");
    RETURN NEW;
END;
$$;

-- CreateTrigger
CREATE TRIGGER "Connection_fill_workspaceId" BEFORE INSERT OR UPDATE ON "Connection"
FOR EACH ROW WHEN (NEW."workspaceId" IS NULL) EXECUTE FUNCTION "datahub_fill_workspace_id"();

-- CreateTrigger
CREATE TRIGGER "MetricDaily_fill_workspaceId" BEFORE INSERT OR UPDATE ON "MetricDaily"
FOR EACH ROW WHEN (NEW."workspaceId" IS NULL) EXECUTE FUNCTION "datahub_fill_workspace_id"();

-- CreateTrigger
CREATE TRIGGER "Insight_fill_workspaceId" BEFORE INSERT OR UPDATE ON "Insight"
FOR EACH ROW WHEN (NEW."workspaceId" IS NULL) EXECUTE FUNCTION "datahub_fill_workspace_id"();

-- CreateTrigger
CREATE TRIGGER "ChatMessage_fill_workspaceId" BEFORE INSERT OR UPDATE ON "ChatMessage"
FOR EACH ROW WHEN (NEW."workspaceId" IS NULL) EXECUTE FUNCTION "datahub_fill_workspace_id"();

-- The NOT NULL of the contract, announced early: NOT VALID checks are enforced on every new or
-- changed row from now on but do not scan existing rows. The contract validates them without
-- blocking writes, after which SET NOT NULL needs no scan of its own.
ALTER TABLE "Connection" ADD CONSTRAINT "Connection_workspaceId_not_null" CHECK ("workspaceId" IS NOT NULL) NOT VALID;

ALTER TABLE "MetricDaily" ADD CONSTRAINT "MetricDaily_workspaceId_not_null" CHECK ("workspaceId" IS NOT NULL) NOT VALID;

ALTER TABLE "Insight" ADD CONSTRAINT "Insight_workspaceId_not_null" CHECK ("workspaceId" IS NOT NULL) NOT VALID;

ALTER TABLE "ChatMessage" ADD CONSTRAINT "ChatMessage_workspaceId_not_null" CHECK ("workspaceId" IS NOT NULL) NOT VALID;
