//! Runs one migration on a shadow database the way deploy runs it, statement by statement, and
//! records what PostgreSQL shows after each statement:
//!
//! - **locks**: `pg_locks` of the same backend (relations of this database with oid ≥ 16384, so
//!   the observer's own catalog reads do not count). Locks are held to commit, so an earlier
//!   statement's lock is still listed while a later statement runs.
//! - **rewrites**: a table that existed before the migration whose `relfilenode` changed, with
//!   PostgreSQL's own DEBUG1 line `rewriting table "…"` saying why.
//! - **scans**: the transaction's scan counters (`pg_stat_xact_user_tables`, only ever as a
//!   difference inside one transaction: they also hold counts not yet flushed from earlier
//!   ones) and the DEBUG1 lines `verifying table`, `validating foreign key constraint`,
//!   `building index … on table …`.
//! - **validations**: constraints that became valid (`pg_constraint.convalidated`) and columns
//!   that became NOT NULL, with `existing constraints on column … are sufficient to prove …`
//!   when PostgreSQL skipped the scan.
//! - **row changes**: rows updated or deleted per table, against the rows the table had.
//!
//! Execution follows Prisma: a script of several statements is one transaction (the observer
//! opens it with BEGIN and rolls it back at the end); a script of one statement that cannot run
//! in a transaction (`CREATE INDEX CONCURRENTLY`, a `DO` block that commits) runs on its own,
//! and its locks are read while it waits for a second session that holds ROW EXCLUSIVE on every
//! table, as an app's open write transaction would.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::db::Client;
use anyhow::{Context, Result};

use super::production::{Baseline, TableSize};
use super::sample;
use super::shadow::{Notices, Shadow};
use super::statements::{self, Statement};
use crate::db::{self, quote_ident};
use crate::migrations::Migration;

/// PostgreSQL's table lock modes, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LockMode {
    AccessShare,
    RowShare,
    RowExclusive,
    ShareUpdateExclusive,
    Share,
    ShareRowExclusive,
    Exclusive,
    AccessExclusive,
}

impl LockMode {
    fn parse(mode: &str) -> Option<LockMode> {
        Some(match mode {
            "AccessShareLock" => LockMode::AccessShare,
            "RowShareLock" => LockMode::RowShare,
            "RowExclusiveLock" => LockMode::RowExclusive,
            "ShareUpdateExclusiveLock" => LockMode::ShareUpdateExclusive,
            "ShareLock" => LockMode::Share,
            "ShareRowExclusiveLock" => LockMode::ShareRowExclusive,
            "ExclusiveLock" => LockMode::Exclusive,
            "AccessExclusiveLock" => LockMode::AccessExclusive,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            LockMode::AccessShare => "ACCESS SHARE",
            LockMode::RowShare => "ROW SHARE",
            LockMode::RowExclusive => "ROW EXCLUSIVE",
            LockMode::ShareUpdateExclusive => "SHARE UPDATE EXCLUSIVE",
            LockMode::Share => "SHARE",
            LockMode::ShareRowExclusive => "SHARE ROW EXCLUSIVE",
            LockMode::Exclusive => "EXCLUSIVE",
            LockMode::AccessExclusive => "ACCESS EXCLUSIVE",
        }
    }

    /// The abbreviation the plan's tables use.
    pub fn short(self) -> &'static str {
        match self {
            LockMode::AccessShare => "AS",
            LockMode::RowShare => "RS",
            LockMode::RowExclusive => "RX",
            LockMode::ShareUpdateExclusive => "SUX",
            LockMode::Share => "S",
            LockMode::ShareRowExclusive => "SRX",
            LockMode::Exclusive => "X",
            LockMode::AccessExclusive => "AX",
        }
    }

    /// What the mode stops the app from doing on that table, if anything: SHARE and stronger
    /// conflict with the ROW EXCLUSIVE of INSERT/UPDATE/DELETE; ACCESS EXCLUSIVE with SELECT.
    pub fn blocks(self) -> Option<&'static str> {
        match self {
            LockMode::AccessExclusive => Some("reads and writes"),
            m if m >= LockMode::Share => Some("writes"),
            _ => None,
        }
    }
}

/// A table lock the migration holds after a statement (or, for a statement that runs on its
/// own, while it runs).
#[derive(Debug, Clone)]
pub struct Lock {
    pub table: String,
    pub mode: LockMode,
    /// The table did not exist before the migration: nobody else can be using it.
    pub new_table: bool,
    /// This statement took the lock (or made it stronger); otherwise an earlier one did.
    pub taken_here: bool,
    /// The line of the statement that took it.
    pub since_line: usize,
}

