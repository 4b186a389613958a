//! The README's two walk-throughs, run as the README writes them: every block marked
//! `<!-- walk-through: NAME -->`, in order, against a fresh database (`DATABASE_URL`) and a copy
//! of the migrations (`--migrations-dir`). A `sh` block's commands go to the built `xtask`
//! binary (`cargo xtask` is its alias) and must exit 0; a `sql` block is added to the end of the
//! first migration the last creating command made (`migrate new`'s, or `release new`'s expand);
//! a `toml` block takes the place of the placeholder rule in the declaration it created. A README command that stops working, or a
//! marker that goes missing, fails here.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;

use datahub_tests::harness::{copy_of_migrations, latest_migration, run_xtask, text, TestDb};
use xtask::migrations::DECLARATION_FILE;
use xtask::tenancy::INIT;

use crate::support::{bookkeeping, seed_small};

/// The placeholder rule `cargo xtask release new` writes into the declaration.
const PLACEHOLDER_RULE: &str = "value = 'NULL'";

/// A fenced block of the README: its language and its text.
struct Block {
    language: String,
    body: String,
}

/// The blocks marked `<!-- walk-through: NAME -->` (the marker on the line just above the
/// opening fence), in the README's order.
fn walk_through(name: &str) -> Vec<Block> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&path).expect("read README.md");
    let marker = format!("<!-- walk-through: {name} -->");
    let mut blocks = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        if line.trim() != marker {
            continue;
        }
        let fence = lines.next().unwrap_or_default();
        let language = fence
            .strip_prefix("```")
            .unwrap_or_else(|| panic!("the line after `{marker}` opens no code block: {fence:?}"))
            .trim()
            .to_string();
        let mut body = String::new();
        for line in lines.by_ref() {
            if line.trim_end() == "```" {
                break;
            }
            body.push_str(line);
            body.push('\n');
        }
        blocks.push(Block { language, body });
    }
    assert!(
        !blocks.is_empty(),
        "README.md has no block marked `{marker}`"
    );
    blocks
}

/// The `cargo xtask` commands of a `sh` block, each as its arguments after `cargo xtask`.
/// Comments (`# …`) are dropped; anything that would need a shell to mean what it says is
/// refused, so the words run here are the words a reader types.
fn commands(block: &Block) -> Vec<Vec<String>> {
    block
        .body
        .lines()
        .map(|line| match line.find('#') {
            Some(at) => &line[..at],
            None => line,
        })
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| {
            assert!(
                !line.contains(['\'', '"', '$', '<', '>', '|', '&', ';', '`', '\\']),
                "the README's command `{line}` needs a shell; write a walk-through's commands as plain words"
            );
            let words: Vec<String> = line.split_whitespace().map(String::from).collect();
            assert!(
                words.len() > 2 && words[0] == "cargo" && words[1] == "xtask",
                "the README's walk-through runs `{line}`, which is not a `cargo xtask` command"
            );
            words[2..].to_vec()
        })
        .collect()
}

/// The folders in the migrations folder.
fn folders(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .expect("read the migrations folder")
        .flatten()
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect()
}

/// Runs one README command with the copy of the migrations; it must exit 0.
fn run(dir: &Path, db: &TestDb, args: &[String]) -> Output {
    let mut all = vec!["--migrations-dir", dir.to_str().expect("a UTF-8 temp path")];
    all.extend(args.iter().map(String::as_str));
    let output = run_xtask(&all, Some(db.url()));
    assert_eq!(
        output.status.code(),
        Some(0),
        "the README's `cargo xtask {}` failed:\n{}\n{}",
        args.join(" "),
        text(&output.stdout),
        text(&output.stderr)
    );
    output
}

