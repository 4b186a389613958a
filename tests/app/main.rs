//! The Data Hub app against real PostgreSQL: tenancy isolation route by route, and bad input.

mod bad_input;
mod cli;
mod isolation;
mod support;