/// Why a statement read a table, most telling last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ScanKind {
    /// Rows read by a query (a guard's count, an UPDATE's scan, a foreign key's lookups).
    Read,
    /// `validating foreign key constraint`: every row checked against the referenced table.
    ValidateForeignKey,
    /// `verifying table`: every row checked against a new CHECK or NOT NULL.
    Verify,
    /// `building index … on table …`: every row read into a new index.
    IndexBuild,
    /// `rewriting table`: every row copied into new storage, every index rebuilt.
    Rewrite,
}

impl ScanKind {
    pub fn label(self) -> &'static str {
        match self {
            ScanKind::Read => "read",
            ScanKind::ValidateForeignKey => "foreign key validation",
            ScanKind::Verify => "verification",
            ScanKind::IndexBuild => "index build",
            ScanKind::Rewrite => "rewrite",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Scan {
    pub table: String,
    pub kind: ScanKind,
    pub new_table: bool,
    /// Rows read sequentially (`seq_tup_read`), when the counters saw the scan.
    pub rows_read: i64,
}

/// What one statement did.
#[derive(Debug, Clone)]
pub struct StatementPlan {
    pub statement: Statement,
    pub locks: Vec<Lock>,
    /// Existing tables whose storage was replaced: (table, PostgreSQL said `rewriting table`).
    pub rewrites: Vec<(String, bool)>,
    pub scans: Vec<Scan>,
    /// Constraints validated and columns made NOT NULL on existing tables, described.
    pub validations: Vec<String>,
    /// Rows updated or deleted, per existing table.
    pub changed_rows: Vec<(String, i64)>,
    /// Why the statement was not observed (a BEGIN inside the migration's own transaction).
    pub note: Option<String>,
}

impl StatementPlan {
    pub(crate) fn new(statement: &Statement) -> StatementPlan {
        StatementPlan {
            statement: statement.clone(),
            locks: Vec::new(),
            rewrites: Vec::new(),
            scans: Vec::new(),
            validations: Vec::new(),
            changed_rows: Vec::new(),
            note: None,
        }
    }
}

/// How deploy runs the script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One transaction: every lock is held until the last statement commits.
    Transaction,
    /// One statement outside a transaction (it cannot run in one).
    OnItsOwn,
}

#[derive(Debug, Clone)]
pub struct Failure {
    pub line: usize,
    pub code: String,
    pub message: String,
    /// The table PostgreSQL names in the error, when it names one.
    pub table: Option<String>,
}

/// One migration, observed.
#[derive(Debug, Clone)]
pub struct MigrationPlan {
    pub name: String,
    /// `migrations/<name>/migration.sql` as the user reads it.
    pub file: String,
    pub mode: Mode,
    pub statements: Vec<StatementPlan>,
    /// The statement PostgreSQL refused, if any: deploy would fail there too.
    pub failure: Option<Failure>,
    /// The statement PostgreSQL refused only because of the shadow's sample rows: on tables
    /// without them it ran, and `statements` are that run.
    pub sample_failure: Option<Failure>,
    /// Whether the migration is applied on the shadow, so the ones after it see its schema.
    pub applied: bool,
    /// Lines of the statements after the one PostgreSQL refused: never run.
    pub unreached: Vec<usize>,
    /// Rows of each existing table before the migration (the sample).
    pub rows_before: BTreeMap<String, i64>,
    /// Production's size of each existing table, when a database URL was given.
    pub sizes: BTreeMap<String, TableSize>,
    /// Tables that could not be given sample rows, and other caveats.
    pub notes: Vec<String>,
    pub duration: Duration,
}

/// Session settings of the observer: every DEBUG1 line as a notice, in English (the messages are
/// matched by their text), index builds without parallel workers so the notices are the same on
/// every machine. Set again after every statement that can change them (SET, RESET, DO, SELECT, CALL).
const OBSERVER_SETTINGS_SQL: &str =
    "SET client_min_messages = debug1; SET max_parallel_maintenance_workers = 0";

/// The catalog and this transaction's counters and locks, in one statement (one round trip
/// after every statement of a migration), as rows of one shape: (what, oid, oid, name, text,
/// text, four numbers, flag).
///
/// - `r`: every table, view and foreign table of the user schemas (the only relations a lock,
///   a scan or a rewrite is reported on): oid, name, kind, schema, relfilenode;
/// - `c`: CHECK and foreign key constraints: oid, table oid, name, valid;
/// - `n`: the columns of the existing tables `$1` and whether they are NOT NULL (only existing
///   tables' columns can be "made NOT NULL" in a way that matters, and reading every column of
///   a large schema after every statement would cost most of the run);
/// - `s`: this transaction's counters per table (read only as differences inside one
///   transaction): seq_scan, seq_tup_read, idx_scan, rows updated or deleted;
/// - `l`: the relation locks this backend holds in this database; oids below 16384 are the
///   catalogs the observer's own query reads.
const CATALOG_SQL: &str = "
    SELECT 'r'::text, c.oid, 0::oid, c.relname::text, c.relkind::text, n.nspname::text,
           c.relfilenode::bigint, 0::bigint, 0::bigint, 0::bigint, false
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
      AND n.nspname NOT LIKE 'pg\\_temp\\_%' AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%'
    UNION ALL
    SELECT 'c', c.oid, c.conrelid, c.conname::text, '', '', 0, 0, 0, 0, c.convalidated
    FROM pg_constraint c
    JOIN pg_class r ON r.oid = c.conrelid
    JOIN pg_namespace n ON n.oid = r.relnamespace
    WHERE c.contype IN ('c', 'f') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
    UNION ALL
    SELECT 'n', a.attrelid, 0::oid, a.attname::text, '', '', 0, 0, 0, 0, a.attnotnull
    FROM pg_attribute a
    WHERE a.attrelid = ANY($1::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT 's', relid, 0::oid, '', '', '', seq_scan, seq_tup_read, coalesce(idx_scan, 0),
           n_tup_upd + n_tup_del, false
    FROM pg_stat_xact_user_tables
    UNION ALL
    SELECT 'l', l.relation, 0::oid, l.mode, '', '', 0, 0, 0, 0, false
    FROM pg_locks l
    WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND l.granted
      AND l.database = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())
      AND l.relation >= 16384";

/// The relation locks backend `$1` holds (an index's count for its table), read by a second
/// session while it waits.
const LOCKS_OF_SQL: &str = "
    SELECT coalesce(t.oid, c.oid), l.mode FROM pg_locks l
    JOIN pg_class c ON c.oid = l.relation
    LEFT JOIN pg_index i ON i.indexrelid = c.oid
    LEFT JOIN pg_class t ON t.oid = i.indrelid
    WHERE l.pid = $1 AND l.locktype = 'relation' AND l.granted AND l.relation >= 16384
      AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
      AND l.database = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())";

