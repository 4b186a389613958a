//! Shared test support for the Data Hub workspace: a real PostgreSQL for every test, and real
//! Prisma beside it.

pub mod harness;
pub mod json_schema;
pub mod pgbouncer;
pub mod prisma;
pub mod small_disk;
