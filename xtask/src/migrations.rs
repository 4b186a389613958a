//! The migrations folder in Prisma's layout: `migration_lock.toml` plus one directory per
//! migration holding its `migration.sql`. Pure: reads files, never a database, and knows nothing
//! of any particular release.
//!
//! Which directories are migrations, and their order, are Prisma's rules, so that both tools see
//! the same list: every directory directly inside the folder is a migration whatever its name
//! (`0_init`, Prisma's documented baseline folder, included), plain files next to them are
//! ignored, and the list is sorted the way Prisma's CLI sorts it (`localeCompare`, ICU
//! collation: `_` before digits before letters, case and accents compared only after the
//! letters themselves). Where Prisma would stop half way, we refuse up front: a directory
//! without `migration.sql` (Prisma deploys the migrations before it, then fails with P3015) and
//! a symbolic link to a directory (Prisma silently skips it) are errors naming the fix.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::error::{environment, usage};

/// One migration directory as it is on disk.
#[derive(Debug, Clone)]
pub struct Migration {
    pub name: String,
    pub path: PathBuf,
    pub script: String,
    /// Lowercase hex SHA-256 of the raw bytes of `migration.sql`, as Prisma records it.
    pub checksum: String,
    /// `release.toml` beside `migration.sql`: the release this migration expands, declared
    /// (see `releases`). Prisma reads only `migration.sql`, so the file is ours alone.
    pub declaration: Option<String>,
}

/// The `migrations/` folder of this repository.
pub fn default_dir() -> PathBuf {
    crate::project::root().join("migrations")
}

/// Lowercase hex SHA-256 of `bytes`, as Prisma records it.
pub(crate) fn checksum(bytes: &[u8]) -> String {
    datahub_core::password::sha256_hex(bytes)
}

/// `_prisma_migrations.migration_name` is `VARCHAR(255)`.
const MAX_NAME_CHARS: usize = 255;

/// Reads every migration in `dir`, in Prisma's order.
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
        // `file_type` does not follow symbolic links, as Prisma's `readdir` does not.
        let file_type = entry
            .file_type()
            .map_err(|error| environment(format!("cannot read `{}`: {error}", path.display())))?;
        if file_type.is_symlink() && path.is_dir() {
            return Err(environment(format!(
                "`{}` is a symbolic link to a folder: Prisma Migrate skips links, so it would never apply it while `cargo xtask` did; replace the link with the folder itself",
                path.display()
            )));
        }
        if !file_type.is_dir() {
            // Prisma ignores files next to the migration directories (the lock file, READMEs).
            continue;
        }
        let name = entry.file_name().into_string().map_err(|_| {
            environment(format!(
                "the folder name `{}` is not valid UTF-8; rename it",
                path.display()
            ))
        })?;
        if name.chars().count() > MAX_NAME_CHARS {
            return Err(environment(format!(
                "the migration name `{name}` is longer than {MAX_NAME_CHARS} characters, the size of `_prisma_migrations.migration_name`; rename the folder"
            )));
        }
        let script_path = path.join("migration.sql");
        let bytes = std::fs::read(&script_path).map_err(|error| {
            environment(format!(
                "the folder `{}` holds no readable `migration.sql` ({error}), so it is a migration without a script (Prisma would apply the migrations before it, then stop with P3015); restore the file or remove the folder",
                path.display()
            ))
        })?;
        let checksum = checksum(&bytes);
        let script = String::from_utf8(bytes).map_err(|_| {
            environment(format!(
                "`{}` is not valid UTF-8; save it as UTF-8",
                script_path.display()
            ))
        })?;
        let declaration = read_declaration(&path)?;
        migrations.push(Migration {
            name,
            path,
            script,
            checksum,
            declaration,
        });
    }
    migrations.sort_by(|a, b| prisma_order(&a.name, &b.name));
    Ok(migrations)
}

/// The file that declares a release beside a migration's script.
pub const DECLARATION_FILE: &str = "release.toml";

fn read_declaration(path: &Path) -> Result<Option<String>> {
    let file = path.join(DECLARATION_FILE);
    match std::fs::read_to_string(&file) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(environment(format!(
            "cannot read `{}` ({error}); save it as UTF-8 text or remove it",
            file.display()
        ))),
    }
}