/// Table locks by table oid.
type TableLocks = Vec<(u32, LockMode)>;

/// Whether backend `$1` waits for a lock.
const WAITING_SQL: &str = "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = $1 AND NOT granted)";

#[derive(Debug, Clone)]
struct Relation {
    name: String,
    kind: String,
    filenode: u32,
    schema: String,
}

#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    seq_scan: i64,
    seq_tup_read: i64,
    idx_scan: i64,
    changed: i64,
}

/// The catalog and counters at one moment.
#[derive(Debug, Clone, Default)]
struct Catalog {
    relations: HashMap<u32, Relation>,
    constraints: HashMap<u32, (String, u32, bool)>,
    not_null: HashMap<(u32, String), bool>,
    counters: HashMap<u32, Counters>,
    /// The relation locks this backend held: (relation oid, pg_locks mode).
    locks: Vec<(u32, String)>,
}

/// The observer's catalog query, prepared once per connection: it runs after every
/// statement, and an unprepared query costs a second round trip and a fresh plan each time.
pub(crate) struct Queries {
    catalog: postgres::Statement,
}

impl Queries {
    pub(crate) fn prepare(client: &mut Client) -> Result<Queries> {
        Ok(Queries {
            catalog: client
                .prepare(CATALOG_SQL)
                .context("cannot prepare the observer's catalog query")?,
        })
    }
}

impl Catalog {
    /// The catalog now; the NOT NULL flags of the tables `existing` only.
    fn read(client: &mut Client, queries: &Queries, existing: &[u32]) -> Result<Catalog> {
        let mut catalog = Catalog::default();
        for row in client
            .query(&queries.catalog, &[&existing])
            .context("cannot read the shadow's catalog")?
        {
            let what: String = row.get(0);
            let oid: u32 = row.get(1);
            match what.as_str() {
                "r" => {
                    catalog.relations.insert(
                        oid,
                        Relation {
                            name: row.get(3),
                            kind: row.get(4),
                            schema: row.get(5),
                            filenode: row.get::<_, i64>(6) as u32,
                        },
                    );
                }
                "c" => {
                    catalog
                        .constraints
                        .insert(oid, (row.get(3), row.get(2), row.get(10)));
                }
                "n" => {
                    catalog.not_null.insert((oid, row.get(3)), row.get(10));
                }
                "s" => {
                    catalog.counters.insert(
                        oid,
                        Counters {
                            seq_scan: row.get(6),
                            seq_tup_read: row.get(7),
                            idx_scan: row.get(8),
                            changed: row.get(9),
                        },
                    );
                }
                _ => catalog.locks.push((oid, row.get(3))),
            }
        }
        Ok(catalog)
    }

