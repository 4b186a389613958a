//! The migrations folder in Prisma's layout: `migration_lock.toml` plus one directory per
//! migration, `<14-digit timestamp>_<name>/migration.sql`. Pure: reads files, never a database,
//! and knows nothing of any particular release.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::error::{environment, usage};

/// One migration directory as it is on disk.
#[derive(Debug, Clone)]
pub struct Migration {
    pub name: String,
    pub path: PathBuf,
    pub script: String,
    /// Lowercase hex SHA-256 of the raw bytes of `migration.sql`, as Prisma computes it.
    pub checksum: String,
}

/// The `migrations/` folder of this repository.
pub fn default_dir() -> PathBuf {
    crate::project::root().join("migrations")
}

/// Lowercase hex SHA-256 of `bytes`, as Prisma records it.
pub(crate) fn checksum(bytes: &[u8]) -> String {
    datahub_core::password::sha256_hex(bytes)
}

/// Whether `name` has Prisma's shape: 14 digits, an underscore, then letters, digits, `_` or `-`.
pub(crate) fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    bytes.len() > 15
        && bytes[..14].iter().all(u8::is_ascii_digit)
        && bytes[14] == b'_'
        && bytes[15..]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
}

/// Reads every migration in `dir`, sorted by name (the timestamp prefix orders them).
pub fn read_dir(dir: &Path) -> Result<Vec<Migration>> {
    let entries = std::fs::read_dir(dir).map_err(|error| {
        environment(format!(
            "cannot read the migrations folder `{}`: {error}; run from the repository or pass `--migrations-dir DIR`",
            dir.display()
        ))
    })?;
    check_lock_file(dir)?;
    let mut migrations = Vec::new();
    for entry in entries {
        let entry = entry
            .map_err(|error| environment(format!("cannot list `{}`: {error}", dir.display())))?;
        let path = entry.path();
        if !path.is_dir() {
            // Prisma ignores files next to the migration directories (the lock file, READMEs).
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_valid_name(&name) {
            return Err(environment(format!(
                "`{}` is not a migration directory name: expected `<14-digit UTC timestamp>_<name>` like `20251201000000_init`; rename or remove it (new ones come from `cargo xtask migrate new NAME`)",
                path.display()
            )));
        }
        let script_path = path.join("migration.sql");
        let bytes = std::fs::read(&script_path).map_err(|error| {
            environment(format!(
                "migration `{name}` has no readable `migration.sql` (`{}`: {error}); restore the file or remove the directory",
                script_path.display()
            ))
        })?;
        let checksum = checksum(&bytes);
        let script = String::from_utf8(bytes).map_err(|_| {
            environment(format!(
                "`{}` is not valid UTF-8; save it as UTF-8",
                script_path.display()
            ))
        })?;
        migrations.push(Migration {
            name,
            path,
            script,
            checksum,
        });
    }
    migrations.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(migrations)
}

fn check_lock_file(dir: &Path) -> Result<()> {
    let lock_path = dir.join("migration_lock.toml");
    let Ok(text) = std::fs::read_to_string(&lock_path) else {
        return Ok(());
    };
    let provider = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix("provider"))
        .map(|rest| rest.trim().trim_start_matches('=').trim().trim_matches('"'));
    match provider {
        Some("postgresql") | None => Ok(()),
        Some(other) => Err(environment(format!(
            "`{}` says provider `{other}`, but these migrations are for PostgreSQL; set `provider = \"postgresql\"`",
            lock_path.display()
        ))),
    }
}

impl Migration {
    /// The index name when the script is a single `CREATE [UNIQUE] INDEX CONCURRENTLY "name"`
    /// statement. Such a migration cannot run in a transaction, and a failed attempt leaves an
    /// INVALID index of that name behind.
    pub fn concurrent_index(&self) -> Option<String> {
        let code: String = self
            .script
            .lines()
            .filter(|line| !line.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join(" ");
        let statements: Vec<&str> = code
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let [statement] = statements.as_slice() else {
            return None;
        };
        let words: Vec<&str> = statement.split_whitespace().collect();
        let rest = match words.as_slice() {
            ["CREATE", "INDEX", "CONCURRENTLY", rest @ ..] => rest,
            ["CREATE", "UNIQUE", "INDEX", "CONCURRENTLY", rest @ ..] => rest,
            _ => return None,
        };
        let name = rest.first()?;
        let name = name.split('(').next()?;
        Some(name.trim_matches('"').to_string())
    }
}

/// The migration whose script `query` is, as `pg_stat_activity` shows a running query: the
/// script as sent (Prisma and `migrate deploy` both send the whole file as one query), or its
/// beginning when the text is cut at `track_activity_query_size`. Recognises another tool's
/// deploy, a psql session or the backend of a killed deploy that goes on running.
pub(crate) fn running_script<'a>(query: &str, migrations: &'a [Migration]) -> Option<&'a str> {
    let query = query.trim();
    if query.is_empty() {
        return None;
    }
    migrations
        .iter()
        .find(|m| {
            let script = m.script.trim();
            script == query || (query.len() >= 32 && script.starts_with(query))
        })
        .map(|m| m.name.as_str())
}

/// The local migration called `name`, or a usage error listing what exists.
pub(crate) fn find<'a>(migrations: &'a [Migration], name: &str) -> Result<&'a Migration> {
    migrations.iter().find(|m| m.name == name).ok_or_else(|| {
        let known: Vec<&str> = migrations.iter().map(|m| m.name.as_str()).collect();
        usage(format!(
            "there is no migration `{name}` in the migrations folder; known: {}",
            known.join(", ")
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_is_lowercase_hex_sha256_of_raw_bytes() {
        assert_eq!(
            checksum(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_ne!(checksum(b"a;\r\n"), checksum(b"a;\n"));
    }

    #[test]
    fn concurrent_index_migrations_are_recognised() {
        let migration = |script: &str| Migration {
            name: "20251219170100_x".into(),
            path: PathBuf::new(),
            script: script.into(),
            checksum: String::new(),
        };
        assert_eq!(
            migration("-- note; with a semicolon\nCREATE INDEX CONCURRENTLY \"A_b_idx\" ON \"A\"(\"b\");\n")
                .concurrent_index()
                .as_deref(),
            Some("A_b_idx")
        );
        assert_eq!(
            migration("CREATE INDEX \"A_b_idx\" ON \"A\"(\"b\");").concurrent_index(),
            None
        );
        assert_eq!(
            migration("CREATE INDEX CONCURRENTLY a ON t(b); SELECT 1;").concurrent_index(),
            None
        );
        for migration in read_dir(&default_dir()).unwrap() {
            let concurrent = migration
                .script
                .lines()
                .any(|l| !l.trim_start().starts_with("--") && l.contains("CONCURRENTLY"));
            assert_eq!(
                concurrent,
                migration.concurrent_index().is_some(),
                "{}",
                migration.name
            );
        }
    }

    #[test]
    fn names_follow_prisma_layout() {
        assert!(is_valid_name(
            "20251219170000_add_workspace_to_datahub_models"
        ));
        assert!(is_valid_name("20251219170000_a-b"));
        assert!(!is_valid_name("2025_init"));
        assert!(!is_valid_name("20251219170000_"));
        assert!(!is_valid_name("20251219170000-init"));
        assert!(!is_valid_name("20251219170000_bad name"));
    }
}