/// Prisma's order of migration names. Prisma 6's CLI sorts the folder with JavaScript's
/// `a.localeCompare(b)`: ICU's root collation, compared level by level over the whole name.
/// First the letters, digits and punctuation themselves (punctuation before digits before
/// letters, `_` first of all, case and accents ignored), then the accents, then the case
/// (lowercase first); the bytes break a remaining tie. This is exact for ASCII names and for
/// the accented letters of Latin-1; other characters sort after the letters, by code point.
/// So `0_init` < `1_b` < `10_a` < `20251201000000_init`, where byte order puts `10_a` first.
pub fn prisma_order(a: &str, b: &str) -> Ordering {
    let (a_key, b_key) = (CollationKey::of(a), CollationKey::of(b));
    a_key
        .primary
        .cmp(&b_key.primary)
        .then_with(|| a_key.secondary.cmp(&b_key.secondary))
        .then_with(|| a_key.tertiary.cmp(&b_key.tertiary))
        .then_with(|| a.cmp(b))
}

/// Space and punctuation in ICU's root order; all of them sort before the digits.
const PUNCTUATION_ORDER: &str = " _-,;:!?.'\"()[]{}@*/\\&#%`^+÷×<=>|~$";
/// Secondary weights: none for a plain character, then the accents in ICU's order.
const PLAIN: u8 = 0;
/// Tertiary weights: lowercase before uppercase; ß and æ after both.
const LOWER: u8 = 0;
const UPPER: u8 = 1;
const LIGATURE: u8 = 2;

#[derive(Default)]
struct CollationKey {
    primary: Vec<u32>,
    secondary: Vec<u8>,
    tertiary: Vec<u8>,
}

impl CollationKey {
    fn of(name: &str) -> CollationKey {
        let mut key = CollationKey::default();
        for c in name.chars() {
            match latin1_letter(c) {
                Some((base, accent, case)) => {
                    for b in base.chars() {
                        key.push(letter_weight(b), PLAIN, case);
                    }
                    if accent != PLAIN {
                        key.secondary.push(accent);
                    }
                }
                None if c.is_ascii_alphabetic() => {
                    let case = if c.is_ascii_uppercase() { UPPER } else { LOWER };
                    key.push(letter_weight(c.to_ascii_lowercase()), PLAIN, case);
                }
                None if c.is_ascii_digit() => {
                    key.push(1_000 + u32::from(c) - u32::from('0'), PLAIN, LOWER);
                }
                None => match PUNCTUATION_ORDER.chars().position(|p| p == c) {
                    Some(rank) => key.push(100 + rank as u32, PLAIN, LOWER),
                    None => key.push(100_000 + u32::from(c), PLAIN, LOWER),
                },
            }
        }
        key
    }

    fn push(&mut self, primary: u32, secondary: u8, tertiary: u8) {
        self.primary.push(primary);
        self.secondary.push(secondary);
        self.tertiary.push(tertiary);
    }
}

/// `a` to `z`, after the digits; `þ` after `z`, as in ICU.
fn letter_weight(letter: char) -> u32 {
    match letter {
        'þ' => 2_100,
        letter => 2_000 + u32::from(letter) - u32::from('a'),
    }
}

