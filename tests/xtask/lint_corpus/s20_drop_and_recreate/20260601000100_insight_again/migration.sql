-- The same name, another table: the new one is empty, and nothing waits on it.
DROP TABLE "Insight";
CREATE TABLE "Insight" (
    "id" TEXT NOT NULL,
    "title" TEXT NOT NULL,
    CONSTRAINT "Insight_pkey" PRIMARY KEY ("id")
);
CREATE INDEX "Insight_title_idx" ON "Insight"("title");
ALTER TABLE "Insight" ADD COLUMN "score" DOUBLE PRECISION NOT NULL DEFAULT random();
