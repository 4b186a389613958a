ALTER TABLE "ChatMessage" ADD COLUMN "receivedAt" TIMESTAMP(3) DEFAULT clock_timestamp();
