//! `migrate lint` and `migrate plan`: each migration observed on a shadow database. The corpus
//! in `lint_corpus/` holds the classic unsafe changes and their online-safe rewrites, each on
//! top of this repository's migrations and `_setup` (three nullable columns to work on); every
//! case is a test that names the rule, the table and the statement's line. Every migration the
//! project ships passes, and its plan is a snapshot a reviewer sees change in a pull request.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use datahub_tests::harness::{
    copy_of_migrations, repo_migrations, run_xtask, server_url, text, TestDb,
};
use xtask::migrate::lint::{Finding, Rule};
use xtask::migrate::observe::LockMode;
use xtask::migrate::plan::{observe_all, PlanReport, PlanRequest};
use xtask::migrate::shadow::Shadow;
use xtask::migrations::{self, Migration};
use xtask::report::{Report, Style};
use xtask::tenancy::INIT;

use crate::assert_stable_snapshot;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("xtask/lint_corpus")
}

/// Copies the migration folders of `from` into `to`; returns their names in order.
fn copy_folders(from: &Path, to: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(from)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in &names {
        std::fs::create_dir_all(to.join(name)).unwrap();
        std::fs::copy(
            from.join(name).join("migration.sql"),
            to.join(name).join("migration.sql"),
        )
        .unwrap();
    }
    names
}

/// The repository's migrations, `_setup` and the case's own, in a folder of their own.
fn case_folder(case: &str) -> (tempfile::TempDir, String) {
    let temp = tempfile::tempdir().unwrap();
    copy_of_migrations(temp.path());
    copy_folders(&corpus().join("_setup"), temp.path());
    let names = copy_folders(&corpus().join(case), temp.path());
    (temp, names.last().unwrap().clone())
}

/// One shadow for the whole binary: it keeps the schema of the repository's migrations and
/// `_setup`, so each case only applies its own migrations to a copy. One case at a time.
fn observe(migrations: &[Migration], targets: BTreeSet<String>, lint: bool) -> PlanReport {
    observe_since(migrations, targets, lint, None)
}

/// As `observe`, with the tables created after migration `since` counting as new.
fn observe_since(
    migrations: &[Migration],
    targets: BTreeSet<String>,
    lint: bool,
    since: Option<&str>,
) -> PlanReport {
    static SHADOW: OnceLock<Mutex<Shadow>> = OnceLock::new();
    let shadow = SHADOW.get_or_init(|| Mutex::new(Shadow::on_server(&server_url()).unwrap()));
    let mut shadow = shadow.lock().unwrap_or_else(|e| e.into_inner());
    let observed = observe_all(
        &mut shadow,
        &PlanRequest {
            migrations,
            targets,
            timezone: None,
            since: since.map(str::to_string),
            production: None,
        },
    )
    .unwrap();
    PlanReport::new(String::new(), observed, lint)
}

struct Case {
    report: PlanReport,
    script: String,
    rendered: String,
}

/// Lints every migration of the corpus case `case` (not `_setup`), in one run; with `since`,
/// the tables created after `_setup` count as new.
fn lint_whole_case(case: &str, since_setup: bool) -> (PlanReport, String, Vec<String>) {
    let temp = tempfile::tempdir().unwrap();
    copy_of_migrations(temp.path());
    let setup = copy_folders(&corpus().join("_setup"), temp.path());
    let names = copy_folders(&corpus().join(case), temp.path());
    let migrations = migrations::read_dir(temp.path()).unwrap();
    let since = since_setup.then(|| setup.last().unwrap().as_str());
    let report = observe_since(&migrations, names.iter().cloned().collect(), true, since);
    let rendered = report.render_with(Style::SNAPSHOT);
    (report, rendered, names)
}

/// Lints the last migration of the corpus case `case`.
fn lint_case(case: &str) -> Case {
    let (temp, target) = case_folder(case);
    let migrations = migrations::read_dir(temp.path()).unwrap();
    let script = migrations
        .iter()
        .find(|m| m.name == target)
        .unwrap()
        .script
        .clone();
    let report = observe(&migrations, BTreeSet::from([target]), true);
    let rendered = report.render_with(Style::SNAPSHOT);
    Case {
        report,
        script,
        rendered,
    }
}

