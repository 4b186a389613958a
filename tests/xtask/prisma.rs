//! Real Prisma 6.19.3 and `cargo xtask` on one database, in either order: each tool reads and
//! extends what the other wrote, and where both answer the same question the answers are
//! compared. Where we answer differently on purpose, the test says so and checks both answers.
//! Prisma is installed from the npm registry on first use (`datahub_tests::prisma`).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use datahub_tests::harness::{copy_of_migrations, run_xtask, text, TestDb};
use datahub_tests::prisma::{prisma, PrismaOutput};
use xtask::db::Client;
use xtask::migrations::{self, prisma_order};
use xtask::tenancy::{CONTRACT, EXPAND, INIT};

use crate::support::{bookkeeping, bookkeeping_digest, insert_pre_tenancy_user, seed_small};

/// The repository's migrations folder.
fn repo_dir() -> PathBuf {
    migrations::default_dir()
}

/// A copy of the repository's migrations up to and including `last`.
fn migrations_up_to(last: &str) -> tempfile::TempDir {
    let temp = tempfile::tempdir().unwrap();
    copy_of_migrations(temp.path());
    let mut past_last = false;
    for migration in migrations::read_dir(temp.path()).unwrap() {
        if past_last {
            std::fs::remove_dir_all(&migration.path).unwrap();
        }
        past_last |= migration.name == last;
    }
    temp
}

/// The tenancy release as it shipped, up to the contract: the incident happened with the
/// contract as the last migration (later ones would be pending beside it).
fn release_dir() -> tempfile::TempDir {
    migrations_up_to(CONTRACT)
}

/// A migrations folder of our own: `(folder, script)` pairs.
fn migrations_of(folders: &[(&str, &str)]) -> tempfile::TempDir {
    let temp = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo_dir().join("migration_lock.toml"),
        temp.path().join("migration_lock.toml"),
    )
    .unwrap();
    for (name, script) in folders {
        std::fs::create_dir_all(temp.path().join(name)).unwrap();
        std::fs::write(temp.path().join(name).join("migration.sql"), script).unwrap();
    }
    temp
}

fn xtask_in(dir: &Path, args: &[&str], db: &TestDb) -> Output {
    let mut all = args.to_vec();
    all.extend(["--migrations-dir", dir.to_str().unwrap()]);
    run_xtask(&all, Some(db.url()))
}

fn both(output: &Output) -> String {
    format!("{}{}", text(&output.stdout), text(&output.stderr))
}

fn assert_code(output: &Output, code: i32) {
    assert_eq!(output.status.code(), Some(code), "{}", both(output));
}

fn assert_prisma(output: &PrismaOutput, code: i32, says: &str) {
    assert_eq!(output.code, Some(code), "{}", output.all());
    assert!(
        output.all().contains(says),
        "Prisma did not say {says:?}: {}",
        output.all()
    );
}

fn table_exists(client: &mut Client, name: &str) -> bool {
    client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
        .unwrap()
        .get(0)
}

