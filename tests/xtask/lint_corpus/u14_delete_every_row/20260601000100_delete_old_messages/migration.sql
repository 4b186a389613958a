DELETE FROM "ChatMessage" WHERE "createdAt" < TIMESTAMP '2100-01-01';
