ALTER TABLE "MetricDaily" ADD COLUMN "note" TEXT;
CREATE INDEX CONCURRENTLY "MetricDaily_note_idx" ON "MetricDaily"("note");
