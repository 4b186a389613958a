//! Hostile input, as a table: every numeric flag of every command fuzzed, database URLs of every
//! shape (with a password that must never show), migration names and folders, unknown commands
//! and flags, and commands run in the wrong state. Each row has the exit code and the words the
//! answer must contain; every answer is one clear line, never a panic (101), never an SQL error
//! for a usage error, never any part of a password. Run with `--nocapture` to print the table.

use datahub_tests::harness::{text, xtask_bin, TestDb};
use xtask::tenancy::{EXPAND, INIT};

/// The database a row runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Db {
    /// No `DATABASE_URL` at all.
    None,
    /// This URL, as given.
    Url(&'static str),
    /// An empty database.
    Empty,
    /// The init migration applied, no data.
    Init,
    /// Init applied and seeded.
    Seeded,
    /// A real server and database, with a wrong password.
    WrongPassword,
}

struct Row {
    args: Vec<String>,
    db: Db,
    code: i32,
    says: String,
}

fn row(args: &[&str], db: Db, code: i32, says: &str) -> Row {
    Row {
        args: args.iter().map(|a| a.to_string()).collect(),
        db,
        code,
        says: says.to_string(),
    }
}

/// Every numeric flag of every command, by the command line that takes it.
const NUMERIC_FLAGS: &[(&[&str], &str)] = &[
    (&["backfill"], "--batch-size"),
    (&["backfill"], "--workers"),
    (&["backfill"], "--time-limit"),
    (&["backfill"], "--lock-timeout"),
    (&["release"], "--batch-size"),
    (&["release"], "--lock-wait"),
    (&["release"], "--lock-timeout"),
    (&["recover"], "--lock-wait"),
    (&["recover"], "--lock-timeout"),
    (&["rollback"], "--lock-wait"),
    (&["rollback"], "--lock-timeout"),
    (&["migrate", "deploy"], "--lock-wait"),
    (&["migrate", "deploy"], "--lock-timeout"),
    (&["seed"], "--users"),
    (&["seed"], "--days"),
    (&["demo"], "--users"),
    (&["bench"], "--rows"),
    (&["bench"], "--workers"),
];

/// Numbers no flag takes: zero, negative, past u64, not decimal, not ASCII, not a number.
const BAD_NUMBERS: &[&str] = &[
    "0",
    "-1",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999999999",
    "1e3",
    "0x10",
    "1.5",
    "ten",
    "",
    "\u{FF11}",
];

/// The numeric flags that take a comma-separated list (`bench --workers 2,1,4`).
const LIST_FLAGS: &[(&[&str], &str)] = &[(&["bench"], "--workers")];

const PASSWORD_FRAGMENTS: [&str; 2] = ["Pa55", "s3cr"];

