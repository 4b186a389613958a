//! `cargo run -p app -- [--listen ADDR]`: the Data Hub web app. The database is `DATABASE_URL`.

use std::process::ExitCode;

use anyhow::{Context, Result};

const HELP: &str = "\
app: the Data Hub web app

USAGE:
    app [--listen ADDR] [--public-url URL]

    --listen ADDR       where to listen (default: LISTEN_ADDR or 127.0.0.1:3000)
    --public-url URL    the address browsers use (default: DATAHUB_PUBLIC_URL); with https://
                        the session cookie is Secure and HSTS is sent
    DATABASE_URL        the database (Prisma-style URLs work, including ?schema= and sslmode)
    DATAHUB_PSEUDONYM_KEY    hex key naming accounts in the log (`openssl rand -hex 32`)
    DATAHUB_TRUSTED_PROXIES  proxies whose X-Forwarded-For names the client (comma-separated)
    DATAHUB_CURRENCY         the currency spend is reported in (ISO 4217 code, default USD)
";

struct Options {
    listen: String,
    public_url: Option<String>,
    database_url: String,
}

/// `None` when the help was printed.
fn options() -> Result<Option<Options>> {
    let mut args = pico_args::Arguments::from_env();
    if args.contains(["-h", "--help"]) {
        print!("{HELP}");
        return Ok(None);
    }
    let listen = args
        .opt_value_from_str::<_, String>("--listen")
        .map_err(|e| anyhow::anyhow!("{e}; see `app --help`"))?
        .or_else(|| std::env::var("LISTEN_ADDR").ok())
        .unwrap_or_else(|| "127.0.0.1:3000".into());
    let public_url = args
        .opt_value_from_str::<_, String>("--public-url")
        .map_err(|e| anyhow::anyhow!("{e}; see `app --help`"))?;
    if let Some(extra) = args.finish().first() {
        anyhow::bail!(
            "unexpected argument `{}`; see `app --help`",
            extra.to_string_lossy()
        );
    }
    let database_url = std::env::var("DATABASE_URL").context(
        "no database URL: set `DATABASE_URL` (e.g. postgresql://USER:PASSWORD@localhost:5432/datahub)",
    )?;
    Ok(Some(Options {
        listen,
        public_url,
        database_url,
    }))
}

fn main() -> ExitCode {
    unblock_shutdown_signals();
    // The runtime's threads are made after the mask is cleared, so any of them can take a signal.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run())
}

/// A signal mask is inherited through fork and exec: a parent that blocks SIGINT and SIGTERM to
/// handle them itself (as `cargo xtask` does, and test harnesses built on it) would leave the
/// app deaf to both, so it never drained on shutdown. They are unblocked before anything else.
fn unblock_shutdown_signals() {
    // SAFETY: a sigset_t is plain data, initialised by sigemptyset before use; pthread_sigmask
    // changes only this thread's mask, which threads made afterwards inherit.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}

async fn run() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("APP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(false)
        .init();
    match serve().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve() -> Result<()> {
    let Some(options) = options()? else {
        return Ok(());
    };
    let config = app::Config::from_env(options.public_url)?;
    let db = app::Db::new(&options.database_url)?;
    let listener = tokio::net::TcpListener::bind(&options.listen)
        .await
        .with_context(|| format!("cannot listen on `{}`", options.listen))?;
    tracing::info!(address = %listener.local_addr()?, "Data Hub listening");
    app::serve(listener, app::AppState::new(db, config)).await
}