    fn is_table(&self, oid: u32) -> bool {
        self.relations
            .get(&oid)
            .is_some_and(|r| matches!(r.kind.as_str(), "r" | "p"))
    }

    /// The table PostgreSQL names in a DEBUG1 line (by its name now).
    fn table_named(&self, name: &str) -> Option<u32> {
        let mut oids: Vec<u32> = self
            .relations
            .iter()
            .filter(|(_, r)| r.name == name && matches!(r.kind.as_str(), "r" | "p" | "m"))
            .map(|(oid, _)| *oid)
            .collect();
        oids.sort();
        oids.first().copied()
    }

    /// Ordinary and partitioned tables, by oid.
    fn tables(&self) -> Vec<u32> {
        let mut oids: Vec<u32> = self
            .relations
            .keys()
            .copied()
            .filter(|oid| self.is_table(*oid))
            .collect();
        oids.sort();
        oids
    }
}

/// A DEBUG1 line of PostgreSQL that says what a statement did to a table.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Notice {
    Rewriting(String),
    Verifying(String),
    ValidatingForeignKey(String),
    BuildingIndex { table: String },
    NotNullProved { table: String, column: String },
}

/// The quoted names in a message, in order.
fn quoted(message: &str) -> Vec<String> {
    message
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

fn parse_notice(message: &str) -> Option<Notice> {
    let names = quoted(message);
    let first = names.first().cloned();
    if message.starts_with("rewriting table ") {
        return first.map(Notice::Rewriting);
    }
    if message.starts_with("verifying table ") {
        return first.map(Notice::Verifying);
    }
    if message.starts_with("validating foreign key constraint ") {
        return first.map(Notice::ValidatingForeignKey);
    }
    if message.starts_with("building index ") && names.len() >= 2 {
        return Some(Notice::BuildingIndex {
            table: names[1].clone(),
        });
    }
    if message.starts_with("existing constraints on column ")
        && message.contains("sufficient to prove")
    {
        let (table, column) = first?
            .rsplit_once('.')
            .map(|(t, c)| (t.to_string(), c.to_string()))?;
        return Some(Notice::NotNullProved { table, column });
    }
    None
}

/// The observer's state across the statements of one migration. Tables are known by oid, not
/// by name: a table dropped and created again under the same name is a new table, a renamed
/// one is still the table it was.
struct Observer<'a> {
    initial: Catalog,
    /// Tables that existed before the migration and count as existing (production's).
    existing: BTreeSet<u32>,
    /// table oid → (strongest mode held, line of the statement that took it)
    held: BTreeMap<u32, (LockMode, usize)>,
    notices: &'a Notices,
}