fn rows() -> Vec<Row> {
    let mut rows = Vec::new();
    for (command, flag) in NUMERIC_FLAGS {
        for value in BAD_NUMBERS {
            let mut args = command.to_vec();
            args.extend([*flag, *value]);
            rows.push(row(
                &args,
                Db::None,
                2,
                &format!(
                    "`{flag} {value}` is not valid: it takes {}",
                    if LIST_FLAGS.contains(&(command, flag)) {
                        "whole numbers from"
                    } else {
                        "a whole number from"
                    }
                ),
            ));
        }
        let mut args = command.to_vec();
        args.push(flag);
        rows.push(row(
            &args,
            Db::None,
            2,
            &format!("`{flag}` needs a value; see `cargo xtask --help`"),
        ));
    }
    let at = "has an `@` where only the one before the host may be";
    for (url, says) in [
        ("postgresql://app:s3cr@t/Pa55word@host/db", at),
        ("postgresql://app:Pa55/word@host/db", at),
        ("postgresql://app:Pa55?word@host/db", at),
        ("postgresql://app:Pa55#word@host/db", "contains `#`"),
        ("postgresql://app:Pa55word@host:99999/db", "the port in the database URL must be a number from 1 to 65535"),
        ("postgresql://app:Pa55word@host:port/db", "the port in the database URL must be a number from 1 to 65535"),
        ("postgresql://app:Pa55word@host:0/db", "the port in the database URL must be a number from 1 to 65535"),
        ("postgresql://app:Pa55%zzword@host/db", "has a `%` that is not followed by two hex digits"),
        ("postgresql://app:Pa55word@host/db?sslmode=Pa55word", "`sslmode` in the database URL must be"),
        ("postgresql://app:Pa55word@host/db?password=Pa55word&bogus=1", "unknown parameter `bogus`"),
        ("postgresql://app:Pa55word@host/db?connect_timeout=Pa55word", "`connect_timeout` in the database URL must be a whole number"),
        ("postgresql://app:Pa55word@host/db?target_session_attrs=primary", "`target_session_attrs` in the database URL must be"),
        ("postgresql://app:Pa55word@host/db?schema=", "`schema` in the database URL is empty"),
        ("postgresql://app:Pa55word@host/db?sslidentity=id.p12", "asks for a client certificate"),
        ("postgresql://app:Pa55word@host/db?sslmode=verify-full&sslrootcert=/nonexistent/root.crt", "cannot read the root certificate `/nonexistent/root.crt`"),
        ("postgresql://app:Pa55word@[::1/db", "lacks its closing `]`"),
        ("postgresql://app:Pa55word@/db", "names no host"),
        ("mysql://app:Pa55word@host/db", "must start with `postgresql://`"),
        ("Pa55word", "must start with `postgresql://`"),
        ("   ", "no database URL"),
        ("postgresql://app:Pa55word@127.0.0.1:1/db", "cannot connect to PostgreSQL at `127.0.0.1:1/db as app`"),
    ] {
        rows.push(Row {
            args: vec!["migrate".into(), "status".into()],
            db: Db::Url(url),
            code: 2,
            says: says.to_string(),
        });
    }
    rows.push(row(
        &["migrate", "status"],
        Db::WrongPassword,
        2,
        "password authentication failed",
    ));
    rows.push(row(
        &[
            "check",
            "--database-url",
            "postgresql://app:Pa55word@host:99999/db",
        ],
        Db::None,
        2,
        "the port in the database URL must be a number from 1 to 65535",
    ));
    rows.push(row(
        &["check", "--database-url"],
        Db::None,
        2,
        "`--database-url` needs a value; see `cargo xtask --help`",
    ));
    // Names and folders.
    for name in [
        "nope",
        "'; DROP TABLE \"User\"; --",
        "../../etc/passwd",
        "20251219170000_add_workspace_to_datahub_models' OR '1'='1",
        "\u{1F4A5}",
    ] {
        rows.push(row(
            &["migrate", "deploy", "--to", name],
            Db::Empty,
            2,
            "there is no migration",
        ));
    }
    rows.push(row(
        &["migrate", "deploy", "--to", ""],
        Db::Empty,
        2,
        "`--to` needs a value",
    ));
    rows.push(row(
        &["migrate", "resolve", "--applied", "nope"],
        Db::Init,
        2,
        "there is no migration `nope`",
    ));
    rows.push(row(
        &["migrate", "resolve", "--rolled-back", INIT],
        Db::Init,
        1,
        "cannot be marked as rolled back: it is `applied`",
    ));
    rows.push(row(
        &["migrate", "resolve", "--applied", INIT],
        Db::Init,
        1,
        "cannot be marked as applied: it is already recorded as applied (Prisma: P3008",
    ));
    rows.push(row(
        &[
            "migrate",
            "resolve",
            "--applied",
            INIT,
            "--rolled-back",
            INIT,
        ],
        Db::None,
        2,
        "takes exactly one of",
    ));
    rows.push(row(
        &["migrate", "resolve"],
        Db::None,
        2,
        "takes exactly one of",
    ));
    rows.push(row(&["migrate", "new"], Db::None, 2, "needs a NAME"));
    rows.push(row(
        &["migrate", "status", "--migrations-dir", "/etc/passwd"],
        Db::None,
        2,
        "cannot read the migrations folder `/etc/passwd`",
    ));
    rows.push(row(
        &[
            "migrate",
            "status",
            "--migrations-dir",
            "/nonexistent/migrations",
        ],
        Db::None,
        2,
        "cannot read the migrations folder `/nonexistent/migrations`",
    ));
    rows.push(row(
        &["smoke", "--url", "ftp://example.com"],
        Db::None,
        2,
        "`--url`",
    ));
    // Commands and flags.
    rows.push(row(&[], Db::None, 2, "no command given"));
    rows.push(row(
        &["frobnicate"],
        Db::None,
        2,
        "unknown command `frobnicate`",
    ));
    rows.push(row(
        &["help", "nope"],
        Db::None,
        2,
        "unknown command `nope`",
    ));
    rows.push(row(
        &["help", "migrate"],
        Db::None,
        0,
        "cargo xtask migrate deploy [--to NAME]",
    ));
    rows.push(row(&["migrate"], Db::None, 2, "needs a subcommand"));
    rows.push(row(
        &["migrate", "frobnicate"],
        Db::None,
        2,
        "unknown subcommand `migrate frobnicate`",
    ));
    rows.push(row(
        &["check", "--frob"],
        Db::None,
        2,
        "unexpected argument `--frob`",
    ));
    rows.push(row(
        &["check", "--json", "--json"],
        Db::None,
        2,
        "unexpected argument `--json`",
    ));
    rows.push(row(
        &["backfill", "--batch-size", "1", "--batch-size", "2"],
        Db::None,
        2,
        "unexpected argument `--batch-size`",
    ));
    rows.push(row(
        &["release", "extra"],
        Db::None,
        2,
        "unexpected argument `extra`",
    ));
    rows.push(row(
        &["recover", "--yes"],
        Db::None,
        2,
        "unexpected argument `--yes`",
    ));
    rows.push(row(
        &["rollback", "--force"],
        Db::None,
        2,
        "unexpected argument `--force`",
    ));
    rows.push(row(
        &["status", "extra"],
        Db::None,
        2,
        "unexpected argument `extra`",
    ));
    rows.push(row(
        &["verify", "--frob"],
        Db::None,
        2,
        "unexpected argument `--frob`",
    ));
    // The wrong state: a clear refusal naming the command that helps, never a raw SQL error.
    rows.push(row(
        &["seed", "--users", "5", "--days", "2"],
        Db::Empty,
        1,
        &format!("run `cargo xtask migrate deploy --to {INIT}` first"),
    ));
    rows.push(row(
        &["seed", "--users", "5", "--days", "2"],
        Db::Seeded,
        1,
        "this database is already seeded",
    ));
    rows.push(row(
        &["backfill"],
        Db::Init,
        1,
        &format!(
            "the expand migration `{EXPAND}` of the `workspace-tenancy` release is not applied"
        ),
    ));
    rows.push(row(
        &["check"],
        Db::Init,
        1,
        &format!("cargo xtask migrate deploy --to {EXPAND}"),
    ));
    rows.push(row(
        &["migrate", "resolve", "--rolled-back", EXPAND],
        Db::Init,
        1,
        "has no row of it, so it was never applied (Prisma: P3011)",
    ));
    rows
}