/// Runs a walk-through's blocks in order; returns the migrations its commands created.
fn follow(name: &str, dir: &Path, db: &TestDb) -> Vec<String> {
    let mut created: Vec<String> = Vec::new();
    // The migrations of the last command that created any, in Prisma's (here: name) order.
    let mut last_created: Vec<String> = Vec::new();
    for block in walk_through(name) {
        match block.language.as_str() {
            "sh" => {
                for args in commands(&block) {
                    let before = folders(dir);
                    let output = run(dir, db, &args);
                    let new: Vec<String> = folders(dir).difference(&before).cloned().collect();
                    if !new.is_empty() {
                        created.extend(new.iter().cloned());
                        last_created = new;
                    }
                    if args.starts_with(&["migrate".to_string(), "plan".to_string()]) {
                        // `plan` plans what is pending: the migration this walk-through created.
                        let out = text(&output.stdout);
                        for folder in &created {
                            assert!(out.contains(folder.as_str()), "{folder}:\n{out}");
                        }
                    }
                }
            }
            "sql" => {
                let folder = last_created.first().unwrap_or_else(|| {
                    panic!("a `sql` block of `{name}` before any migration was created")
                });
                let script = dir.join(folder).join("migration.sql");
                let mut sql = std::fs::read_to_string(&script).expect("read the new migration");
                sql.push('\n');
                sql.push_str(&block.body);
                std::fs::write(&script, sql).expect("write the new migration");
            }
            "toml" => {
                let declaration: PathBuf = created
                    .iter()
                    .map(|folder| dir.join(folder).join(DECLARATION_FILE))
                    .find(|path| path.exists())
                    .unwrap_or_else(|| {
                        panic!("a `toml` block of `{name}` before any declaration was created")
                    });
                let scaffold = std::fs::read_to_string(&declaration).expect("read release.toml");
                let lines: Vec<&str> = scaffold.lines().collect();
                assert_eq!(
                    lines
                        .iter()
                        .filter(|l| l.trim() == PLACEHOLDER_RULE)
                        .count(),
                    1,
                    "release.toml as `release new` wrote it:\n{scaffold}"
                );
                let written: Vec<&str> = lines
                    .iter()
                    .map(|line| {
                        if line.trim() == PLACEHOLDER_RULE {
                            block.body.trim_end()
                        } else {
                            line
                        }
                    })
                    .collect();
                std::fs::write(&declaration, written.join("\n") + "\n")
                    .expect("write release.toml");
            }
            other => panic!("a block of `{name}` in a language this test cannot follow: {other}"),
        }
    }
    assert!(!created.is_empty(), "`{name}` created no migration");
    created
}

/// After a walk-through: every migration it created is applied, and `migrate status` and
/// `check` say the database is where the README says it is.
fn assert_shipped(dir: &Path, db: &TestDb, created: &[String]) {
    let rows = bookkeeping(&mut db.client());
    for folder in created {
        assert!(
            rows.iter()
                .any(|r| &r.name == folder && r.finished && !r.rolled_back),
            "`{folder}` is not applied"
        );
    }
    for command in [["migrate", "status"].as_slice(), ["check"].as_slice()] {
        let args: Vec<String> = command.iter().map(|s| s.to_string()).collect();
        run(dir, db, &args);
    }
}

#[test]
fn add_a_migration_as_the_readme_writes_it() {
    let dir = tempfile::tempdir().unwrap();
    copy_of_migrations(dir.path());
    let db = TestDb::migrated_to(&latest_migration());
    let created = follow("add-a-migration", dir.path(), &db);
    assert_eq!(created.len(), 1, "{created:?}");
    assert_shipped(dir.path(), &db, &created);
}

#[test]
fn ship_your_next_release_as_the_readme_writes_it() {
    // A seeded database on which this repository's releases have shipped.
    let dir = tempfile::tempdir().unwrap();
    copy_of_migrations(dir.path());
    let db = TestDb::migrated_to(INIT);
    seed_small(&mut db.client());
    run(dir.path(), &db, &["release".to_string()]);

    let created = follow("ship-your-next-release", dir.path(), &db);
    assert_eq!(created.len(), 2, "the expand and the contract: {created:?}");
    assert_shipped(dir.path(), &db, &created);
}
