-- A migration that silences the session's messages does not hide its rewrite.
SET client_min_messages = warning;
ALTER TABLE "MetricDaily" ALTER COLUMN "clicks" SET DATA TYPE BIGINT;