/// The 1-based line of the first statement line (not a comment) that contains `needle`.
fn line_of(script: &str, needle: &str) -> usize {
    script
        .lines()
        .position(|line| !line.starts_with("--") && line.contains(needle))
        .unwrap_or_else(|| panic!("`{needle}` is not in the script"))
        + 1
}

fn blocking(case: &Case) -> Vec<&Finding> {
    case.report.findings[0]
        .iter()
        .filter(|f| f.blocks())
        .collect()
}

/// The case fails lint with `rule` on `table`, at the statement containing `statement`.
fn assert_blocks(case_name: &str, rule: &str, table: &str, statement: &str) -> Case {
    let case = lint_case(case_name);
    let line = line_of(&case.script, statement);
    assert!(!case.report.ok(), "{case_name} passed:\n{}", case.rendered);
    let found = blocking(&case)
        .iter()
        .any(|f| f.rule == rule && f.table == table && f.line == line);
    assert!(
        found,
        "{case_name}: no `{rule}` on `{table}` at line {line}:\n{}",
        case.rendered
    );
    // The text names file:line and the rule, and gives the safe rewrite.
    assert!(
        case.rendered
            .contains(&format!("/migration.sql:{line}: {rule}: `")),
        "{}",
        case.rendered
    );
    assert!(case.rendered.contains("safe: "), "{}", case.rendered);
    case
}

fn assert_passes(case_name: &str) -> Case {
    let case = lint_case(case_name);
    assert!(
        case.report.ok() && case.report.plans[0].failure.is_none(),
        "{case_name} did not pass:\n{}",
        case.rendered
    );
    case
}

macro_rules! unsafe_cases {
    ($($case:ident: $rule:literal on $table:literal at $statement:literal;)*) => {
        $(
            #[test]
            fn $case() {
                assert_blocks(stringify!($case), $rule, $table, $statement);
            }
        )*
    };
}

macro_rules! safe_cases {
    ($($case:ident;)*) => {
        $(
            #[test]
            fn $case() {
                assert_passes(stringify!($case));
            }
        )*
    };
}

unsafe_cases! {
    u01_add_column_volatile_default: "table-rewrite" on "MetricDaily" at "ADD COLUMN";
    u02_add_column_clock_default: "table-rewrite" on "ChatMessage" at "ADD COLUMN";
    u03_create_index: "index-build" on "MetricDaily" at "CREATE INDEX";
    u04_create_unique_index: "index-build" on "Insight" at "CREATE UNIQUE INDEX";
    u05_set_not_null_scans: "scan-under-lock" on "Insight" at "SET NOT NULL";
    u06_alter_type_int_to_bigint: "table-rewrite" on "MetricDaily" at "BIGINT";
    u07_alter_type_text_to_varchar: "table-rewrite" on "Insight" at "VARCHAR(200)";
    u08_alter_type_varchar_shrink: "table-rewrite" on "Connection" at "VARCHAR(5)";
    u09_add_foreign_key_validating: "scan-under-lock" on "Insight" at "FOREIGN KEY";
    u10_add_check_validating: "scan-under-lock" on "MetricDaily" at "CHECK";
    u12_check_not_valid_then_validate: "scan-under-lock" on "MetricDaily" at "VALIDATE";
    u13_update_every_row: "full-table-dml" on "MetricDaily" at "UPDATE";
    u14_delete_every_row: "full-table-dml" on "ChatMessage" at "DELETE";
    u16_concurrent_index_not_alone: "fails" on "" at "CONCURRENTLY";
    u17_add_unique_constraint: "index-build" on "Insight" at "UNIQUE";
    u19_add_column_serial: "table-rewrite" on "Insight" at "SERIAL";
    u21_session_settings_changed: "table-rewrite" on "MetricDaily" at "BIGINT";
    u28_rename_then_index: "index-build" on "Finding" at "CREATE INDEX";
}

