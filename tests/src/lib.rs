//! Shared test support for the Data Hub workspace: a real PostgreSQL for every test.

pub mod harness;