impl Observer<'_> {
    fn take_notices(&self) -> Vec<Notice> {
        let mut notices = self.notices.lock().unwrap_or_else(|e| e.into_inner());
        notices
            .drain(..)
            .filter_map(|n| parse_notice(n.message()))
            .collect()
    }

    /// The table's name now (or before the migration, when it was dropped since).
    fn name(&self, oid: u32, now: &Catalog) -> Option<String> {
        now.relations
            .get(&oid)
            .or_else(|| self.initial.relations.get(&oid))
            .filter(|r| matches!(r.kind.as_str(), "r" | "p" | "v" | "m" | "f"))
            .map(|r| r.name.clone())
    }

    fn is_new(&self, oid: u32) -> bool {
        !self.existing.contains(&oid)
    }

    /// What changed between `before` and `after`, the statement's notices and the locks.
    fn compare(
        &mut self,
        plan: &mut StatementPlan,
        before: &Catalog,
        after: &Catalog,
        notices: &[Notice],
        locks: &[(u32, LockMode)],
    ) {
        let line = plan.statement.line;
        // Locks: the strongest mode per table; a new or stronger one was taken here.
        let mut strongest: BTreeMap<u32, LockMode> = BTreeMap::new();
        for (table, mode) in locks {
            let entry = strongest.entry(*table).or_insert(*mode);
            *entry = (*entry).max(*mode);
        }
        for (table, mode) in strongest {
            let taken_here = match self.held.get(&table) {
                Some((held, _)) => mode > *held,
                None => true,
            };
            if taken_here {
                self.held.insert(table, (mode, line));
            }
        }
        plan.locks = self
            .held
            .iter()
            .filter_map(|(oid, (mode, since))| {
                Some(Lock {
                    table: self.name(*oid, after)?,
                    mode: *mode,
                    new_table: self.is_new(*oid),
                    taken_here: *since == line,
                    since_line: *since,
                })
            })
            .collect();
        plan.locks.sort_by(|a, b| a.table.cmp(&b.table));

        // Rewrites: existing tables with new storage.
        for oid in &self.existing {
            let (Some(was), Some(now)) = (before.relations.get(oid), after.relations.get(oid))
            else {
                continue;
            };
            if was.filenode != now.filenode {
                let said = notices.iter().any(
                    |n| matches!(n, Notice::Rewriting(t) if after.table_named(t) == Some(*oid)),
                );
                plan.rewrites.push((now.name.clone(), said));
            }
        }
        plan.rewrites.sort();

        // Scans: the counters, then what the notices say each was for.
        let mut scans: BTreeMap<u32, Scan> = BTreeMap::new();
        let mut add = |oid: u32, kind: ScanKind, rows: i64| {
            let Some(table) = self.name(oid, after) else {
                return;
            };
            let scan = scans.entry(oid).or_insert(Scan {
                table,
                kind,
                new_table: self.is_new(oid),
                rows_read: 0,
            });
            scan.kind = scan.kind.max(kind);
            scan.rows_read += rows;
        };
        for (oid, now) in &after.counters {
            let was = before.counters.get(oid).copied().unwrap_or_default();
            if !after.relations.contains_key(oid) {
                continue;
            }
            if now.seq_scan > was.seq_scan || now.idx_scan > was.idx_scan {
                add(*oid, ScanKind::Read, now.seq_tup_read - was.seq_tup_read);
            }
            let changed = now.changed - was.changed;
            if changed > 0 && self.existing.contains(oid) {
                // Known by the name it had before the migration, as `rows_before` is.
                if let Some(relation) = self.initial.relations.get(oid) {
                    plan.changed_rows.push((relation.name.clone(), changed));
                }
            }
        }
        for notice in notices {
            let (table, kind) = match notice {
                Notice::Rewriting(table) => (after.table_named(table), ScanKind::Rewrite),
                Notice::Verifying(table) => (after.table_named(table), ScanKind::Verify),
                Notice::BuildingIndex { table } if !table.starts_with("pg_toast_") => {
                    (after.table_named(table), ScanKind::IndexBuild)
                }
                Notice::ValidatingForeignKey(constraint) => (
                    after
                        .constraints
                        .values()
                        .find(|(name, _, _)| name == constraint)
                        .map(|(_, table, _)| *table),
                    ScanKind::ValidateForeignKey,
                ),
                _ => continue,
            };
            if let Some(table) = table {
                add(table, kind, 0);
            }
        }
        plan.scans = scans.into_values().collect();
        plan.scans.sort_by(|a, b| a.table.cmp(&b.table));
        plan.changed_rows.sort();

        // Validations on existing tables.
        for (oid, (name, table, valid)) in &after.constraints {
            if self.is_new(*table) {
                continue;
            }
            let Some(table_name) = self.name(*table, after) else {
                continue;
            };
            let was = before.constraints.get(oid).map(|(_, _, valid)| *valid);
            match (was, valid) {
                (None, true) => plan
                    .validations
                    .push(format!("`{name}` on `{table_name}` added valid")),
                (Some(false), true) => plan
                    .validations
                    .push(format!("`{name}` on `{table_name}` validated")),
                _ => {}
            }
        }
        for ((table, column), not_null) in &after.not_null {
            if !*not_null
                || before.not_null.get(&(*table, column.clone())) != Some(&false)
                || self.is_new(*table)
            {
                continue;
            }
            let Some(table_name) = self.name(*table, after) else {
                continue;
            };
            let proved = notices.iter().any(|n| {
                *n == Notice::NotNullProved {
                    table: table_name.clone(),
                    column: column.clone(),
                }
            });
            plan.validations.push(if proved {
                format!("`{table_name}`.`{column}` NOT NULL, proved by a valid CHECK (no scan)")
            } else {
                format!("`{table_name}`.`{column}` NOT NULL")
            });
        }
        plan.validations.sort();
    }
}

