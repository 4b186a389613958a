-- The index built CONCURRENTLY by the previous migration becomes the key of "Connection"
-- (ADD CONSTRAINT … USING INDEX adopts it: catalog only, no scan), and the pre-tenancy key
-- ("userId", "provider"), which refused a provider in a user's second workspace, is dropped.
-- Both take ACCESS EXCLUSIVE on "Connection" for milliseconds (no scan, no rewrite; `cargo xtask
-- migrate lint` checks it), held until commit.
-- Deploy the app of this release first: it names no key in its ON CONFLICT, so it works with
-- and without the old key, whereas the previous app's ON CONFLICT ("userId", "provider") needs it.

-- No statement here waits more than 500 ms for a table lock, whichever tool runs the file: a
-- migration that cannot get its lock fails (`cargo xtask migrate deploy` retries it) instead of
-- queueing the app's queries behind its request. SET LOCAL ends with this script.
SET LOCAL lock_timeout = '500ms';

-- AddUniqueConstraint
ALTER TABLE "Connection" ADD CONSTRAINT "Connection_workspaceId_userId_provider_key" UNIQUE USING INDEX "Connection_workspaceId_userId_provider_key";

-- DropIndex
DROP INDEX "Connection_userId_provider_key";
