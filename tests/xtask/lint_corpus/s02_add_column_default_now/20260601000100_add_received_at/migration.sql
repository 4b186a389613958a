-- now() is stable, evaluated once for the ALTER: no rewrite.
ALTER TABLE "ChatMessage" ADD COLUMN "receivedAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP;