/// The table locks this backend held when `now` was read, by table oid.
fn own_locks(now: &Catalog, initial: &Catalog) -> TableLocks {
    let mut locks = Vec::new();
    for (oid, mode) in &now.locks {
        let Some(mode) = LockMode::parse(mode) else {
            continue;
        };
        // A relation dropped in this transaction (a rewrite's old storage) is known from the
        // catalog as it was before the migration; a transient one has no name and is skipped.
        let Some(relation) = now
            .relations
            .get(oid)
            .or_else(|| initial.relations.get(oid))
        else {
            continue;
        };
        if matches!(relation.kind.as_str(), "r" | "p" | "v" | "m" | "f") {
            locks.push((*oid, mode));
        }
    }
    locks.sort();
    locks
}

fn qualified(relation: &Relation) -> String {
    format!(
        "{}.{}",
        quote_ident(&relation.schema),
        quote_ident(&relation.name)
    )
}

/// Row counts of every table, by oid, in one query.
fn count_rows(client: &mut Client, catalog: &Catalog) -> Result<BTreeMap<u32, i64>> {
    let parts: Vec<String> = catalog
        .tables()
        .into_iter()
        .map(|oid| {
            format!(
                "SELECT {oid}::oid, count(*) FROM {}",
                qualified(&catalog.relations[&oid])
            )
        })
        .collect();
    if parts.is_empty() {
        return Ok(BTreeMap::new());
    }
    Ok(client
        .query(&parts.join(" UNION ALL "), &[])
        .context("cannot count the rows of the shadow's tables")?
        .iter()
        .map(|row| (row.get::<_, u32>(0), row.get::<_, i64>(1)))
        .collect())
}

/// Empties every table of the shadow (in one committed transaction), so a migration that
/// the sample rows make fail can be applied, as it would be on empty tables. The next
/// observation fills them again.
pub(crate) fn empty_tables(client: &mut Client, queries: &Queries) -> Result<()> {
    let catalog = Catalog::read(client, queries, &[])?;
    let tables: Vec<String> = catalog
        .tables()
        .into_iter()
        .map(|oid| qualified(&catalog.relations[&oid]))
        .collect();
    if tables.is_empty() {
        return Ok(());
    }
    client
        .batch_execute(&format!("TRUNCATE {} CASCADE", tables.join(", ")))
        .context("cannot empty the shadow's tables")
}

/// The shadow's tables, by oid.
pub(crate) fn table_oids(client: &mut Client, queries: &Queries) -> Result<BTreeSet<u32>> {
    Ok(Catalog::read(client, queries, &[])?
        .tables()
        .into_iter()
        .collect())
}

/// What `observe` needs besides the migration.
pub(crate) struct Observation<'a> {
    pub shadow: &'a Shadow,
    pub database: &'a str,
    pub notices: &'a Notices,
    pub timezone: Option<&'a str>,
    /// Give every empty table sample rows first.
    pub sample_rows: bool,
    /// Which tables count as existing, and production's sizes.
    pub baseline: &'a Baseline,
    /// The catalog queries, prepared on `client`.
    pub queries: &'a Queries,
}

/// Sets the observing session up again: a migration may change any session setting.
pub(crate) fn reset_session(client: &mut Client, timezone: Option<&str>) -> Result<()> {
    client
        .batch_execute("RESET ALL")
        .context("cannot reset the observing session")?;
    // English messages, whatever the server's locale (a superuser setting: a shadow server
    // where we are not superuser keeps its own, and `lc_messages` there should be C).
    let _ = client.batch_execute("SET lc_messages = 'C'");
    if let Some(timezone) = timezone {
        // A type change to or from timestamptz rewrites, or not, depending on the TimeZone.
        client
            .execute("SELECT set_config('TimeZone', $1, false)", &[&timezone])
            .context("cannot set the shadow session's TimeZone")?;
    }
    Ok(())
}