safe_cases! {
    s01_add_column_constant_default;
    s02_add_column_default_now;
    s03_create_index_concurrently;
    s04_create_unique_index_concurrently;
    s05_varchar_widen;
    s06_varchar_to_text;
    s07_foreign_key_not_valid;
    s08_foreign_key_validate;
    s09_check_not_valid;
    s10_check_validate;
    s11_set_not_null_proved;
    s14_batches_that_commit;
    s15_update_one_row;
    s16_add_column_nullable;
    s17_unique_constraint_using_index;
    s19_leading_lock_timeout;
}

#[test]
fn u22_data_migration_collides_with_sample_rows() {
    // The INSERT fails only on the sample rows: said so, a warning; the rest is still judged.
    let case = assert_blocks(
        "u22_data_migration_collides_with_sample_rows",
        "index-build",
        "MetricDaily",
        "CREATE INDEX",
    );
    let insert = line_of(&case.script, "INSERT");
    let update = line_of(&case.script, "UPDATE");
    let plan = &case.report.plans[0];
    let failure = plan
        .sample_failure
        .as_ref()
        .expect("a failure on sample rows");
    assert_eq!((failure.line, failure.code.as_str()), (insert, "23505"));
    assert!(plan.failure.is_none() && plan.applied);
    let warning = &case.report.findings[0][0];
    assert_eq!(
        (warning.rule, warning.line),
        (Rule::FailsOnSampleRows, insert)
    );
    assert!(warning.warns(), "{}", case.rendered);
    let not_judged = format!("full-table-dml could not judge line {update} on `MetricDaily`");
    assert!(
        case.report.blind[0]
            .iter()
            .any(|b| b.starts_with(&not_judged)),
        "{}",
        case.rendered
    );
    assert!(case.rendered.contains(&format!(
        "not judged: full-table-dml could not judge line {update}"
    )));
    assert!(case
        .rendered
        .contains("fails only because of the shadow's sample rows"));
}

#[test]
fn u23_and_u24_casts_of_text_fail_on_sample_rows_and_are_judged_without_them() {
    for (case_name, code) in [
        ("u23_cast_text_to_enum", "22P02"),
        ("u24_cast_text_to_timestamp", "22007"),
    ] {
        let case = assert_blocks(case_name, "table-rewrite", "Insight", "ALTER TABLE");
        let plan = &case.report.plans[0];
        assert_eq!(
            plan.sample_failure.as_ref().map(|f| f.code.as_str()),
            Some(code),
            "{}",
            case.rendered
        );
        assert!(case.report.findings[0]
            .iter()
            .any(|f| f.rule == Rule::FailsOnSampleRows && f.warns()));
    }
}

#[test]
fn u27_a_required_column_is_refused_on_sample_rows_and_still_judged() {
    // Refused on the sample rows: without production's sizes, whether it fails there is
    // unknown (a warning; with a database URL it is `fails`: see the test of production
    // sizes). On empty tables PostgreSQL still verifies the table under ACCESS EXCLUSIVE.
    let case = assert_blocks(
        "u27_add_required_column",
        "scan-under-lock",
        "MetricDaily",
        "ADD COLUMN",
    );
    let plan = &case.report.plans[0];
    let failure = plan
        .sample_failure
        .as_ref()
        .expect("refused on sample rows");
    assert_eq!(
        (failure.code.as_str(), failure.table.as_deref()),
        ("23502", Some("MetricDaily"))
    );
    assert!(case.report.findings[0]
        .iter()
        .any(|f| f.rule == Rule::FailsOnSampleRows && f.warns()));
}

#[test]
fn s20_drop_and_recreate_is_a_new_table() {
    // Same name, new object: its index build and rewrite touch a table nobody uses yet.
    let case = assert_passes("s20_drop_and_recreate");
    let index = line_of(&case.script, "CREATE INDEX");
    let statement = case.report.plans[0]
        .statements
        .iter()
        .find(|s| s.statement.line == index)
        .unwrap();
    assert!(
        statement
            .scans
            .iter()
            .any(|s| s.table == "Insight" && s.new_table),
        "{:?}",
        statement.scans
    );
}

