//! The runbook commands: each is a page of the release checklist or the recovery plan, composed
//! from the primitives (`migrate`, `backfill`, `check`, `smoke`), reading the database before
//! every step and ending with a report of steps, results, durations and rows.

pub mod commands;
pub mod inspect;
pub mod quick_status;
pub mod recover;
pub mod release;
pub mod rollback;
pub mod smoke_record;
pub mod step;

pub use quick_status::quick_status;
pub use recover::{recover, RecoverOptions, RecoverReport};
pub use release::{release, ReleaseOptions};
pub use rollback::rollback;
pub use step::{RunbookReport, Step, StepResult};
