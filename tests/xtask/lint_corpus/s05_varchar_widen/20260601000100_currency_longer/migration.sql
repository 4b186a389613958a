-- Widening a varchar only changes the catalog.
ALTER TABLE "Connection" ALTER COLUMN "currency" SET DATA TYPE VARCHAR(20);
