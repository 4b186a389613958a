//! A throwaway PostgreSQL cluster: initdb into a temporary directory, a free port on 127.0.0.1,
//! stopped and removed afterwards. Used by `demo`, `bench` and the test harness.
//!
//! When we run as root the server runs as the `postgres` user (PostgreSQL refuses to run as
//! root). A watchdog process, in its own process group so Ctrl-C does not kill it first, removes
//! the cluster if this process dies without cleaning up.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::error::environment;

pub struct TempCluster {
    root: PathBuf,
    password: String,
    bin_dir: PathBuf,
    port: u16,
    run_as: Option<String>,
    stopped: bool,
}

impl TempCluster {
    /// Starts a new cluster; fails with install advice when no PostgreSQL server is found.
    pub fn start() -> Result<TempCluster> {
        let bin_dir = find_bin_dir()?;
        let run_as = if is_root() {
            Some("postgres".to_string())
        } else {
            None
        };
        let root = std::env::temp_dir().join(format!(
            "datahub-pg-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&root)
            .with_context(|| format!("cannot create `{}`", root.display()))?;
        let mut cluster = TempCluster {
            password: format!("pw{}{}", std::process::id(), uuid::Uuid::new_v4().simple()),
            root,
            bin_dir,
            port: 0,
            run_as,
            stopped: false,
        };
        cluster.init_and_start()?;
        Ok(cluster)
    }

    fn init_and_start(&mut self) -> Result<()> {
        if let Some(user) = &self.run_as {
            run(Command::new("chown").arg("-R").arg(user).arg(&self.root))
                .context("cannot hand the cluster directory to the `postgres` user")?;
        }
        let data = self.root.join("data");
        let password_file = self.root.join("password");
        std::fs::write(&password_file, &self.password)?;
        let initdb = self.bin_dir.join("initdb");
        self.run_server_tool(
            &initdb,
            &[
                "-D",
                &data.to_string_lossy(),
                "-U",
                "postgres",
                // Local sockets trust the OS user; TCP asks for the password, as a real server does.
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                &format!("--pwfile={}", password_file.display()),
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )
        .context("initdb failed")?;
        self.port = free_port()?;
        let tls = self.make_certificate();
        // Durability is pointless for a throwaway cluster; these settings make it fast.
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 -c shared_buffers=256MB",
            self.port,
            self.root.display()
        ) + tls;
        let pg_ctl = self.bin_dir.join("pg_ctl");
        let log = self.root.join("server.log");
        self.run_server_tool(
            &pg_ctl,
            &[
                "-D",
                &data.to_string_lossy(),
                "-l",
                &log.to_string_lossy(),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
        .with_context(|| {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            format!("the throwaway PostgreSQL did not start; its log says:\n{tail}")
        })?;
        self.spawn_watchdog();
        Ok(())
    }

    /// A self-signed certificate so clients can test `sslmode=require`; without the `openssl`
    /// command the cluster simply runs without TLS.
    fn make_certificate(&self) -> &'static str {
        let made = Command::new("openssl")
            .args([
                "req",
                "-new",
                "-x509",
                "-days",
                "2",
                "-nodes",
                "-subj",
                "/CN=localhost",
            ])
            .args([
                "-newkey",
                "rsa:2048",
                "-keyout",
                "server.key",
                "-out",
                "server.crt",
            ])
            .current_dir(self.root.join("data"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !made {
            return "";
        }
        if let Some(user) = &self.run_as {
            let _ = run(Command::new("chown")
                .arg(user)
                .arg(self.root.join("data/server.key"))
                .arg(self.root.join("data/server.crt")));
        }
        let _ = std::fs::set_permissions(
            self.root.join("data/server.key"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        );
        " -c ssl=on"
    }

    fn run_server_tool(&self, tool: &Path, args: &[&str]) -> Result<()> {
        let mut command = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.arg("-u").arg(user).arg("--").arg(tool);
                c
            }
            None => Command::new(tool),
        };
        command.args(args).current_dir(&self.root);
        run(&mut command)
    }

    /// Removes the cluster when this process is gone, however it ended.
    fn spawn_watchdog(&self) {
        use std::os::unix::process::CommandExt;
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             if [ -f '{root}/keep' ]; then exit 0; fi; \
             if [ -f '{data}/postmaster.pid' ]; then kill -QUIT $(head -1 '{data}/postmaster.pid') 2>/dev/null; sleep 1; fi; \
             rm -rf '{root}'",
            pid = std::process::id(),
            data = self.root.join("data").display(),
            root = self.root.display()
        );
        let _ = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn();
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A superuser URL for `database` over TCP, with the password. Never print it.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgresql://postgres:{}@127.0.0.1:{}/{database}",
            self.password, self.port
        )
    }

    /// A superuser URL over the Unix socket, which trusts the local user: no password in it,
    /// so it can be shown to a person.
    pub fn socket_url(&self, database: &str) -> String {
        format!(
            "postgresql://postgres@/{database}?host={}&port={}",
            self.root.display(),
            self.port
        )
    }

    /// Leaves the cluster running after this process ends; returns the command that stops it.
    pub fn keep(mut self) -> String {
        let _ = std::fs::write(self.root.join("keep"), b"");
        self.stopped = true;
        let pg_ctl = self.bin_dir.join("pg_ctl");
        let data = self.root.join("data");
        let run_as = match &self.run_as {
            Some(user) => format!("runuser -u {user} -- "),
            None => String::new(),
        };
        format!(
            "{run_as}{} -D {} stop && rm -rf {}",
            pg_ctl.display(),
            data.display(),
            self.root.display()
        )
    }

    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let data = self.root.join("data");
        let pg_ctl = self.bin_dir.join("pg_ctl");
        let _ = self.run_server_tool(
            &pg_ctl,
            &[
                "-D",
                &data.to_string_lossy(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(command: &mut Command) -> Result<()> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{:?}`", command.get_program()))?;
    if !output.status.success() {
        bail!(
            "`{}` exited with {}: {}{}",
            command.get_program().to_string_lossy(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot find a free local port")?;
    Ok(listener.local_addr()?.port())
}

fn has_server(dir: &Path) -> bool {
    dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() && dir.join("postgres").is_file()
}

/// The PostgreSQL server binaries: `pg_config --bindir`, then Debian's
/// `/usr/lib/postgresql/<version>/bin` (newest first), then `PATH`.
pub fn find_bin_dir() -> Result<PathBuf> {
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if output.status.success() && has_server(&dir) {
            return Ok(dir);
        }
    }
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<(u32, PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
                Some((version, e.path().join("bin")))
            })
            .filter(|(_, dir)| has_server(dir))
            .collect();
        versions.sort();
        if let Some((_, dir)) = versions.pop() {
            return Ok(dir);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if has_server(&dir) {
                return Ok(dir);
            }
        }
    }
    Err(environment(
        "no PostgreSQL server binaries (initdb, pg_ctl, postgres) found via `pg_config --bindir`, /usr/lib/postgresql/*/bin or PATH; install them (Debian/Ubuntu: `sudo apt-get install postgresql`) or set DATABASE_URL to a server you own",
    ))
}