/// Runs one row; returns the exit code and the combined output.
fn run(row: &Row, urls: &Urls) -> (Option<i32>, String, String) {
    let mut command = std::process::Command::new(xtask_bin());
    command
        .args(&row.args)
        .env_remove("DATABASE_URL")
        .env_remove("DIRECT_URL");
    match row.db {
        Db::None => {}
        Db::Url(url) => {
            command.env("DATABASE_URL", url);
        }
        other => {
            command.env("DATABASE_URL", urls.url(other));
        }
    }
    let output = command.output().expect("run xtask");
    (
        output.status.code(),
        text(&output.stdout),
        text(&output.stderr),
    )
}

/// The databases the rows need, made once.
struct Urls {
    empty: TestDb,
    init: TestDb,
    seeded: TestDb,
}

impl Urls {
    fn new() -> Urls {
        let seeded = TestDb::migrated_to(INIT);
        crate::support::seed_small(&mut seeded.client());
        Urls {
            empty: TestDb::new(),
            init: TestDb::migrated_to(INIT),
            seeded,
        }
    }

    fn url(&self, db: Db) -> String {
        match db {
            Db::Empty => self.empty.url().to_string(),
            Db::Init => self.init.url().to_string(),
            Db::Seeded => self.seeded.url().to_string(),
            Db::WrongPassword => {
                let url = self.empty.url();
                let (scheme, rest) = url.split_once("://").unwrap();
                let host = rest.split_once('@').unwrap().1;
                format!("{scheme}://postgres:Pa55word-wrong@{host}")
            }
            Db::None | Db::Url(_) => unreachable!(),
        }
    }
}