#[test]
fn s21_a_table_created_earlier_in_the_set_is_new() {
    let (report, rendered, names) = lint_whole_case("s21_table_created_earlier_in_the_set", true);
    assert!(report.ok(), "{rendered}");
    assert_eq!(report.plans.len(), names.len());
    // Without `--since`, the table counts as one production has.
    let (report, rendered, _) = lint_whole_case("s21_table_created_earlier_in_the_set", false);
    assert!(!report.ok(), "{rendered}");
    assert!(report.findings[1]
        .iter()
        .any(|f| f.rule == Rule::IndexBuild && f.table == "Report"));
}

#[test]
fn u25_an_allowed_failure_hides_no_later_migration() {
    let (report, rendered, names) = lint_whole_case("u25_unsafe_behind_an_allowed_failure", false);
    assert_eq!(report.plans.len(), 2, "{rendered}");
    let failed = &report.plans[0];
    assert_eq!(failed.name, names[0]);
    assert_eq!(
        failed.failure.as_ref().map(|f| f.code.as_str()),
        Some("25001")
    );
    assert!(!failed.applied);
    assert!(report.findings[0]
        .iter()
        .all(|f| f.rule == Rule::Fails && f.allowed.is_some()));
    // The next migration is observed, and fails lint.
    assert!(!report.ok(), "{rendered}");
    assert!(report.findings[1]
        .iter()
        .any(|f| f.rule == Rule::IndexBuild && f.table == "MetricDaily" && f.blocks()));
    assert!(
        rendered.contains("2 migration(s) observed: 1 ran whole (0 of them on tables without sample rows, which made them fail), 1 refused by PostgreSQL even without rows"),
        "{rendered}"
    );
    assert!(
        rendered.contains(&format!("  refused: `{}` line 2: ", names[0])),
        "{rendered}"
    );
}

#[test]
fn u26_an_unknown_allow_rule_fails_and_allows_nothing() {
    let case = assert_blocks("u26_unknown_allow_rule", "unknown-allow", "", "BIGINT");
    assert!(blocking(&case)
        .iter()
        .any(|f| f.rule == Rule::TableRewrite && f.table == "MetricDaily"));
    assert!(
        case.rendered
            .contains("the `lint: allow tabel-rewrite` at line 1 names no rule lint can allow"),
        "{}",
        case.rendered
    );
}

#[test]
fn u11_foreign_key_not_valid_then_validate() {
    // The text cannot tell that the ADD's lock is still held: the observation can.
    let case = assert_blocks(
        "u11_foreign_key_not_valid_then_validate",
        "scan-under-lock",
        "Insight",
        "VALIDATE",
    );
    let add = line_of(&case.script, "NOT VALID");
    let finding = blocking(&case)[0];
    assert_eq!(
        finding.lock,
        Some((LockMode::ShareRowExclusive, "Insight".to_string(), add))
    );
    assert!(
        case.rendered.contains(&format!("(taken at line {add})")),
        "{}",
        case.rendered
    );
}

#[test]
fn u15_batches_in_one_transaction() {
    // Neither UPDATE changes every row; together, in one transaction, they do.
    let case = lint_case("u15_batches_in_one_transaction");
    let second = case
        .script
        .lines()
        .enumerate()
        .filter(|(_, l)| l.starts_with("UPDATE"))
        .map(|(i, _)| i + 1)
        .nth(1)
        .unwrap();
    let findings = blocking(&case);
    assert_eq!(findings.len(), 1, "{}", case.rendered);
    assert_eq!(
        (findings[0].rule.name(), findings[0].line),
        ("full-table-dml", second)
    );
}

