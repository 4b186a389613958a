//! The Data Hub app against real PostgreSQL: tenancy isolation route by route, bad input, and
//! the app attacked, flooded and cut off from its database.

mod bad_input;
mod browser;
mod cli;
mod deadline;
mod fair_share;
mod isolation;
mod logs;
mod outage;
mod pages;
mod pooler;
mod refusals;
mod sessions;
mod shutdown;
mod sign_in;
mod slow_clients;
mod strict;
mod support;