#[test]
fn every_hostile_input_gets_a_clear_answer() {
    let urls = Urls::new();
    let rows = rows();
    let mut table = String::from("| input | exit | answer |\n|---|---|---|\n");
    let mut failures = Vec::new();
    for row in &rows {
        let (code, stdout, stderr) = run(row, &urls);
        let all = format!("{stdout}{stderr}");
        let first_error = stderr
            .lines()
            .find(|l| l.starts_with("error: "))
            .unwrap_or_else(|| stdout.lines().next().unwrap_or(""))
            .to_string();
        let input = match row.db {
            Db::Url(url) => format!("DATABASE_URL={url:?} {}", row.args.join(" ")),
            Db::None => row.args.join(" "),
            other => format!("{} ({other:?} database)", row.args.join(" ")),
        };
        table.push_str(&format!(
            "| `{}` | {} | {} |\n",
            input.replace('|', "\\|"),
            code.map(|c| c.to_string()).unwrap_or("signal".into()),
            first_error.replace('|', "\\|")
        ));
        let mut problems = Vec::new();
        if code != Some(row.code) {
            problems.push(format!("exit {code:?}, expected {}", row.code));
        }
        if !all.contains(&row.says) {
            problems.push(format!("no `{}`", row.says));
        }
        if all.contains("panicked") || code == Some(101) {
            problems.push("a panic".into());
        }
        if PASSWORD_FRAGMENTS.iter().any(|p| all.contains(p)) {
            problems.push("part of the password is shown".into());
        }
        // A refused argument never reaches the server; a refused login may quote it.
        let argument_error = matches!(row.db, Db::None | Db::Url(_));
        if argument_error
            && row.code == 2
            && (first_error.contains("SQLSTATE") || first_error.contains("ERROR:"))
        {
            problems.push("an SQL error for a usage error".into());
        }
        if row.code != 0 && !stderr.starts_with("error: ") && !stdout.contains('❌') {
            problems.push("no `error:` line".into());
        }
        if !problems.is_empty() {
            failures.push(format!("{input}: {} — got: {all}", problems.join("; ")));
        }
    }
    let by_code = |c: i32| rows.iter().filter(|r| r.code == c).count();
    table.push_str(&format!(
        "\n{} hostile inputs: {} usage errors (exit 2), {} refusals in the wrong state (exit 1), {} help (exit 0); {} without a clear answer\n",
        rows.len(),
        by_code(2),
        by_code(1),
        by_code(0),
        failures.len()
    ));
    println!("{table}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Nothing was written by any of them.
    let exists: bool = urls
        .empty
        .client()
        .query_one("SELECT to_regclass('_prisma_migrations') IS NOT NULL", &[])
        .unwrap()
        .get(0);
    assert!(!exists, "a refused command wrote to the database");
}