#[test]
fn u18_expand_in_one_transaction() {
    let case = assert_blocks(
        "u18_expand_in_one_transaction",
        "scan-under-lock",
        "Insight",
        "FOREIGN KEY",
    );
    let index = line_of(&case.script, "CREATE INDEX");
    assert!(blocking(&case)
        .iter()
        .any(|f| f.rule == "index-build" && f.line == index));
}

#[test]
fn u20_an_exception_needs_a_reason() {
    let case = assert_blocks(
        "u20_allow_without_reason",
        "table-rewrite",
        "MetricDaily",
        "BIGINT",
    );
    assert_eq!(blocking(&case)[0].allow_without_reason, Some(1));
    assert!(case
        .rendered
        .contains("gives no reason, so it is not accepted"));
}

#[test]
fn s12_validate_then_set_not_null_one_file() {
    // The contract's pattern: the SET NOT NULL after a valid CHECK reads nothing.
    let case = assert_passes("s12_validate_then_set_not_null_one_file");
    let plan = &case.report.plans[0];
    let set_not_null = line_of(&case.script, "SET NOT NULL");
    let statement = plan
        .statements
        .iter()
        .find(|s| s.statement.line == set_not_null)
        .unwrap();
    assert!(statement.scans.is_empty(), "{:?}", statement.scans);
    assert_eq!(
        statement.validations,
        vec!["`Insight`.`teamId` NOT NULL, proved by a valid CHECK (no scan)".to_string()]
    );
    assert!(statement
        .locks
        .iter()
        .any(|l| l.table == "Insight" && l.mode == LockMode::AccessExclusive && l.taken_here));
}

#[test]
fn s13_new_table_with_foreign_key() {
    // A validating foreign key from a new, empty table: its lock on `Workspace` is seen, and
    // passes, because nothing is read while it is held.
    let case = assert_passes("s13_new_table_with_foreign_key");
    let locks: Vec<(String, LockMode, bool)> = case.report.plans[0]
        .statements
        .last()
        .unwrap()
        .locks
        .iter()
        .map(|l| (l.table.clone(), l.mode, l.new_table))
        .collect();
    assert!(locks.contains(&("Workspace".into(), LockMode::ShareRowExclusive, false)));
    assert!(locks.contains(&("Report".into(), LockMode::AccessExclusive, true)));
}

#[test]
fn s18_a_reviewed_exception_passes_and_shows() {
    let case = lint_case("s18_reviewed_exception");
    assert!(case.report.ok(), "{}", case.rendered);
    let finding = &case.report.findings[0][0];
    assert_eq!(finding.rule, "table-rewrite");
    assert_eq!(
        finding.allowed.as_deref(),
        Some("MetricDaily is rewritten in the maintenance window of 2026-06-01")
    );
    assert!(case
        .rendered
        .contains("allowed (reviewed): MetricDaily is rewritten"));
    assert!(case.rendered.contains("1 reviewed exception(s)"));
}

#[test]
fn every_shipped_migration_passes_and_its_plan_is_a_snapshot() {
    let migrations = repo_migrations();
    let targets = migrations.iter().map(|m| m.name.clone()).collect();
    let report = observe(&migrations, targets, true);
    assert!(report.ok(), "{}", report.render_with(Style::SNAPSHOT));
    assert_eq!(report.plans.len(), migrations.len());
    for plan in &report.plans {
        let single = PlanReport::new(String::new(), vec![plan.clone()], false);
        assert_stable_snapshot!(
            format!("plan_{}", plan.name),
            single.render_with(Style::SNAPSHOT)
        );
    }
}

