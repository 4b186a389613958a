//! The rules `migrate lint` judges an observed migration by, one file each with its cases (as
//! squawk lays them out). A rule reads what the observer saw (locks, scans, rewrites, rows
//! changed) on tables that existed before the migration; a table the migration (or, with
//! `--since` or a database URL, its set) created is new and empty, and passes. `migrate lint
//! --rules` prints this list from the code.

use std::fmt;

use super::lint::Finding;
use super::observe::{LockMode, MigrationPlan, StatementPlan};

mod allow;
mod fails;
mod full_table_dml;
mod index_build;
mod scan_under_lock;
mod table_rewrite;

pub use allow::{ALLOW_SYNTAX, EXCEPTION_HELP};

/// One rule, by what it fires on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    TableRewrite,
    IndexBuild,
    ScanUnderLock,
    FullTableDml,
    Fails,
    FailsOnSampleRows,
    UnknownAllow,
    UnusedAllow,
}

/// A rule's name and documentation, kept in the rule's own file.
#[derive(Debug)]
pub struct RuleDoc {
    pub name: &'static str,
    /// When it fires.
    pub fires: &'static str,
    /// The online-safe way.
    pub safe: &'static str,
    /// Whether `-- lint: allow <name> because …` may record a reviewed exception to it.
    pub allowable: bool,
    /// A finding of it fails lint (otherwise it is a warning).
    pub blocks: bool,
}

impl Rule {
    pub const ALL: [Rule; 8] = [
        Rule::TableRewrite,
        Rule::IndexBuild,
        Rule::ScanUnderLock,
        Rule::FullTableDml,
        Rule::Fails,
        Rule::FailsOnSampleRows,
        Rule::UnknownAllow,
        Rule::UnusedAllow,
    ];

    pub fn doc(self) -> &'static RuleDoc {
        match self {
            Rule::TableRewrite => &table_rewrite::DOC,
            Rule::IndexBuild => &index_build::DOC,
            Rule::ScanUnderLock => &scan_under_lock::DOC,
            Rule::FullTableDml => &full_table_dml::DOC,
            Rule::Fails => &fails::DOC,
            Rule::FailsOnSampleRows => &fails::ON_SAMPLE_ROWS_DOC,
            Rule::UnknownAllow => &allow::UNKNOWN_DOC,
            Rule::UnusedAllow => &allow::UNUSED_DOC,
        }
    }

    pub fn name(self) -> &'static str {
        self.doc().name
    }

    pub fn from_name(name: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|rule| rule.name() == name)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl PartialEq<&str> for Rule {
    fn eq(&self, other: &&str) -> bool {
        self.name() == *other
    }
}

/// The rule set and the exception syntax, as `migrate lint --rules` prints them.
pub fn describe() -> String {
    let mut out = String::from("rules (a finding on a table that existed before the migration):\n");
    for rule in Rule::ALL {
        let doc = rule.doc();
        let kind = match (doc.blocks, doc.allowable) {
            (true, true) => "fails lint; may be allowed",
            (true, false) => "fails lint; cannot be allowed",
            (false, _) => "warning",
        };
        out.push_str(&format!(
            "\n{} ({kind})\n  fires: {}\n  safe:  {}\n",
            doc.name, doc.fires, doc.safe
        ));
    }
    out.push_str(&format!("\nexceptions:\n{EXCEPTION_HELP}"));
    out
}

/// What the rules found in one migration, and what they could not judge.
#[derive(Debug, Clone, Default)]
pub struct Judgement {
    pub findings: Vec<Finding>,
    /// Where a rule could not judge, and why (so no rule is silently blind).
    pub blind: Vec<String>,
}

/// Every rule over one observed migration, findings in statement order.
pub fn judge(plan: &MigrationPlan) -> Judgement {
    let mut judgement = Judgement::default();
    for statement in &plan.statements {
        table_rewrite::judge(statement, &mut judgement.findings);
        index_build::judge(statement, &mut judgement.findings);
        scan_under_lock::judge(statement, &mut judgement.findings);
    }
    full_table_dml::judge(plan, &mut judgement);
    fails::judge(plan, &mut judgement);
    judgement.findings.sort_by_key(|f| f.line);
    allow::apply(plan, &mut judgement.findings);
    judgement
}

/// The strongest lock that blocks the app on an existing table, preferring `table`'s own:
/// (mode, table, line that took it).
pub(crate) fn blocking(
    statement: &StatementPlan,
    table: &str,
) -> Option<(LockMode, String, usize)> {
    let on_table = statement
        .locks
        .iter()
        .find(|l| l.table == table && !l.new_table && l.mode.blocks().is_some());
    let strongest = statement
        .locks
        .iter()
        .filter(|l| !l.new_table && l.mode.blocks().is_some())
        .max_by_key(|l| (l.mode, std::cmp::Reverse(l.since_line)));
    on_table
        .or(strongest)
        .map(|l| (l.mode, l.table.clone(), l.since_line))
}

pub(crate) fn finding(
    statement: &StatementPlan,
    rule: Rule,
    table: &str,
    lock: Option<(LockMode, String, usize)>,
    what: String,
    fix: String,
) -> Finding {
    Finding {
        rule,
        line: statement.statement.line,
        statement: statement.statement.summary(60),
        table: table.to_string(),
        lock,
        what,
        fix,
        allowed: None,
        allow_without_reason: None,
    }
}

/// Statements and observations for the rules' own cases.
#[cfg(test)]
pub(crate) mod cases {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use crate::migrate::observe::{
        Lock, LockMode, MigrationPlan, Mode, Scan, ScanKind, StatementPlan,
    };
    use crate::migrate::statements;

    /// The statements of `sql`, nothing observed yet.
    pub fn plan(sql: &str) -> MigrationPlan {
        MigrationPlan {
            name: "20260101000000_case".into(),
            file: "migrations/20260101000000_case/migration.sql".into(),
            mode: Mode::Transaction,
            statements: statements::split(sql)
                .iter()
                .map(StatementPlan::new)
                .collect(),
            failure: None,
            sample_failure: None,
            applied: true,
            unreached: Vec::new(),
            rows_before: BTreeMap::from([("T".to_string(), 20)]),
            sizes: BTreeMap::new(),
            notes: Vec::new(),
            duration: Duration::ZERO,
        }
    }

    pub fn lock(table: &str, mode: LockMode, since_line: usize, new_table: bool) -> Lock {
        Lock {
            table: table.into(),
            mode,
            new_table,
            taken_here: true,
            since_line,
        }
    }

    pub fn scan(table: &str, kind: ScanKind, new_table: bool) -> Scan {
        Scan {
            table: table.into(),
            kind,
            new_table,
            rows_read: 0,
        }
    }
}
