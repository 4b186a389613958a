//! Reviewed exceptions: `-- lint: allow <rule> because <reason>` on the line(s) just above a
//! statement. An exception without a reason is not accepted; one naming a rule lint does not
//! have fails lint (`unknown-allow`: a misspelled rule must not pass silently); one with
//! nothing to allow on its statement is a warning (`unused-allow`).

use super::{Rule, RuleDoc};
use crate::migrate::lint::Finding;
use crate::migrate::observe::MigrationPlan;

pub const ALLOW_SYNTAX: &str = "-- lint: allow <rule> because <reason>";

pub const EXCEPTION_HELP: &str = "\
  -- lint: allow <rule> because <reason>
  on the line(s) just above a statement records a reviewed exception to one rule for that
  statement; lint prints it with its reason. Without `because <reason>` it is not accepted.
  A rule name lint does not have fails lint (unknown-allow); an allow the statement has no
  finding for is a warning (unused-allow). An allow never hides another statement or another
  migration: every migration is observed, whatever fails before it.
";

pub(super) const UNKNOWN_DOC: RuleDoc = RuleDoc {
    name: "unknown-allow",
    fires:
        "a `-- lint: allow` comment names a rule lint does not have, or one that cannot be allowed",
    safe: "spell the rule as `migrate lint --rules` lists it",
    allowable: false,
    blocks: true,
};

pub(super) const UNUSED_DOC: RuleDoc = RuleDoc {
    name: "unused-allow",
    fires: "a `-- lint: allow <rule>` comment's statement has no finding of that rule",
    safe: "remove the comment, or move it above the statement it is meant for",
    allowable: false,
    blocks: false,
};

fn allowable() -> String {
    Rule::ALL
        .into_iter()
        .filter(|rule| rule.doc().allowable)
        .map(Rule::name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Marks the findings a reviewed exception allows, and adds a finding for each allow comment
/// that names no rule or allows nothing.
pub(super) fn apply(plan: &MigrationPlan, findings: &mut Vec<Finding>) {
    let mut extra = Vec::new();
    for statement in &plan.statements {
        for allow in &statement.statement.allows {
            let rule = Rule::from_name(&allow.rule).filter(|rule| rule.doc().allowable);
            let Some(rule) = rule else {
                extra.push(Finding {
                    rule: Rule::UnknownAllow,
                    line: statement.statement.line,
                    statement: statement.statement.summary(60),
                    table: String::new(),
                    lock: None,
                    what: format!(
                        "the `lint: allow {}` at line {} names no rule lint can allow, so it allows nothing",
                        allow.rule, allow.line
                    ),
                    fix: format!("write one of: {}", allowable()),
                    allowed: None,
                    allow_without_reason: None,
                });
                continue;
            };
            let mut used = false;
            for finding in findings
                .iter_mut()
                .filter(|f| f.line == statement.statement.line && f.rule == rule)
            {
                used = true;
                if allow.reason.is_empty() {
                    finding.allow_without_reason = Some(allow.line);
                } else {
                    finding.allowed = Some(allow.reason.clone());
                }
            }
            if !used {
                extra.push(Finding {
                    rule: Rule::UnusedAllow,
                    line: statement.statement.line,
                    statement: statement.statement.summary(60),
                    table: String::new(),
                    lock: None,
                    what: format!(
                        "the `lint: allow {rule}` at line {} allows nothing: this statement has no `{rule}` finding",
                        allow.line
                    ),
                    fix: UNUSED_DOC.safe.into(),
                    allowed: None,
                    allow_without_reason: None,
                });
            }
        }
    }
    findings.extend(extra);
    findings.sort_by_key(|f| f.line);
}

#[cfg(test)]
mod tests {
    use super::super::cases::plan;
    use super::super::{finding, judge};
    use super::*;

    #[test]
    fn a_misspelled_rule_fails_and_an_unused_one_warns() {
        let plan = plan("-- lint: allow tabel-rewrite because typo\nALTER TABLE \"T\" ADD COLUMN \"a\" int;\n-- lint: allow index-build because nothing to allow\nALTER TABLE \"T\" ADD COLUMN \"b\" int;");
        let judgement = judge(&plan);
        let rules: Vec<(Rule, usize, bool)> = judgement
            .findings
            .iter()
            .map(|f| (f.rule, f.line, f.blocks()))
            .collect();
        assert_eq!(
            rules,
            vec![(Rule::UnknownAllow, 2, true), (Rule::UnusedAllow, 4, false)]
        );
        assert!(judgement.findings[0].fix.contains("table-rewrite"));
    }

    #[test]
    fn an_allow_with_a_reason_allows_its_rule_only() {
        let plan = plan("-- lint: allow table-rewrite because reviewed\nALTER TABLE \"T\" ALTER COLUMN \"n\" TYPE BIGINT;");
        let mut findings = vec![finding(
            &plan.statements[0],
            Rule::TableRewrite,
            "T",
            None,
            String::new(),
            String::new(),
        )];
        apply(&plan, &mut findings);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].allowed.as_deref(), Some("reviewed"));
        assert!(!findings[0].blocks());
    }
}