/// Observes `migration` on the shadow database `client` is connected to (the schema just
/// before it). A migration that succeeds is committed there, so the next one sees its schema;
/// one that fails is rolled back (`failure` says where).
pub(crate) fn observe(
    client: &mut Client,
    how: &Observation,
    migration: &Migration,
    file: String,
) -> Result<MigrationPlan> {
    let started = Instant::now();
    reset_session(client, how.timezone)?;
    let mut initial = Catalog::read(client, how.queries, &[])?;
    let mut counts = count_rows(client, &initial)?;
    let mut notes = Vec::new();
    if how.sample_rows && counts.values().any(|rows| *rows == 0) {
        let filled = counts
            .iter()
            .filter(|(_, rows)| **rows > 0)
            .map(|(oid, _)| *oid)
            .collect();
        notes = sample::fill(client, &filled)?;
        initial = Catalog::read(client, how.queries, &[])?;
        counts = count_rows(client, &initial)?;
    }
    let mut existing = BTreeSet::new();
    let mut rows_before = BTreeMap::new();
    let mut sizes = BTreeMap::new();
    for (oid, rows) in &counts {
        let relation = &initial.relations[oid];
        if !how.baseline.is_old(*oid, &relation.schema, &relation.name) {
            continue;
        }
        existing.insert(*oid);
        rows_before.insert(relation.name.clone(), *rows);
        if let Some(size) = how.baseline.size(&relation.schema, &relation.name) {
            sizes.insert(relation.name.clone(), size);
        }
    }
    client
        .batch_execute(OBSERVER_SETTINGS_SQL)
        .context("cannot set up the observing session")?;
    how.notices
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();

    let old: Vec<u32> = existing.iter().copied().collect();
    let statements = statements::split(&migration.script);
    let mut observer = Observer {
        initial: initial.clone(),
        existing,
        held: BTreeMap::new(),
        notices: how.notices,
    };
    let mut plan = MigrationPlan {
        name: migration.name.clone(),
        file,
        mode: Mode::Transaction,
        statements: Vec::new(),
        failure: None,
        sample_failure: None,
        applied: true,
        unreached: Vec::new(),
        rows_before,
        sizes,
        notes: Vec::new(),
        duration: Duration::ZERO,
    };
    let single = statements.len() == 1;
    client.batch_execute("BEGIN").context("cannot begin")?;
    let mut in_transaction = true;
    let mut before = Catalog::read(client, how.queries, &old)?;
    for statement in &statements {
        let keyword = statement.keyword();
        let mut statement_plan = StatementPlan::new(statement);
        if in_transaction && matches!(keyword.as_str(), "BEGIN" | "START") {
            statement_plan.note = Some("already inside the migration's transaction".into());
            plan.statements.push(statement_plan);
            continue;
        }
        if !in_transaction {
            client.batch_execute("BEGIN").context("cannot begin")?;
            in_transaction = true;
            observer.held.clear();
            before = Catalog::read(client, how.queries, &old)?;
        }
        observer.take_notices();
        match client.batch_execute(&statement.sql) {
            Err(error)
                if single && matches!(error.code().map(|c| c.code()), Some("25001" | "2D000")) =>
            {
                // It cannot run in a transaction: deploy runs it on its own.
                client
                    .batch_execute("ROLLBACK")
                    .context("cannot roll back")?;
                in_transaction = false;
                plan.mode = Mode::OnItsOwn;
                observer.take_notices();
                let before = Catalog::read(client, how.queries, &old)?;
                let (outcome, locks) =
                    run_on_its_own(how.shadow, how.database, client, &statement.sql, &before)?;
                if let Err(error) = outcome {
                    plan.failure = Some(failure(statement, &error));
                    plan.statements.push(statement_plan);
                    break;
                }
                client.batch_execute(OBSERVER_SETTINGS_SQL)?;
                let after = Catalog::read(client, how.queries, &old)?;
                let notices = observer.take_notices();
                match &locks {
                    Some(locks) => {
                        observer.compare(&mut statement_plan, &before, &after, &notices, locks)
                    }
                    None => {
                        observer.compare(&mut statement_plan, &before, &after, &notices, &[]);
                        notes.push(format!(
                            "line {}: it commits by itself and waited for nobody, so its locks could not be seen",
                            statement.line
                        ));
                    }
                }
                // Counters are per transaction and it ran in several: they say nothing here.
                statement_plan.changed_rows.clear();
                plan.statements.push(statement_plan);
            }
            Err(error) => {
                plan.failure = Some(failure(statement, &error));
                plan.statements.push(statement_plan);
                let _ = client.batch_execute("ROLLBACK");
                in_transaction = false;
                break;
            }
            Ok(()) => {
                if matches!(keyword.as_str(), "COMMIT" | "END" | "ROLLBACK" | "ABORT") {
                    // The migration ends its transaction itself; what follows is a new one.
                    in_transaction = false;
                    statement_plan.note =
                        Some("ends the transaction: its locks are released".into());
                    plan.statements.push(statement_plan);
                    observer.held.clear();
                    continue;
                }
                if matches!(keyword.as_str(), "SET" | "RESET" | "DO" | "SELECT" | "CALL") {
                    client
                        .batch_execute(OBSERVER_SETTINGS_SQL)
                        .context("cannot restore the observing session's settings")?;
                }
                let after = Catalog::read(client, how.queries, &old)?;
                let locks = own_locks(&after, &observer.initial);
                let notices = observer.take_notices();
                observer.compare(&mut statement_plan, &before, &after, &notices, &locks);
                plan.statements.push(statement_plan);
                before = after;
            }
        }
    }
    if in_transaction {
        // Deploy commits the script: so does the shadow, and the next migration builds on it.
        client.batch_execute("COMMIT").context("cannot commit")?;
    }
    plan.applied = plan.failure.is_none();
    if let Some(failure) = &plan.failure {
        plan.unreached = statements
            .iter()
            .map(|s| s.line)
            .filter(|line| *line > failure.line)
            .collect();
    }
    plan.notes = notes;
    plan.duration = started.elapsed();
    Ok(plan)
}

