//! The report every runbook command ends with: one row per step (result, rows, duration, what
//! happened), then one line that says where the database stands and what to run next.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::report::{thousands, Report, Style, Table};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepResult {
    Done,
    /// Already done before this run: the detail says how the database shows it.
    Skipped,
    Failed,
    /// Part of the plan, not run (`--dry-run`, a preview).
    Planned,
}

impl StepResult {
    pub(crate) fn label(self) -> &'static str {
        match self {
            StepResult::Done => "done",
            StepResult::Skipped => "skipped",
            StepResult::Failed => "FAILED",
            StepResult::Planned => "planned",
        }
    }

    pub(crate) fn key(self) -> &'static str {
        match self {
            StepResult::Done => "done",
            StepResult::Skipped => "skipped",
            StepResult::Failed => "failed",
            StepResult::Planned => "planned",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    pub result: StepResult,
    /// The first line shows in the table; further lines (a failure's causes) below it.
    pub detail: String,
    pub duration: Duration,
    /// Rows the step changed or counted, when it deals in rows.
    pub rows: Option<i64>,
}

impl Step {
    pub(crate) fn done(name: &str, started: Instant, detail: impl Into<String>) -> Step {
        Step {
            name: name.into(),
            result: StepResult::Done,
            detail: detail.into(),
            duration: started.elapsed(),
            rows: None,
        }
    }

    pub(crate) fn failed(name: &str, started: Instant, detail: impl Into<String>) -> Step {
        Step {
            name: name.into(),
            result: StepResult::Failed,
            detail: detail.into(),
            duration: started.elapsed(),
            rows: None,
        }
    }

    /// A step that failed with an error: its message, then its causes on the lines below.
    pub(crate) fn error(name: &str, started: Instant, error: &anyhow::Error) -> Step {
        let mut detail = error.to_string();
        for cause in error.chain().skip(1) {
            detail.push('\n');
            detail.push_str(&cause.to_string());
        }
        Step::failed(name, started, detail)
    }

    pub(crate) fn with_rows(mut self, rows: i64) -> Step {
        self.rows = Some(rows);
        self
    }
}

#[derive(Debug, Clone)]
pub struct RunbookReport {
    pub command: &'static str,
    pub steps: Vec<Step>,
    /// The closing line: the outcome, and the command to run next when there is one.
    pub conclusion: String,
    pub ok: bool,
    pub duration: Duration,
}

/// Collects steps as they run, echoing each to stderr so a long release shows its progress.
pub(crate) struct Steps {
    command: &'static str,
    started: Instant,
    steps: Vec<Step>,
}

impl Steps {
    pub(crate) fn new(command: &'static str) -> Steps {
        Steps {
            command,
            started: Instant::now(),
            steps: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, step: Step) {
        let mark = match step.result {
            StepResult::Done => "✅",
            StepResult::Skipped => "⏭️",
            StepResult::Failed => "❌",
            StepResult::Planned => "·",
        };
        if step.result != StepResult::Planned {
            eprintln!(
                "{mark} {} {}: {}",
                step.result.key(),
                step.name,
                step.detail.lines().next().unwrap_or("")
            );
        }
        self.steps.push(step);
    }

    pub(crate) fn skipped(&mut self, name: &str, why: impl Into<String>) {
        self.push(Step {
            name: name.into(),
            result: StepResult::Skipped,
            detail: why.into(),
            duration: Duration::ZERO,
            rows: None,
        });
    }

    pub(crate) fn planned(&mut self, name: &str, what: impl Into<String>) {
        self.push(Step {
            name: name.into(),
            result: StepResult::Planned,
            detail: what.into(),
            duration: Duration::ZERO,
            rows: None,
        });
    }

    pub(crate) fn command(&self) -> &'static str {
        self.command
    }

    pub(crate) fn all(&self, predicate: impl Fn(&Step) -> bool) -> bool {
        self.steps.iter().all(predicate)
    }

    pub(crate) fn has_failed(&self) -> bool {
        self.steps.iter().any(|s| s.result == StepResult::Failed)
    }

    pub(crate) fn finish(self, ok: bool, conclusion: impl Into<String>) -> RunbookReport {
        RunbookReport {
            command: self.command,
            steps: self.steps,
            conclusion: conclusion.into(),
            ok,
            duration: self.started.elapsed(),
        }
    }

    /// Stops the runbook at `at` with the command to run next.
    pub(crate) fn stopped(self, at: &str, next: &str) -> RunbookReport {
        let command = self.command;
        self.finish(
            false,
            format!("❌ {command} stopped at `{at}`. Next: {next}"),
        )
    }
}

impl RunbookReport {
    pub(crate) fn table(&self, style: Style) -> Table {
        let mut table = Table::new(&["step", "result", "rows", "duration", "detail"]);
        for step in &self.steps {
            table.push(vec![
                step.name.clone(),
                step.result.label().to_string(),
                step.rows.map(thousands).unwrap_or_default(),
                // A fixed-width cell, so the table keeps its shape whatever the timing.
                format!("{:>10}", style.seconds(step.duration)),
                step.detail.lines().next().unwrap_or("").to_string(),
            ]);
        }
        table
    }
}

impl Report for RunbookReport {
    fn render_with(&self, style: Style) -> String {
        let mut out = format!("== {}\n", self.command);
        out.push_str(&self.table(style).render());
        // A failed step's detail can span lines (a migration's error, the smoke checks).
        for step in &self.steps {
            let rest: Vec<&str> = step.detail.lines().skip(1).collect();
            if step.result == StepResult::Failed && !rest.is_empty() {
                out.push_str(&format!("\n{} failed:\n", step.name));
                for line in rest {
                    out.push_str(&format!("  {line}\n"));
                }
            }
        }
        out.push('\n');
        out.push_str(&self.conclusion);
        out.push('\n');
        out
    }

    fn to_json(&self) -> serde_json::Value {
        crate::report::document(
            "runbook",
            json!({
                "command": self.command,
                "ok": self.ok,
                "seconds": self.duration.as_secs_f64(),
                "steps": self.steps.iter().map(|s| json!({
                    "step": s.name,
                    "result": s.result.key(),
                    "rows": s.rows,
                    "seconds": s.duration.as_secs_f64(),
                    "detail": s.detail,
                })).collect::<Vec<_>>(),
                "conclusion": self.conclusion,
            }),
        )
    }

    fn ok(&self) -> bool {
        self.ok
    }
}