#[test]
fn lint_exits_1_naming_file_and_line_and_the_help_lists_the_rules() {
    let (temp, target) = case_folder("u11_foreign_key_not_valid_then_validate");
    let dir = temp.path().to_str().unwrap();
    let shadow = server_url();
    let out = run_xtask(
        &[
            "migrate",
            "lint",
            "--migrations-dir",
            dir,
            &target,
            "--shadow-url",
            &shadow,
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "{dir}/{target}/migration.sql:4: scan-under-lock: `ALTER TABLE \"Insight\" VALIDATE CONSTRAINT"
        )),
        "{stdout}"
    );
    assert!(stdout.contains("holds SHARE ROW EXCLUSIVE on `Insight` (taken at line 3)"));
    assert!(!stdout.contains(&shadow), "the shadow URL holds a password");

    let help = run_xtask(&["migrate", "lint", "--help"], None);
    assert_eq!(help.status.code(), Some(0));
    let help = text(&help.stdout);
    assert!(help.starts_with("cargo xtask migrate lint"), "{help}");
    for rule in xtask::migrate::lint::rule_names() {
        assert!(help.contains(rule), "{rule}");
    }
    let bad = run_xtask(&["migrate", "plan", "--format", "yaml"], None);
    assert_eq!(bad.status.code(), Some(2));
}

