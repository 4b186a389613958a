//! What `migrate lint` reports: findings of the rules in `rules/` (one file per rule; `migrate
//! lint --rules` lists them) on an observed migration, reviewed exceptions applied.

use super::observe::{LockMode, MigrationPlan};
pub use super::rules::{Judgement, Rule};

/// The names of every rule, as allow comments and `--rules` spell them.
pub fn rule_names() -> Vec<&'static str> {
    Rule::ALL.into_iter().map(Rule::name).collect()
}

/// One way the migration would block the app (or fail).
#[derive(Debug, Clone)]
pub struct Finding {
    pub rule: Rule,
    pub line: usize,
    /// The statement, shortened.
    pub statement: String,
    pub table: String,
    /// The blocking lock, the table it is on, and the line that took it.
    pub lock: Option<(LockMode, String, usize)>,
    /// What PostgreSQL did that makes the lock hurt.
    pub what: String,
    /// The online-safe way to write it.
    pub fix: String,
    /// The reason of a `-- lint: allow` for this rule above the statement.
    pub allowed: Option<String>,
    /// A `-- lint: allow` for this rule without a reason (not accepted).
    pub allow_without_reason: Option<usize>,
}

impl Finding {
    /// Whether it fails lint: a rule that blocks, without a reviewed exception.
    pub fn blocks(&self) -> bool {
        self.allowed.is_none() && self.rule.doc().blocks
    }

    /// A warning: reported, but lint passes.
    pub fn warns(&self) -> bool {
        self.allowed.is_none() && !self.rule.doc().blocks
    }
}

/// Every finding of an observed migration, in statement order, and where a rule was blind.
pub fn judge(plan: &MigrationPlan) -> Judgement {
    super::rules::judge(plan)
}
