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

/// The app's connections name themselves `datahub-app schema=<the newest migration it was built
/// with>` in `pg_stat_activity`, so `cargo xtask release` can tell a running app that predates a
/// migration (and cannot survive it) from one that knows it.
pub const APP_NAME: &str = "datahub-app";

/// `application_name` for an app built with migrations up to `schema`, cut to the 63 bytes
/// PostgreSQL keeps.
pub fn app_application_name(schema: &str) -> String {
    let mut name = format!("{APP_NAME} schema={schema}");
    while name.len() > 63 {
        name.pop();
    }
    name
}

/// What a connection's `application_name` says of the app behind it: `None` when it is not the
/// app; `Some(None)` for an app that names no schema (built before apps named one); else the
/// newest migration it knows, possibly cut short.
pub fn app_schema(application_name: &str) -> Option<Option<&str>> {
    let rest = application_name.strip_prefix(APP_NAME)?;
    if rest.is_empty() {
        return Some(None);
    }
    Some(rest.strip_prefix(" schema=").filter(|s| !s.is_empty()))
}

/// Whether an app that knows migrations up to `known` (possibly cut short) predates `migration`.
pub fn app_predates(known: Option<&str>, migration: &str) -> bool {
    match known {
        None => true,
        Some(known) => !migration.starts_with(known) && known < migration,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_names_its_schema_and_old_apps_are_told_apart() {
        let name = app_application_name("20260112090100_connection_workspace_user_provider_key");
        assert_eq!(name.len(), 63);
        let known = app_schema(&name).unwrap();
        assert!(!app_predates(
            known,
            "20260112090100_connection_workspace_user_provider_key"
        ));
        assert!(app_predates(known, "20260301000000_next"));
        assert!(app_predates(app_schema("datahub-app").unwrap(), "1_a"));
        assert_eq!(app_schema("psql"), None);
        assert!(!app_predates(
            Some("20260301000000_next"),
            "20260112090100_key"
        ));
    }
}