/// On GitHub Actions a finding is an annotation on the migration's line, and `plan` fails on a
/// finding when asked to, after printing the plan.
#[test]
fn lint_annotates_github_and_plan_fails_on_findings_when_asked() {
    let (temp, target) = case_folder("u11_foreign_key_not_valid_then_validate");
    let dir = temp.path().to_str().unwrap();
    let shadow = server_url();
    let xtask = |command: &[&str]| {
        let mut args = vec!["migrate"];
        args.extend_from_slice(command);
        args.extend_from_slice(&["--migrations-dir", dir, &target, "--shadow-url", &shadow]);
        run_xtask(&args, None)
    };
    let lint = xtask(&["lint", "--format", "github"]);
    assert_eq!(lint.status.code(), Some(1), "{}", text(&lint.stderr));
    let stdout = text(&lint.stdout);
    let annotations: Vec<&str> = stdout.lines().filter(|l| l.starts_with("::")).collect();
    assert_eq!(annotations.len(), 1, "{stdout}");
    let expected = format!(
        "::error file={dir}/{target}/migration.sql,line=4,title=migrate lint%3A scan-under-lock::`ALTER TABLE \"Insight\" VALIDATE CONSTRAINT"
    );
    assert!(annotations[0].starts_with(&expected), "{stdout}");
    assert!(annotations[0].contains("; safe: "), "{stdout}");
    assert!(
        stdout.contains(&format!("{dir}/{target}/migration.sql:4: scan-under-lock:")),
        "the text comes first: {stdout}"
    );

    let json = xtask(&["lint", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    crate::json_schemas::assert_conforms("migrate_plan", &doc);
    assert_eq!(doc["schema"], "datahub.migrate_lint.v1");
    assert_eq!(doc["migrations"][0]["findings"][0]["lock"]["since_line"], 3);

    let plan = xtask(&["plan"]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan.stderr));
    let failing = xtask(&["plan", "--fail-on-findings"]);
    assert_eq!(failing.status.code(), Some(1), "{}", text(&failing.stderr));
    // The same plan is printed (the first line holds the time it took).
    let (plan_out, failing_out) = (text(&plan.stdout), text(&failing.stdout));
    assert!(
        plan_out.lines().skip(1).eq(failing_out.lines().skip(1)),
        "{failing_out}"
    );
    assert!(
        text(&failing.stderr).contains("1 blocking finding(s) (--fail-on-findings)"),
        "{}",
        text(&failing.stderr)
    );
}

#[test]
fn without_a_shadow_url_the_shadow_is_a_throwaway_cluster() {
    let out = run_xtask(&["migrate", "plan", INIT], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with(
            "plan of the migrations named, observed on a throwaway cluster (PostgreSQL "
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("✅ `20251201000000_init`: new tables only"),
        "{stdout}"
    );
    assert!(text(&out.stderr).contains("observing `20251201000000_init` ..."));
}

#[test]
fn plan_defaults_to_pending_migrations_and_never_writes_to_the_database() {
    let migrations = repo_migrations();
    let before_last = &migrations[migrations.len() - 2].name;
    let db = TestDb::migrated_to(before_last);
    let mut client = db.client();
    let tables_before = table_digest(&mut client);
    let shadow = server_url();
    let out = run_xtask(
        &["migrate", "plan", "--json", "--shadow-url", &shadow],
        Some(db.url()),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let planned: Vec<&str> = doc["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(planned, vec![migrations.last().unwrap().name.as_str()]);
    assert_eq!(table_digest(&mut client), tables_before);

    // Markdown for a pull request's summary.
    let out = run_xtask(
        &[
            "migrate",
            "plan",
            "--format",
            "markdown",
            "--shadow-url",
            &shadow,
        ],
        Some(db.url()),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let markdown = text(&out.stdout);
    assert!(markdown.starts_with("## Migration plan"), "{markdown}");
    assert!(
        markdown.contains(&format!("### `{}`", migrations.last().unwrap().name)),
        "{markdown}"
    );
    assert!(markdown.contains("| line | statement |"), "{markdown}");
}

/// Every table of the database with its row count and `_prisma_migrations` rows, as text.
fn table_digest(client: &mut xtask::db::Client) -> String {
    let tables: Vec<String> = client
        .query(
            "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut digest = String::new();
    for table in tables {
        let n: i64 = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .unwrap()
            .get(0);
        digest.push_str(&format!("{table}={n};"));
    }
    let rows: String = client
        .query_one(
            "SELECT string_agg(id || migration_name || coalesce(finished_at::text, ''), ',' ORDER BY id) FROM _prisma_migrations",
            &[],
        )
        .unwrap()
        .get(0);
    digest + &rows
}

/// A case's folder with every migration, linted by the binary against `production`.
fn lint_against(case: &str, production: &TestDb) -> (Option<i32>, String) {
    let temp = tempfile::tempdir().unwrap();
    copy_of_migrations(temp.path());
    copy_folders(&corpus().join("_setup"), temp.path());
    copy_folders(&corpus().join(case), temp.path());
    let shadow = server_url();
    let out = run_xtask(
        &[
            "migrate",
            "lint",
            "--migrations-dir",
            temp.path().to_str().unwrap(),
            "--shadow-url",
            &shadow,
        ],
        Some(production.url()),
    );
    (out.status.code(), text(&out.stdout) + &text(&out.stderr))
}

#[test]
fn with_a_database_url_findings_show_production_sizes_and_its_missing_tables_are_new() {
    let production = TestDb::migrated_to(&repo_migrations().last().unwrap().name);
    let mut client = production.client();
    crate::support::seed_small(&mut client);
    client.batch_execute("ANALYZE \"MetricDaily\"").unwrap();
    let row = client
        .query_one(
            "SELECT reltuples::bigint, pg_total_relation_size(oid) FROM pg_class WHERE relname = 'MetricDaily'",
            &[],
        )
        .unwrap();
    let size = xtask::migrate::production::TableSize {
        rows: row.get(0),
        bytes: row.get(1),
    };
    assert!(size.rows > 0);
    let (code, out) = lint_against("u03_create_index", &production);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "holds SHARE on `MetricDaily` ({} in production)",
            size.describe()
        )),
        "{out}"
    );
    assert!(out.contains(", tables and sizes from `"), "{out}");
    // A required column without a default: refused on the sample rows; production has rows.
    let (code, out) = lint_against("u27_add_required_column", &production);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "`MetricDaily` has {} in production, so deploy fails there too",
            size.describe()
        )),
        "{out}"
    );
    // `Report` does not exist in production: its index build is on an empty, unused table.
    let (code, out) = lint_against("s21_table_created_earlier_in_the_set", &production);
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn lint_rules_prints_every_rule_and_the_exception_syntax_from_the_code() {
    let out = run_xtask(&["migrate", "lint", "--rules"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for rule in Rule::ALL {
        let doc = rule.doc();
        assert!(stdout.contains(&format!("\n{} (", doc.name)), "{stdout}");
        assert!(stdout.contains(doc.fires), "{stdout}");
    }
    assert!(
        stdout.contains(xtask::migrate::rules::ALLOW_SYNTAX),
        "{stdout}"
    );
}
