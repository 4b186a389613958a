-- A new name, the same table with the same rows: the index build still reads all of them.
ALTER TABLE "Insight" RENAME TO "Finding";
CREATE INDEX "Finding_title_idx" ON "Finding"("title");
