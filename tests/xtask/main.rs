//! Tests of `cargo xtask` commands against real PostgreSQL: a `mod` per command, one binary.

mod backfill;
mod bad_input;
mod bounded_waits;
mod check_verify;
mod cli;
mod concurrency;
mod database_url;
mod demo;
mod faults;
mod hostile_inputs;
mod incident;
mod lock_safety;
mod migrate_drift;
mod migrate_lint;
mod migrate_new;
mod migrate_resolve;
mod migrate_status;
mod prisma;
mod recover;
mod release;
mod replica;
mod rollback;
mod smoke;
mod snapshots;
mod status;
mod support;
