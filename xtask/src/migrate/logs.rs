//! The `logs` of a failed `_prisma_migrations` row: written as native Prisma writes them (its
//! P3018 text), and read back for the one thing a person needs, the database error, whichever
//! tool wrote the row. Pure.
//!
//! Three writers exist:
//! - native Prisma and `cargo xtask`: `… Migration name: NAME\n\nDatabase error code: CODE\n\n
//!   Database error:\nERROR: message[\nDETAIL: …][\nHINT: …]`, followed (native only) by a blank
//!   line, the driver's debug dump and a span trace;
//! - Prisma's JS engine (driver adapters): `external connector error\n` then the message, either
//!   `Error querying the database: ERROR: …` or an adapter's own words (`Unique constraint
//!   failed: (c)`), then the span trace starting `   0: `;
//! - anything else: its first line.
//!
//! The span trace names source files of the engine (`at schema-engine/…:113`); it is never
//! shown.

/// The failed row's `logs` for a script that failed with `error`: native Prisma's P3018 text.
pub(crate) fn prisma_logs(name: &str, error: &postgres::Error) -> String {
    let (code, message) = match error.as_db_error() {
        Some(db) => {
            let mut message = format!("{}: {}", db.severity(), db.message());
            if let Some(detail) = db.detail() {
                message.push_str(&format!("\nDETAIL: {detail}"));
            }
            if let Some(hint) = db.hint() {
                message.push_str(&format!("\nHINT: {hint}"));
            }
            if let Some(location) = db.where_() {
                message.push_str(&format!("\nCONTEXT: {location}"));
            }
            (db.code().code().to_string(), message)
        }
        None => ("none".to_string(), crate::db::describe_driver_error(error)),
    };
    format!(
        "A migration failed to apply. New migrations cannot be applied before the error is recovered from. Read more about how to resolve migration issues in a production database: https://pris.ly/d/migrate-resolve\n\nMigration name: {name}\n\nDatabase error code: {code}\n\nDatabase error:\n{message}\n"
    )
}

/// The database error a failed row's `logs` record, on one line: `ERROR: message (SQLSTATE
/// code)` when the writer recorded the code, the detail and hint appended after ` — `.
pub(crate) fn database_error(logs: &str) -> String {
    let lines: Vec<&str> = logs.lines().collect();
    let (code, message) = if let Some(start) = lines.iter().position(|l| *l == "Database error:") {
        let code = lines
            .iter()
            .find_map(|l| l.strip_prefix("Database error code: "))
            .filter(|code| *code != "none");
        // Where in a function the error was raised is ours alone, and no help in one line.
        let message: Vec<&str> = lines[start + 1..]
            .iter()
            .take_while(|l| !l.trim().is_empty() && !is_span_trace(l))
            .filter(|l| !l.starts_with("CONTEXT: "))
            .copied()
            .collect();
        (code, message)
    } else if lines.first() == Some(&"external connector error") {
        let message: Vec<&str> = lines[1..]
            .iter()
            .take_while(|l| !is_span_trace(l))
            .map(|l| l.strip_prefix("Error querying the database: ").unwrap_or(l))
            .filter(|l| !l.trim().is_empty())
            .collect();
        (None, message)
    } else {
        let first = lines.iter().find(|l| !l.trim().is_empty()).copied();
        (None, first.into_iter().collect())
    };
    let mut text = match message.as_slice() {
        [] => "(no error recorded)".to_string(),
        [first, rest @ ..] => {
            let mut text = first.trim().to_string();
            for line in rest {
                text.push_str(" — ");
                text.push_str(line.trim());
            }
            text
        }
    };
    if let Some(code) = code {
        text.push_str(&format!(" (SQLSTATE {code})"));
    }
    text
}

/// A line of an engine's span trace: `   0: sql_schema_connector::…`, `           with …`,
/// `             at schema-engine/…`.
fn is_span_trace(line: &str) -> bool {
    let trimmed = line.trim_start();
    let numbered = trimmed
        .split_once(": ")
        .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    (line.starts_with("  ") && numbered)
        || trimmed.starts_with("at schema-engine/")
        || trimmed.starts_with("with migration_name=")
        || trimmed.starts_with("DbError {")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPAN_TRACE: &str = "   0: sql_schema_connector::apply_migration::apply_script
           with migration_name=\"20251219171000_datahub_workspace_not_null\"
             at schema-engine/connectors/sql-schema-connector/src/apply_migration.rs:113
   1: schema_commands::commands::apply_migrations::Applying migration
           with migration_name=\"20251219171000_datahub_workspace_not_null\"
             at schema-engine/commands/src/commands/apply_migrations.rs:95";

    #[test]
    fn the_js_engine_logs() {
        let logs = format!(
            "external connector error\nError querying the database: ERROR: Cannot enforce NOT NULL: NULL values found (Connection: 0, MetricDaily: 1, Insight: 0, ChatMessage: 0). Run the backfill first.\n{SPAN_TRACE}"
        );
        assert_eq!(
            database_error(&logs),
            "ERROR: Cannot enforce NOT NULL: NULL values found (Connection: 0, MetricDaily: 1, Insight: 0, ChatMessage: 0). Run the backfill first."
        );
        let with_detail = format!(
            "external connector error\nError querying the database: ERROR: boom 42\nDETAIL: the detail\nHINT: the hint\n{SPAN_TRACE}"
        );
        assert_eq!(
            database_error(&with_detail),
            "ERROR: boom 42 — DETAIL: the detail — HINT: the hint"
        );
        let mapped =
            format!("external connector error\nUnique constraint failed: (c)\n{SPAN_TRACE}");
        assert_eq!(database_error(&mapped), "Unique constraint failed: (c)");
    }

    #[test]
    fn the_native_engine_logs() {
        let logs = format!(
            "A migration failed to apply. New migrations cannot be applied before the error is recovered from. Read more about how to resolve migration issues in a production database: https://pris.ly/d/migrate-resolve\n\nMigration name: 20251219171000_datahub_workspace_not_null\n\nDatabase error code: P0001\n\nDatabase error:\nERROR: Cannot enforce NOT NULL: NULL values found\n\nDbError {{ severity: \"ERROR\", parsed_severity: Some(Error), code: SqlState(E_P0001) }}\n\n{SPAN_TRACE}"
        );
        assert_eq!(
            database_error(&logs),
            "ERROR: Cannot enforce NOT NULL: NULL values found (SQLSTATE P0001)"
        );
        for line in database_error(&logs).lines() {
            assert!(!line.contains("schema-engine/"), "{line}");
        }
    }

    #[test]
    fn our_earlier_logs_and_anything_else() {
        let ours = "Database error code: 55P03\n\nDatabase error:\nERROR: canceling statement due to lock timeout\nCONTEXT: SQL statement";
        assert_eq!(
            database_error(ours),
            "ERROR: canceling statement due to lock timeout (SQLSTATE 55P03)"
        );
        assert_eq!(database_error("something odd\nsecond"), "something odd");
        assert_eq!(database_error(""), "(no error recorded)");
    }
}