/// The names Prisma's `status` lists as not yet applied.
fn prisma_pending(output: &PrismaOutput) -> Vec<String> {
    output
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("Following migration"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// Prisma deploys the first half, `cargo xtask` reads it and deploys the rest; then the other
/// way round. Both tools agree on every row and call the result up to date.
#[test]
fn deployed_by_one_tool_then_read_and_extended_by_the_other() {
    let prisma = prisma();
    let first_half = migrations_up_to(EXPAND);

    let db = TestDb::new();
    let deploy = prisma.migrate(first_half.path(), db.url(), &["deploy"]);
    assert_prisma(&deploy, 0, "All migrations have been successfully applied.");
    let status = run_xtask(&["migrate", "status", "--json"], Some(db.url()));
    assert_code(&status, 1);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let states: Vec<&str> = json["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["state"].as_str().unwrap())
        .collect();
    assert_eq!(&states[..3], ["applied", "applied", "pending"], "{json}");
    assert_code(&run_xtask(&["migrate", "deploy"], Some(db.url())), 0);
    assert_prisma(
        &prisma.migrate(&repo_dir(), db.url(), &["status"]),
        0,
        "Database schema is up to date!",
    );
    // Every row as Prisma writes one: a UUID, the file's checksum, steps 1, no logs.
    let mut client = db.client();
    let rows = client
        .query(
            r#"SELECT migration_name, length(id), checksum, applied_steps_count, logs IS NULL
               FROM "_prisma_migrations" ORDER BY started_at"#,
            &[],
        )
        .unwrap();
    let local = migrations::read_dir(&repo_dir()).unwrap();
    assert_eq!(rows.len(), local.len());
    for (row, migration) in rows.iter().zip(&local) {
        assert_eq!(row.get::<_, String>(0), migration.name);
        assert_eq!(row.get::<_, i32>(1), 36);
        assert_eq!(
            row.get::<_, String>(2),
            migration.checksum,
            "{}",
            migration.name
        );
        assert_eq!(row.get::<_, i32>(3), 1);
        assert!(row.get::<_, bool>(4));
    }

    let db = TestDb::new();
    assert_code(
        &run_xtask(&["migrate", "deploy", "--to", EXPAND], Some(db.url())),
        0,
    );
    let status = prisma.migrate(&repo_dir(), db.url(), &["status"]);
    assert_eq!(status.code, Some(1), "{}", status.all());
    let expected: Vec<String> = local[2..].iter().map(|m| m.name.clone()).collect();
    assert_eq!(prisma_pending(&status), expected, "{}", status.all());
    let deploy = prisma.migrate(&repo_dir(), db.url(), &["deploy"]);
    assert_prisma(&deploy, 0, "All migrations have been successfully applied.");
    assert_code(&run_xtask(&["migrate", "status"], Some(db.url())), 0);
}

/// The incident under Prisma: it deploys both migrations before any backfill and the contract
/// fails. `cargo xtask` reads Prisma's failed row (its JS engine's logs: the database error,
/// never the engine's source lines), refuses to deploy over it as Prisma does, and `recover`
/// finishes the release; Prisma then calls the database up to date.
#[test]
fn the_incident_deployed_by_prisma_is_recovered_by_xtask() {
    let prisma = prisma();
    let release = release_dir();
    let db = TestDb::migrated_to(INIT);
    seed_small(&mut db.client());
    let deploy = prisma.migrate(release.path(), db.url(), &["deploy"]);
    assert_prisma(&deploy, 1, "Cannot enforce NOT NULL: NULL values found");

    let status = xtask_in(release.path(), &["migrate", "status"], &db);
    assert_code(&status, 1);
    let stdout = text(&status.stdout);
    assert!(
        stdout.contains(&format!("migration `{CONTRACT}` failed"))
            && stdout.contains("ERROR: Cannot enforce NOT NULL: NULL values found (Connection: "),
        "{stdout}"
    );
    let deploy = xtask_in(release.path(), &["migrate", "deploy"], &db);
    assert_code(&deploy, 1);
    let stderr = text(&deploy.stderr);
    assert!(
        stderr.contains("ERROR: Cannot enforce NOT NULL"),
        "{stderr}"
    );
    for output in [&stdout, &stderr] {
        assert!(
            !output.contains("schema-engine/"),
            "a source line quoted: {output}"
        );
    }
    let prisma_status = prisma.migrate(release.path(), db.url(), &["status"]);
    assert_prisma(
        &prisma_status,
        1,
        &format!("Following migration have failed:\n{CONTRACT}"),
    );
    assert_prisma(
        &prisma.migrate(release.path(), db.url(), &["deploy"]),
        1,
        "P3009",
    );

    // Where Prisma is wrong: with a later migration pending, its status lists only that one
    // and says nothing of the failure. Ours reports both.
    let later = release_dir();
    std::fs::create_dir(later.path().join("20251220000000_later")).unwrap();
    std::fs::write(
        later.path().join("20251220000000_later/migration.sql"),
        "SELECT 1;\n",
    )
    .unwrap();
    let prisma_status = prisma.migrate(later.path(), db.url(), &["status"]);
    assert_eq!(prisma_pending(&prisma_status), ["20251220000000_later"]);
    assert!(
        !prisma_status.all().contains("failed"),
        "{}",
        prisma_status.all()
    );
    let status = xtask_in(later.path(), &["migrate", "status"], &db);
    assert_code(&status, 1);
    assert!(
        text(&status.stdout).contains("1 pending, 1 failed"),
        "{}",
        both(&status)
    );

    assert_code(&xtask_in(release.path(), &["recover"], &db), 0);
    assert_prisma(
        &prisma.migrate(release.path(), db.url(), &["status"]),
        0,
        "Database schema is up to date!",
    );
    assert_prisma(
        &prisma.migrate(release.path(), db.url(), &["deploy"]),
        0,
        "No pending migrations to apply.",
    );
    let contract_rows: Vec<(bool, bool)> = bookkeeping(&mut db.client())
        .into_iter()
        .filter(|r| r.name == CONTRACT)
        .map(|r| (r.finished, r.rolled_back))
        .collect();
    assert_eq!(contract_rows, [(false, true), (true, false)]);
}

/// A database whose contract failed (deployed by `cargo xtask`).
fn failed_contract() -> TestDb {
    let db = TestDb::migrated_to(INIT);
    insert_pre_tenancy_user(&mut db.client(), "user_1");
    db.deploy_to(EXPAND);
    assert_code(
        &run_xtask(&["migrate", "deploy", "--skip-row-check"], Some(db.url())),
        1,
    );
    db
}

/// `resolve --rolled-back` in both tools: a second call, or one after a later attempt applied
/// the migration, changes nothing and exits 0. Resolve's refusals agree, but for a name that is
/// not in the folder: a usage error (exit 2) here, exit 1 (P3017) in Prisma.
#[test]
fn resolve_rolled_back_twice_is_a_no_op_in_both_tools() {
    let prisma = prisma();
    let release = release_dir();
    let db = failed_contract();
    let resolve = ["migrate", "resolve", "--rolled-back", CONTRACT];
    assert_code(&xtask_in(release.path(), &resolve, &db), 0);
    let after_first = bookkeeping_digest(&mut db.client());
    let again = xtask_in(release.path(), &resolve, &db);
    assert_code(&again, 0);
    assert!(text(&again.stdout).contains("already marked as rolled back; nothing changed"));
    assert_prisma(
        &prisma.migrate(release.path(), db.url(), &resolve[1..]),
        0,
        "marked as rolled back",
    );
    assert_eq!(bookkeeping_digest(&mut db.client()), after_first);

    // Where Prisma is wrong: its status calls the database up to date, though its own next
    // deploy applies the contract again. Ours says it is pending.
    assert_prisma(
        &prisma.migrate(release.path(), db.url(), &["status"]),
        0,
        "Database schema is up to date!",
    );
    let status = xtask_in(release.path(), &["migrate", "status"], &db);
    assert_code(&status, 1);
    assert!(text(&status.stdout).contains("rolled back, pending"));

    assert_code(&xtask_in(release.path(), &["backfill"], &db), 0);
    assert_prisma(
        &prisma.migrate(release.path(), db.url(), &["deploy"]),
        0,
        CONTRACT,
    );
    let applied = bookkeeping_digest(&mut db.client());
    let after_success = xtask_in(release.path(), &resolve, &db);
    assert_code(&after_success, 0);
    assert!(text(&after_success.stdout).contains("a later attempt applied it"));
    assert_prisma(
        &prisma.migrate(release.path(), db.url(), &resolve[1..]),
        0,
        "marked as rolled back",
    );
    assert_eq!(bookkeeping_digest(&mut db.client()), applied);
    assert_code(&xtask_in(release.path(), &["migrate", "status"], &db), 0);

    // The refusals, side by side: (arguments, ours, Prisma's code).
    for (args, ours, code) in [
        (["resolve", "--rolled-back", INIT], 1, "P3012"),
        (
            ["resolve", "--rolled-back", "20991231000000_unknown"],
            1,
            "P3011",
        ),
        (["resolve", "--applied", INIT], 1, "P3008"),
        (
            ["resolve", "--applied", "20991231000000_unknown"],
            2,
            "P3017",
        ),
    ] {
        let mut xtask_args = vec!["migrate"];
        xtask_args.extend(args);
        assert_code(&xtask_in(release.path(), &xtask_args, &db), ours);
        assert_prisma(&prisma.migrate(release.path(), db.url(), &args), 1, code);
    }
    assert_eq!(bookkeeping_digest(&mut db.client()), applied);
}

/// `resolve --applied` writes the row Prisma writes (the failed row rolled back, a new row
/// started and finished at once, no steps, `logs` empty), and each tool accepts the other's.
#[test]
fn resolve_applied_writes_the_row_prisma_writes() {
    let prisma = prisma();
    let release = release_dir();
    // One line per row of the contract; a failed row's logs differ by writer, so they are left
    // out, the resolved row's must not differ.
    let rows = |db: &TestDb| -> Vec<String> {
        db.client()
            .query(
                r#"SELECT format('finished=%s rolled_back=%s steps=%s logs=%s checksum=%s same_instant=%s',
                                 finished_at IS NOT NULL, rolled_back_at IS NOT NULL, applied_steps_count,
                                 CASE WHEN finished_at IS NULL THEN '(failed)' ELSE quote_nullable(logs) END,
                                 checksum, coalesce(started_at = finished_at, false))
                   FROM "_prisma_migrations" WHERE migration_name = $1 ORDER BY started_at"#,
                &[&CONTRACT],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    let by_prisma = failed_contract();
    let by_xtask = failed_contract();
    let args = ["resolve", "--applied", CONTRACT];
    assert_prisma(
        &prisma.migrate(release.path(), by_prisma.url(), &args),
        0,
        "marked as applied",
    );
    assert_code(
        &xtask_in(
            release.path(),
            &["migrate", "resolve", "--applied", CONTRACT],
            &by_xtask,
        ),
        0,
    );
    let expected = rows(&by_prisma);
    assert_eq!(expected.len(), 2);
    assert!(
        expected[1].starts_with("finished=t rolled_back=f steps=0 logs=''"),
        "{expected:?}"
    );
    assert!(expected[1].ends_with("same_instant=t"), "{expected:?}");
    assert_eq!(rows(&by_xtask), expected);
    for db in [&by_prisma, &by_xtask] {
        assert_code(&xtask_in(release.path(), &["migrate", "status"], db), 0);
        assert_prisma(
            &prisma.migrate(release.path(), db.url(), &["status"]),
            0,
            "Database schema is up to date!",
        );
    }
}

/// A schema with tables but no `_prisma_migrations` is not taken over by either tool (Prisma:
/// P3005) and nothing is created; the way in is the baseline, here with Prisma's documented
/// `0_init` folder, and after it both tools deploy and agree.
#[test]
fn a_schema_with_tables_is_not_taken_over_and_is_baselined_with_0_init() {
    let prisma = prisma();
    let db = TestDb::new();
    let mut client = db.client();
    client
        .batch_execute(r#"CREATE TABLE "Invoice" ("id" TEXT PRIMARY KEY)"#)
        .unwrap();
    assert_prisma(
        &prisma.migrate(&repo_dir(), db.url(), &["deploy"]),
        1,
        "P3005",
    );
    assert!(!table_exists(&mut client, "_prisma_migrations"));
    let deploy = run_xtask(&["migrate", "deploy"], Some(db.url()));
    assert_code(&deploy, 1);
    let stderr = text(&deploy.stderr);
    assert!(
        stderr.contains("not managed by Prisma Migrate")
            && stderr.contains("`Invoice`")
            && stderr.contains(&format!("the first is `{INIT}`"))
            && stderr.contains("cargo xtask migrate resolve --applied NAME"),
        "{stderr}"
    );
    for table in ["_prisma_migrations", "\"User\""] {
        assert!(!table_exists(&mut client, table), "{table} was created");
    }
    // Prisma's status lists every migration as pending; ours says what the database is.
    let status = run_xtask(&["migrate", "status"], Some(db.url()));
    assert_code(&status, 1);
    assert!(text(&status.stdout).contains("The current database is not managed by Prisma Migrate"));
    assert_eq!(
        prisma_pending(&prisma.migrate(&repo_dir(), db.url(), &["status"])).len(),
        migrations::read_dir(&repo_dir()).unwrap().len()
    );
    // The runbook stops there too, changing nothing.
    for command in ["recover", "release"] {
        let output = run_xtask(&[command], Some(db.url()));
        assert_code(&output, 1);
        assert!(
            text(&output.stdout).contains("not managed by Prisma Migrate"),
            "{command}: {}",
            both(&output)
        );
    }
    assert!(!table_exists(&mut client, "_prisma_migrations"));

    // The baseline: the init schema exists already (made by hand), its folder is `0_init`.
    let dir = tempfile::tempdir().unwrap();
    copy_of_migrations(dir.path());
    std::fs::rename(dir.path().join(INIT), dir.path().join("0_init")).unwrap();
    let init = std::fs::read_to_string(dir.path().join("0_init/migration.sql")).unwrap();
    client.batch_execute(&init).unwrap();
    assert_code(
        &xtask_in(
            dir.path(),
            &["migrate", "resolve", "--applied", "0_init"],
            &db,
        ),
        0,
    );
    let pending = prisma_pending(&prisma.migrate(dir.path(), db.url(), &["status"]));
    assert_eq!(
        pending.first().map(String::as_str),
        Some(EXPAND),
        "{pending:?}"
    );
    assert_eq!(
        pending.len(),
        migrations::read_dir(&repo_dir()).unwrap().len() - 1
    );
    assert_code(&xtask_in(dir.path(), &["migrate", "deploy"], &db), 0);
    assert_prisma(
        &prisma.migrate(dir.path(), db.url(), &["status"]),
        0,
        "Database schema is up to date!",
    );
    assert_code(&xtask_in(dir.path(), &["migrate", "status"], &db), 0);
}

/// Checksums compared as Prisma compares them: a file that became CRLF after Prisma applied it,
/// or a row in Prisma's older checksum format, is still applied; a real edit is reported (where
/// Prisma's status says nothing).
#[test]
fn line_endings_and_the_older_checksum_format_are_not_edits() {
    let prisma = prisma();
    let dir = tempfile::tempdir().unwrap();
    copy_of_migrations(dir.path());
    let db = TestDb::new();
    assert_prisma(
        &prisma.migrate(dir.path(), db.url(), &["deploy"]),
        0,
        "All migrations have been successfully applied.",
    );
    let expand = dir.path().join(EXPAND).join("migration.sql");
    let lf = std::fs::read_to_string(&expand).unwrap();
    std::fs::write(&expand, lf.replace('\n', "\r\n")).unwrap();
    // The older format: each byte in hex without its leading zero.
    let mut client = db.client();
    let rows = client
        .query(
            r#"SELECT migration_name, checksum FROM "_prisma_migrations""#,
            &[],
        )
        .unwrap();
    let (name, older) = rows
        .iter()
        .map(|r| {
            let checksum: String = r.get(1);
            let older: String = checksum
                .as_bytes()
                .chunks(2)
                .map(|p| {
                    let pair = std::str::from_utf8(p).unwrap();
                    pair.strip_prefix('0')
                        .filter(|r| !r.is_empty())
                        .unwrap_or(pair)
                        .to_string()
                })
                .collect();
            (r.get::<_, String>(0), older)
        })
        .find(|(_, older)| older.len() < 64)
        .expect("some checksum has a byte below 0x10");
    client
        .execute(
            r#"UPDATE "_prisma_migrations" SET checksum = $1 WHERE migration_name = $2"#,
            &[&older, &name],
        )
        .unwrap();
    assert_code(&xtask_in(dir.path(), &["migrate", "status"], &db), 0);
    let deploy = xtask_in(dir.path(), &["migrate", "deploy"], &db);
    assert_code(&deploy, 0);
    assert!(text(&deploy.stdout).contains("No pending migrations to apply."));

    let index = dir
        .path()
        .join("20251219170100_datahub_index_connection_workspace/migration.sql");
    let mut script = std::fs::read_to_string(&index).unwrap();
    script.push_str("-- edited\n");
    std::fs::write(&index, script).unwrap();
    let status = xtask_in(dir.path(), &["migrate", "status"], &db);
    assert_code(&status, 1);
    assert!(text(&status.stdout).contains("edited since applied"));
    assert_prisma(
        &prisma.migrate(dir.path(), db.url(), &["status"]),
        0,
        "Database schema is up to date!",
    );

    // An applied migration missing from the folder: Prisma is silent, we are not.
    std::fs::remove_dir_all(dir.path().join(CONTRACT)).unwrap();
    assert_prisma(
        &prisma.migrate(dir.path(), db.url(), &["status"]),
        0,
        "Database schema is up to date!",
    );
    let status = xtask_in(dir.path(), &["migrate", "status"], &db);
    assert_code(&status, 1);
    assert!(text(&status.stdout).contains("missing locally"));
}

/// Any folder with a `migration.sql` is a migration, and both tools order them alike: real
/// Prisma applies a folder of odd names in the order `cargo xtask` reads them, and `node`'s
/// `localeCompare` (what Prisma sorts with) agrees with ours on random names.
#[test]
fn folders_are_migrations_in_prisma_order() {
    let prisma = prisma();
    let names = [
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
        ".hidden",
        "a b",
    ];
    let scripts: Vec<(String, String)> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            (
                name.to_string(),
                format!("CREATE TABLE \"t{i}\" (\"id\" INT);\n"),
            )
        })
        .collect();
    let folders: Vec<(&str, &str)> = scripts
        .iter()
        .map(|(n, s)| (n.as_str(), s.as_str()))
        .collect();
    let dir = migrations_of(&folders);
    let ours: Vec<String> = migrations::read_dir(dir.path())
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(ours, prisma.sorted(&names));

    let db = TestDb::new();
    assert_prisma(
        &prisma.migrate(dir.path(), db.url(), &["deploy"]),
        0,
        "All migrations have been successfully applied.",
    );
    let applied: Vec<String> = bookkeeping(&mut db.client())
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(applied, ours, "Prisma applied them in another order");
    assert_code(&xtask_in(dir.path(), &["migrate", "status"], &db), 0);

    // Where we refuse and Prisma does not: a folder without `migration.sql` (Prisma lists it as
    // pending, and its deploy would stop there, P3015) and a link to a folder (Prisma skips it).
    std::fs::create_dir(dir.path().join("3_no_script")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("2_c"), dir.path().join("4_linked")).unwrap();
    let status = prisma.migrate(dir.path(), db.url(), &["status"]);
    assert_eq!(prisma_pending(&status), ["3_no_script"], "{}", status.all());
    let refused = xtask_in(dir.path(), &["migrate", "status"], &db);
    assert_code(&refused, 2);
    std::fs::remove_dir(dir.path().join("3_no_script")).unwrap();
    let refused = xtask_in(dir.path(), &["migrate", "status"], &db);
    assert_code(&refused, 2);
    assert!(text(&refused.stderr).contains("4_linked` is a symbolic link to a folder"));

    // Random names over the characters migration folders use, plus case and accents.
    let alphabet: Vec<char> = "_-.0123456789abzABZ éÉ".chars().collect();
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let random: Vec<String> = (0..400)
        .map(|_| {
            (0..1 + next(8))
                .map(|_| alphabet[next(alphabet.len())])
                .collect()
        })
        .collect();
    let random: Vec<&str> = random.iter().map(String::as_str).collect();
    let mut ours = random.clone();
    ours.sort_by(|a, b| prisma_order(a, b));
    assert_eq!(ours, prisma.sorted(&random));
}

/// A failed `CREATE INDEX CONCURRENTLY` leaves an INVALID index, and our message says so. Our
/// next deploy drops it and builds the index; Prisma's fails with "already exists".
#[test]
fn a_failed_concurrent_index_is_described_truly_and_rebuilt() {
    let prisma = prisma();
    let dir = migrations_of(&[
        (
            "20250101000000_t",
            "CREATE TABLE \"T\" (\"c\" INTEGER);\nINSERT INTO \"T\" (\"c\") VALUES (1), (1), (2);\n",
        ),
        (
            "20250101000100_unique_concurrently",
            "CREATE UNIQUE INDEX CONCURRENTLY \"x\" ON \"T\"(\"c\");\n",
        ),
    ]);
    let valid = |client: &mut Client| -> Option<bool> {
        client
            .query_opt(
                "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('\"x\"')",
                &[],
            )
            .unwrap()
            .map(|r| r.get(0))
    };
    let name = "20250101000100_unique_concurrently";

    let ours = TestDb::new();
    let deploy = xtask_in(dir.path(), &["migrate", "deploy"], &ours);
    assert_code(&deploy, 1);
    assert!(
        text(&deploy.stderr)
            .contains("an INVALID index `x` is left behind, which the next deploy drops"),
        "{}",
        both(&deploy)
    );
    assert_eq!(valid(&mut ours.client()), Some(false));
    assert_code(
        &xtask_in(
            dir.path(),
            &["migrate", "resolve", "--rolled-back", name],
            &ours,
        ),
        0,
    );
    ours.client()
        .batch_execute(r#"DELETE FROM "T" WHERE ctid <> (SELECT min(ctid) FROM "T" WHERE "c" = 1) AND "c" = 1"#)
        .unwrap();
    assert_code(&xtask_in(dir.path(), &["migrate", "deploy"], &ours), 0);
    assert_eq!(valid(&mut ours.client()), Some(true));
    assert_prisma(
        &prisma.migrate(dir.path(), ours.url(), &["status"]),
        0,
        "Database schema is up to date!",
    );

    let theirs = TestDb::new();
    assert_prisma(
        &prisma.migrate(dir.path(), theirs.url(), &["deploy"]),
        1,
        "Unique constraint failed",
    );
    assert_eq!(valid(&mut theirs.client()), Some(false));
    assert_prisma(
        &prisma.migrate(
            dir.path(),
            theirs.url(),
            &["resolve", "--rolled-back", name],
        ),
        0,
        "marked as rolled back",
    );
    theirs
        .client()
        .batch_execute(r#"DELETE FROM "T" WHERE ctid <> (SELECT min(ctid) FROM "T" WHERE "c" = 1) AND "c" = 1"#)
        .unwrap();
    assert_prisma(
        &prisma.migrate(dir.path(), theirs.url(), &["deploy"]),
        1,
        "relation \"x\" already exists",
    );
    // Prisma's second failure, resolved and deployed by us.
    assert_code(
        &xtask_in(
            dir.path(),
            &["migrate", "resolve", "--rolled-back", name],
            &theirs,
        ),
        0,
    );
    assert_code(&xtask_in(dir.path(), &["migrate", "deploy"], &theirs), 0);
    assert_eq!(valid(&mut theirs.client()), Some(true));
}

/// `migrate new` names folders as `prisma migrate dev --name` does (Prisma's own function
/// decides here), and a folder without migrations is "not managed" for both tools until a
/// deploy has created the bookkeeping table.
#[test]
fn names_and_the_empty_folder_as_prisma_has_them() {
    let prisma = prisma();
    let names = [
        "Add Users-table! v2",
        "addUsersTable2FA",
        "XMLHttpRequest_v10ID",
        "OAuth2Client",
        "Ünïcödé & Straße's don't",
        "café_crème",
        "  leading--and__trailing  ",
        "it's done",
        "URLs and APIs",
        "HTTPServer2Go",
        "ABCdef",
        "a1B2c3",
        "ÆØÅ æøå Ça",
        "add_insight_read_at",
    ];
    let ours: Vec<String> = names
        .iter()
        .map(|n| xtask::migrate::new::prisma_slug(n).unwrap())
        .collect();
    assert_eq!(ours, prisma.slugs(&names));

    let empty = migrations_of(&[]);
    let db = TestDb::new();
    assert_prisma(
        &prisma.migrate(empty.path(), db.url(), &["status"]),
        1,
        "The current database is not managed by Prisma Migrate.",
    );
    let status = xtask_in(empty.path(), &["migrate", "status"], &db);
    assert_code(&status, 1);
    assert!(text(&status.stdout).contains("The current database is not managed by Prisma Migrate"));
    assert_prisma(
        &prisma.migrate(empty.path(), db.url(), &["deploy"]),
        0,
        "No pending migrations to apply.",
    );
    assert_code(&xtask_in(empty.path(), &["migrate", "status"], &db), 0);
}

/// Our migration files bound their own lock waits, so a Prisma deploy (Prisma sets no
/// `lock_timeout`) gives up on a table another session holds instead of queueing the app behind
/// it: it ends while the lock is still held, leaves a failed row and nothing of the script, and
/// `cargo xtask recover` finishes the release from there.
#[test]
fn a_prisma_deploy_of_our_files_gives_up_on_a_held_table_lock() {
    let prisma = prisma();
    let db = TestDb::migrated_to(INIT);
    let mut holder = db.client();
    holder
        .batch_execute(r#"BEGIN; SELECT * FROM "MetricDaily" LIMIT 1"#)
        .unwrap();
    let deploy = PrismaOutput::wait(
        prisma.spawn_migrate(&repo_dir(), db.url(), &["deploy"]),
        Duration::from_secs(300),
        "Prisma's deploy still waits for its table lock: the migration does not bound its lock wait",
    );
    assert_prisma(&deploy, 1, "canceling statement due to lock timeout");
    let holder_pid: i32 = holder
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    let still_held: bool = db
        .client()
        .query_one(
            r#"SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = $1 AND relation = '"MetricDaily"'::regclass AND granted)"#,
            &[&holder_pid],
        )
        .unwrap()
        .get(0);
    assert!(still_held, "the deploy ended only once the lock was gone");
    let rows: Vec<(String, bool, bool)> = bookkeeping(&mut db.client())
        .into_iter()
        .map(|r| (r.name, r.finished, r.rolled_back))
        .collect();
    assert_eq!(
        rows,
        [
            (INIT.to_string(), true, false),
            (EXPAND.to_string(), false, false)
        ]
    );
    let columns: i64 = db
        .client()
        .query_one(
            r#"SELECT count(*) FROM information_schema.columns
               WHERE table_schema = current_schema() AND column_name = 'workspaceId'
                 AND table_name <> 'WorkspaceMember'"#,
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(columns, 0, "the failed script left nothing behind");

    holder.batch_execute("COMMIT").unwrap();
    let recover = run_xtask(&["recover"], Some(db.url()));
    assert_code(&recover, 0);
    assert_prisma(
        &prisma.migrate(&repo_dir(), db.url(), &["status"]),
        0,
        "Database schema is up to date!",
    );
}

/// Prisma reads the bookkeeping `cargo xtask` keeps in a schema named `a b` (with its
/// `DATABASE_SCHEMA` option: adapter-pg ignores the URL's `?schema=`).
#[test]
fn prisma_agrees_on_a_schema_named_with_a_space() {
    let prisma = prisma();
    let db = TestDb::new();
    let url = format!("{}?schema=a%20b", db.url());
    assert_code(&run_xtask(&["migrate", "deploy"], Some(&url)), 0);
    assert_prisma(
        &prisma.migrate_in_schema(&repo_dir(), db.url(), Some("a b"), &["status"]),
        0,
        "Database schema is up to date!",
    );
}