fn failure(statement: &Statement, error: &postgres::Error) -> Failure {
    match error.as_db_error() {
        Some(db) => Failure {
            line: statement.line,
            code: db.code().code().to_string(),
            message: db.message().to_string(),
            table: db.table().map(str::to_string),
        },
        None => Failure {
            line: statement.line,
            code: String::new(),
            message: db::describe_driver_error(error),
            table: None,
        },
    }
}

/// Runs a statement that cannot run in a transaction, and reads its locks while it waits for
/// a second session that holds ROW EXCLUSIVE on every table (as an app's open write
/// transaction would; `CREATE INDEX CONCURRENTLY` waits for such transactions by design). A
/// statement that never waits finishes first: its locks are then unknown (`None`).
fn run_on_its_own(
    shadow: &Shadow,
    database: &str,
    client: &mut Client,
    sql: &str,
    catalog: &Catalog,
) -> Result<(Result<(), postgres::Error>, Option<TableLocks>)> {
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .context("cannot read the observer's pid")?
        .get(0);
    let tables: Vec<String> = catalog
        .tables()
        .into_iter()
        .map(|oid| qualified(&catalog.relations[&oid]))
        .collect();
    let mut blocker = shadow.connect(database, None)?;
    let mut watcher = shadow.connect(database, None)?;
    if !tables.is_empty() {
        blocker
            .batch_execute(&format!(
                "BEGIN; LOCK TABLE {} IN ROW EXCLUSIVE MODE",
                tables.join(", ")
            ))
            .context("cannot open the app-like write transaction")?;
    }
    let mut blocker_open = !tables.is_empty();
    let outcome = std::thread::scope(|scope| -> Result<_> {
        let running = scope.spawn(|| client.batch_execute(sql));
        let mut locks = None;
        while blocker_open && !running.is_finished() {
            let waiting: bool = watcher
                .query_one(WAITING_SQL, &[&pid])
                .context("cannot read `pg_locks`")?
                .get(0);
            if waiting {
                let mut seen = Vec::new();
                for row in watcher
                    .query(LOCKS_OF_SQL, &[&pid])
                    .context("cannot read `pg_locks`")?
                {
                    if let Some(mode) = LockMode::parse(&row.get::<_, String>(1)) {
                        seen.push((row.get::<_, u32>(0), mode));
                    }
                }
                seen.sort();
                locks = Some(seen);
                blocker
                    .batch_execute("COMMIT")
                    .context("cannot end the write transaction")?;
                blocker_open = false;
                break;
            }
            // Polling a condition PostgreSQL shows (the wait), not a timer.
            std::thread::sleep(Duration::from_millis(2));
        }
        let outcome = running
            .join()
            .expect("the observed statement's thread panicked");
        Ok((outcome, locks))
    })?;
    if blocker_open {
        blocker
            .batch_execute("COMMIT")
            .context("cannot end the write transaction")?;
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_postgresql_debug_lines() {
        assert_eq!(
            parse_notice("rewriting table \"MetricDaily\""),
            Some(Notice::Rewriting("MetricDaily".into()))
        );
        assert_eq!(
            parse_notice("building index \"A_b_idx\" on table \"A\" serially"),
            Some(Notice::BuildingIndex { table: "A".into() })
        );
        assert_eq!(
            parse_notice("existing constraints on column \"MetricDaily.workspaceId\" are sufficient to prove that it does not contain nulls"),
            Some(Notice::NotNullProved { table: "MetricDaily".into(), column: "workspaceId".into() })
        );
        assert_eq!(
            parse_notice("index \"x\" can safely use deduplication"),
            None
        );
    }

    #[test]
    fn lock_modes_block_what_postgresql_says() {
        assert_eq!(LockMode::ShareUpdateExclusive.blocks(), None);
        assert_eq!(LockMode::Share.blocks(), Some("writes"));
        assert_eq!(LockMode::ShareRowExclusive.blocks(), Some("writes"));
        assert_eq!(LockMode::AccessExclusive.blocks(), Some("reads and writes"));
    }
}