/// An accented letter of Latin-1 as ICU sees it: its base letter(s), its accent (a secondary
/// weight, in ICU's order: acute, grave, circumflex, ring, diaeresis, tilde, stroke, cedilla,
/// eth) and its case.
fn latin1_letter(c: char) -> Option<(&'static str, u8, u8)> {
    const ACUTE: u8 = 1;
    const GRAVE: u8 = 2;
    const CIRCUMFLEX: u8 = 3;
    const RING: u8 = 4;
    const DIAERESIS: u8 = 5;
    const TILDE: u8 = 6;
    const STROKE: u8 = 7;
    const CEDILLA: u8 = 8;
    const ETH: u8 = 9;
    let lower = c.to_lowercase().next().unwrap_or(c);
    let case = if lower == c { LOWER } else { UPPER };
    let (base, accent) = match lower {
        'á' => ("a", ACUTE),
        'à' => ("a", GRAVE),
        'â' => ("a", CIRCUMFLEX),
        'å' => ("a", RING),
        'ä' => ("a", DIAERESIS),
        'ã' => ("a", TILDE),
        'ç' => ("c", CEDILLA),
        'é' => ("e", ACUTE),
        'è' => ("e", GRAVE),
        'ê' => ("e", CIRCUMFLEX),
        'ë' => ("e", DIAERESIS),
        'í' => ("i", ACUTE),
        'ì' => ("i", GRAVE),
        'î' => ("i", CIRCUMFLEX),
        'ï' => ("i", DIAERESIS),
        'ð' => ("d", ETH),
        'ñ' => ("n", TILDE),
        'ó' => ("o", ACUTE),
        'ò' => ("o", GRAVE),
        'ô' => ("o", CIRCUMFLEX),
        'ö' => ("o", DIAERESIS),
        'õ' => ("o", TILDE),
        'ø' => ("o", STROKE),
        'ú' => ("u", ACUTE),
        'ù' => ("u", GRAVE),
        'û' => ("u", CIRCUMFLEX),
        'ü' => ("u", DIAERESIS),
        'ý' => ("y", ACUTE),
        'ÿ' => ("y", DIAERESIS),
        'þ' => ("þ", PLAIN),
        'æ' => return Some(("ae", PLAIN, LIGATURE + case)),
        'ß' => return Some(("ss", PLAIN, LIGATURE + 1)),
        _ => return None,
    };
    Some((base, accent, case))
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
            declaration: None,
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

    /// Each file that takes table locks bounds its own waits, so a deploy by Prisma (which sets
    /// no `lock_timeout`) never queues the app either; a `CREATE INDEX CONCURRENTLY` file cannot
    /// hold a second statement and takes no lock that blocks the app.
    #[test]
    fn every_migration_bounds_its_lock_waits() {
        for migration in read_dir(&default_dir()).unwrap() {
            let first_statement = migration
                .script
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with("--"));
            assert!(
                migration.concurrent_index().is_some()
                    || first_statement == Some("SET LOCAL lock_timeout = '500ms';"),
                "{} starts with {first_statement:?}",
                migration.name
            );
        }
    }

    #[test]
    fn names_sort_as_prisma_sorts_them() {
        // The order real Prisma 6.19.3 applied these folders in (`_` before digits before
        // letters; case only after the letters); byte order differs in almost every pair.
        let prisma = [
            "0_init",
            "1_b",
            "10_a",
            "2_c",
            "2025_y",
            "20251201000000_x",
            "20251201000000_X2",
            "20251201000000-dash",
            "a_lower",
            "A_upper",
            "B_upper",
            "é_accent",
        ];
        let mut names = prisma.to_vec();
        names.reverse();
        names.sort_by(|a, b| prisma_order(a, b));
        assert_eq!(names, prisma);
        let mut accents = [
            "ob", "ø", "õ", "ö", "ô", "ò", "ó", "o", "ß", "ss", "SS", "st",
        ];
        accents.sort_by(|a, b| prisma_order(a, b));
        assert_eq!(
            accents,
            ["o", "ó", "ò", "ô", "ö", "õ", "ø", "ob", "ss", "SS", "ß", "st"]
        );
    }

    #[test]
    fn any_folder_with_a_script_is_a_migration() {
        let dir = std::env::temp_dir().join(format!("xtask-migrations-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for name in ["20251201000000_init", "0_init", ".hidden", "a b"] {
            std::fs::create_dir_all(dir.join(name)).unwrap();
            std::fs::write(dir.join(name).join("migration.sql"), "SELECT 1;\n").unwrap();
        }
        std::fs::write(dir.join("README.md"), "notes\n").unwrap();
        let names: Vec<String> = read_dir(&dir)
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(names, [".hidden", "0_init", "20251201000000_init", "a b"]);

        std::fs::create_dir_all(dir.join("20251219000000_no_script")).unwrap();
        let error = read_dir(&dir).unwrap_err().to_string();
        assert!(
            error.contains("holds no readable `migration.sql`"),
            "{error}"
        );
        std::fs::remove_dir_all(dir.join("20251219000000_no_script")).unwrap();

        std::os::unix::fs::symlink(dir.join("0_init"), dir.join("1_linked")).unwrap();
        let error = read_dir(&dir).unwrap_err().to_string();
        assert!(error.contains("is a symbolic link to a folder"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
