//! The smoke test's own user and workspace, new for every run (two runs at once never share
//! one), with 14 days of Google Ads metrics and an insight, and a second, empty workspace to
//! switch to; removed afterwards by deleting the workspaces and the user, which cascades to
//! everything the run made.

use anyhow::{Context, Result};
use postgres::Client;

/// Clicks of the 14 seeded days (50 + d for d in 0..14): the Google Ads card must show them.
pub(crate) const EXPECTED_CLICKS: i64 = 791;
pub(crate) const INSIGHT_TITLE: &str = "Smoke insight: spend steady";
/// The name of the smoke user's second workspace.
pub(crate) const SECOND_WORKSPACE: &str = "Smoke test (second)";

pub(crate) struct Fixtures {
    pub user_id: String,
    pub email: String,
    pub workspace_id: String,
    pub password: String,
}

const INSERT_USER: &str = r#"INSERT INTO "User" ("id", "email", "name", "passwordHash") VALUES ($1, $2, 'Smoke test', $3)"#;
const INSERT_WORKSPACE: &str =
    r#"INSERT INTO "Workspace" ("id", "name", "slug") VALUES ($1, $2, $1)"#;
const INSERT_MEMBER: &str = r#"INSERT INTO "WorkspaceMember" ("id", "workspaceId", "userId", "role") VALUES ($1, $1, $2, $3::text::"WorkspaceRole")"#;
const INSERT_METRICS: &str = r#"
    INSERT INTO "MetricDaily" ("id", "userId", "workspaceId", "provider", "date", "impressions", "clicks", "spend", "conversions")
    SELECT $2 || '_metric_' || d, $1, $2, 'google-ads', current_date - d, 1000 + d * 10, 50 + d, 25.5 + d, d % 4
    FROM generate_series(0, 13) d"#;
const INSERT_INSIGHT: &str = r#"
    INSERT INTO "Insight" ("id", "userId", "workspaceId", "provider", "title", "body", "severity")
    VALUES ($2 || '_insight', $1, $2, 'google-ads', $3, 'Seeded by cargo xtask smoke.', 'info')"#;

impl Fixtures {
    /// Creates the run's user (with a random password) and workspace, in one transaction.
    pub(crate) fn create(client: &mut Client) -> Result<Fixtures> {
        let run = &datahub_core::password::random_token()[..16];
        let fixtures = Fixtures {
            user_id: format!("datahub_smoke_{run}"),
            email: format!("smoke-{run}@datahub.invalid"),
            workspace_id: format!("datahub_smoke_{run}_ws"),
            password: datahub_core::password::random_token(),
        };
        let hash = datahub_core::password::hash(&fixtures.password)
            .map_err(|e| anyhow::anyhow!("cannot hash the smoke user's password: {e}"))?;
        let mut tx = client
            .transaction()
            .context("cannot start the smoke fixtures' transaction")?;
        tx.execute(INSERT_USER, &[&fixtures.user_id, &fixtures.email, &hash])
            .context("cannot create the smoke user")?;
        let second = fixtures.second_workspace_id();
        for (workspace, name, role) in [
            (&fixtures.workspace_id, "Smoke test", "OWNER"),
            (&second, SECOND_WORKSPACE, "MEMBER"),
        ] {
            tx.execute(INSERT_WORKSPACE, &[workspace, &name])
                .context("cannot create a smoke workspace")?;
            tx.execute(INSERT_MEMBER, &[workspace, &fixtures.user_id, &role])
                .context("cannot make the smoke user a member of its workspace")?;
        }
        tx.execute(INSERT_METRICS, &[&fixtures.user_id, &fixtures.workspace_id])
            .context("cannot seed the smoke workspace's metrics")?;
        tx.execute(
            INSERT_INSIGHT,
            &[&fixtures.user_id, &fixtures.workspace_id, &INSIGHT_TITLE],
        )
        .context("cannot seed the smoke workspace's insight")?;
        tx.commit().context("cannot commit the smoke fixtures")?;
        Ok(fixtures)
    }

    pub(crate) fn describe(&self) -> String {
        format!(
            "`{}` in workspace `{}` with 14 days of Google Ads metrics",
            self.email, self.workspace_id
        )
    }

    fn second_workspace_id(&self) -> String {
        format!("{}_2", self.workspace_id)
    }

    /// Everything the run made hangs off its user and workspaces: deleting them cascades.
    pub(crate) fn remove(&self, client: &mut Client) -> Result<()> {
        client
            .execute(
                r#"DELETE FROM "Workspace" WHERE "id" = ANY($1)"#,
                &[&vec![self.workspace_id.clone(), self.second_workspace_id()]],
            )
            .context("cannot remove the smoke workspaces")?;
        client
            .execute(r#"DELETE FROM "User" WHERE "id" = $1"#, &[&self.user_id])
            .context("cannot remove the smoke user")?;
        Ok(())
    }
}
