//! The app the smoke test starts: the binary, on a free local port, against the same database
//! URL, with its log collected; stopped when the test ends.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::http::Http;
use crate::db::DatabaseUrl;
use crate::process::Running;

pub(crate) struct App {
    pub http: Http,
    process: Running,
}

impl App {
    /// Starts `bin` and waits (at most 30 s) until `/healthz` answers 200.
    pub(crate) fn start(bin: &Path, url: &DatabaseUrl) -> Result<App> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .context("cannot find a free local port for the app")?
            .port();
        let address = format!("127.0.0.1:{port}");
        let mut process = Running::spawn(
            bin,
            &["--listen", address.as_str()],
            &[("DATABASE_URL", url.secret()), ("APP_LOG", "info")],
        )?;
        let http = Http::new(&format!("http://{address}"))?.with_timeout(Duration::from_secs(2));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = http.get("/healthz", None) {
                if response.status == 200 {
                    break;
                }
            }
            if let Some(status) = process.exited() {
                bail!(
                    "the app `{}` exited ({status}) before it answered /healthz; its log: {}",
                    bin.display(),
                    process.log().join(" | ")
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "the app did not answer /healthz within 30 s; its log: {}",
                    process.log().join(" | ")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(App {
            http: http.with_timeout(Duration::from_secs(15)),
            process,
        })
    }

    /// Stops the app and returns its whole log.
    pub(crate) fn stop(self) -> Vec<String> {
        self.process.stop()
    }
}
