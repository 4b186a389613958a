//! The runbook commands: each is a page of the release checklist or the recovery plan, composed
//! from the primitives (`migrate`, `backfill`, `check`, `smoke`), reading the database before
//! every step and ending with a report of steps, results, durations and rows.

pub(crate) mod database_steps;
mod inspect;
mod proof;
pub(crate) mod recover;
pub(crate) mod release;
pub(crate) mod rollback;
pub(crate) mod status;
pub(crate) mod step;

pub use recover::{recover, RecoverOptions, RecoverReport};
pub use release::{release, ReleaseOptions};
pub use rollback::rollback;
pub use status::status;
pub use step::{RunbookReport, Step, StepResult};
