//! What the Data Hub app and its release tooling (`cargo xtask`) share, so the two can never
//! read one thing two ways: the Prisma database URL, password hashes and tokens, the providers,
//! number formatting and the session cookie's name. Synchronous, with no web framework and no
//! async runtime: the app wraps it, xtask calls it directly.

pub mod format;
pub mod password;
pub mod pg_url;
pub mod providers;

/// The cookie that carries a session token: set by the app, presented by the smoke test.
pub const SESSION_COOKIE: &str = "datahub_session";
