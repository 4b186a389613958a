//! The four Data Hub tables that move from `userId` to `workspaceId` ownership, in the order
//! the runbook lists them. Table names here are our constants, safe to splice as identifiers.

pub const DATAHUB_TABLES: [&str; 4] = ["Connection", "MetricDaily", "Insight", "ChatMessage"];

/// `ARRAY['Connection', ...]` ordering used by every verification query (the seeds' order).
pub const TABLE_ORDER_SQL: &str = "array_position(ARRAY['Connection','MetricDaily','Insight','ChatMessage']::text[], table_name::text)";
