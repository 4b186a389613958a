-- In a migration of its own: SHARE UPDATE EXCLUSIVE on Insight, ROW SHARE on Workspace.
ALTER TABLE "Insight" VALIDATE CONSTRAINT "Insight_teamId_fkey";
