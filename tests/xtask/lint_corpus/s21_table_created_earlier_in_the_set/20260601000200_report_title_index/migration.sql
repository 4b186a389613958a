-- `Report` was created by the migration before, in the same pull request: it is empty.
CREATE INDEX "Report_title_idx" ON "Report"("title");
