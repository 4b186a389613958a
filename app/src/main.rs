//! `cargo run -p app -- [--listen ADDR]`: the Data Hub web app. The database is `DATABASE_URL`.

use anyhow::{bail, Context, Result};

const HELP: &str = "\
app: the Data Hub web app

USAGE:
    app [--listen ADDR]

    --listen ADDR   where to listen (default: LISTEN_ADDR or 127.0.0.1:3000)
    DATABASE_URL    the database (Prisma-style URLs work, including ?schema=)
";

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("APP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(false)
        .init();
    let mut args = std::env::args().skip(1);
    let mut listen = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().context("`--listen` needs an address")?,
            "-h" | "--help" => {
                print!("{HELP}");
                return Ok(());
            }
            other => bail!("unexpected argument `{other}`; see `app --help`"),
        }
    }
    let url = std::env::var("DATABASE_URL")
        .context("no database URL: set `DATABASE_URL` (e.g. postgresql://USER:PASSWORD@localhost:5432/datahub)")?;
    let pool = app::db::pool(&url)?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on `{listen}`"))?;
    tracing::info!(address = %listener.local_addr()?, "Data Hub listening");
    app::serve(listener, app::AppState::new(pool)).await
}
