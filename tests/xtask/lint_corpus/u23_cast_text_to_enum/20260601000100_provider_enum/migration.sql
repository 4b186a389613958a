CREATE TYPE "Provider" AS ENUM ('google_ads', 'meta_ads');
ALTER TABLE "Insight" ALTER COLUMN "provider" TYPE "Provider" USING "provider"::"Provider";
