//! A throwaway PostgreSQL cluster: initdb into a temporary directory, a free port on 127.0.0.1,
//! stopped and removed afterwards. Used by `demo`, `bench` and the test harness. On request it
//! also runs a streaming standby of its own: `pg_basebackup -R` of the running primary into the
//! same directory, started as a second postmaster on another free port.
//!
//! When we run as root the server runs as the `postgres` user (PostgreSQL refuses to run as
//! root). A watchdog process (`xtask cluster-watchdog`, in a process group of its own so Ctrl-C
//! does not end it first) removes the cluster if this process dies without cleaning up.

use std::ffi::OsString;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use crate::db::{self, DatabaseUrl};
use crate::error::environment;
use crate::process;

/// The hidden command the watchdog runs as: `xtask cluster-watchdog PID START ROOT BIN_DIR [USER]`.
pub(crate) const WATCHDOG_COMMAND: &str = "cluster-watchdog";

/// The standby's name: its `cluster_name`, so `application_name` in `pg_stat_replication`, and
/// its replication slot on the primary.
pub const STANDBY_NAME: &str = "standby1";

/// What a cluster runs besides the defaults.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Start a streaming standby too (`STANDBY_NAME`), streaming by the time `start` returns.
    pub standby: bool,
    /// Extra `postgresql.conf` settings, written after the defaults, so they win.
    pub settings: Vec<(String, String)>,
    /// The WAL in this empty directory (initdb `--waldir`, a `pg_wal` symlink), in segments of
    /// 1 MB so that a small filesystem holds a few: a test fills it to make the server fail
    /// writing WAL, as a production server does when its WAL volume is full.
    pub wal_dir: Option<PathBuf>,
}

/// The standby's data directory, under the cluster's root.
const STANDBY_DIR: &str = "standby";

pub struct TempCluster {
    root: PathBuf,
    password: String,
    bin_dir: PathBuf,
    port: u16,
    /// The standby's port, when it runs one.
    standby_port: Option<u16>,
    run_as: Option<String>,
    stopped: bool,
}

impl TempCluster {
    /// Starts a new cluster watched by this very executable (`cargo xtask` itself).
    pub(crate) fn start() -> Result<TempCluster> {
        let program = std::env::current_exe().context("cannot find the xtask executable")?;
        TempCluster::start_watched_by(&program)
    }

    /// Starts a new cluster whose watchdog is `xtask_program` (the test harness, whose own
    /// executable is a test binary, passes the built `xtask`). Fails with install advice when
    /// no PostgreSQL server is found.
    pub fn start_watched_by(xtask_program: &Path) -> Result<TempCluster> {
        TempCluster::start_with(xtask_program, &ClusterOptions::default())
    }

    /// Starts a new cluster with `options` (a standby, extra settings), watched by `xtask_program`.
    pub fn start_with(xtask_program: &Path, options: &ClusterOptions) -> Result<TempCluster> {
        let sh = Shell::new()?;
        let bin_dir = find_bin_dir(&sh)?;
        let run_as = is_root(&sh).then(|| "postgres".to_string());
        let root = std::env::temp_dir().join(format!(
            "datahub-pg-{}-{}",
            std::process::id(),
            &datahub_core::password::random_token()[..12]
        ));
        std::fs::create_dir_all(&root)
            .with_context(|| format!("cannot create `{}`", root.display()))?;
        let mut cluster = TempCluster {
            password: datahub_core::password::random_token(),
            root,
            bin_dir,
            port: 0,
            standby_port: None,
            run_as,
            stopped: false,
        };
        cluster.spawn_watchdog(xtask_program)?;
        cluster.init_and_start(&sh, options)?;
        if options.standby {
            cluster.start_standby(&sh)?;
        }
        Ok(cluster)
    }

    fn init_and_start(&mut self, sh: &Shell, options: &ClusterOptions) -> Result<()> {
        if let Some(user) = &self.run_as {
            let root = &self.root;
            cmd!(sh, "chown -R {user} {root}")
                .quiet()
                .run()
                .context("cannot hand the cluster directory to the `postgres` user")?;
        }
        let data = self.root.join("data");
        let password_file = self.root.join("password");
        std::fs::write(&password_file, &self.password)
            .with_context(|| format!("cannot write `{}`", password_file.display()))?;
        let mut pwfile = OsString::from("--pwfile=");
        pwfile.push(&password_file);
        let mut wal_dir: Vec<OsString> = Vec::new();
        if let Some(dir) = &options.wal_dir {
            let mut waldir = OsString::from("--waldir=");
            waldir.push(dir);
            wal_dir = vec![waldir, "--wal-segsize=1".into()];
        }
        self.server_tool(
            sh,
            "initdb",
            &[
                wal_dir,
                vec![
                    "-D".into(),
                    data.clone().into(),
                    "-U".into(),
                    "postgres".into(),
                    // Local sockets trust the OS user; TCP asks for the password, as a real server does.
                    "--auth-local=trust".into(),
                    "--auth-host=scram-sha-256".into(),
                    pwfile,
                    "-E".into(),
                    "UTF8".into(),
                    "--locale=C".into(),
                    "--no-sync".into(),
                ],
            ]
            .concat(),
        )
        .context("initdb failed")?;
        std::fs::remove_file(&password_file).ok();
        self.port = free_port()?;
        let tls = self.make_certificate(sh);
        // Settings go into the configuration file, not through pg_ctl's `-o` (which pg_ctl hands
        // to a shell). Durability is pointless for a throwaway cluster; these make it fast.
        let mut settings = format!(
            "\n# cargo xtask: a throwaway cluster\nport = {}\nunix_socket_directories = '{}'\nlisten_addresses = '127.0.0.1'\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\nshared_buffers = 256MB\nssl = {}\n",
            self.port,
            self.root.display().to_string().replace('\'', "''"),
            if tls { "on" } else { "off" }
        );
        for (name, value) in &options.settings {
            settings.push_str(&format!("{name} = {value}\n"));
        }
        self.configure_and_start(
            sh,
            &data,
            &settings,
            "server.log",
            "the throwaway PostgreSQL",
        )?;
        Ok(())
    }

    /// Appends `settings` to the data directory's `postgresql.conf` (later lines win) and starts
    /// its postmaster, logging to `log_name` under the cluster's root; a failed start shows the
    /// log's tail.
    fn configure_and_start(
        &self,
        sh: &Shell,
        data: &Path,
        settings: &str,
        log_name: &str,
        what: &str,
    ) -> Result<()> {
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf)
            .with_context(|| format!("cannot read `{}`", conf.display()))?;
        text.push_str(settings);
        std::fs::write(&conf, text)
            .with_context(|| format!("cannot write `{}`", conf.display()))?;
        let log = self.root.join(log_name);
        let started = self.server_tool(
            sh,
            "pg_ctl",
            &[
                "-D".into(),
                data.into(),
                "-l".into(),
                log.clone().into(),
                "-w".into(),
                "-t".into(),
                "60".into(),
                "start".into(),
            ],
        );
        if let Err(error) = started {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            bail!(
                "{what} did not start ({error:#}); its log says: {}",
                tail.trim()
            );
        }
        Ok(())
    }

    /// The standby: a base backup of the running primary over its Unix socket (`local
    /// replication` is trusted, as initdb writes pg_hba.conf), with `-R` for `standby.signal` and
    /// `primary_conninfo` and a replication slot so the primary keeps the WAL it has not sent;
    /// then a second postmaster on a free port. Returns once the primary sees it streaming.
    fn start_standby(&mut self, sh: &Shell) -> Result<()> {
        let standby = self.root.join(STANDBY_DIR);
        self.server_tool(
            sh,
            "pg_basebackup",
            &[
                "-h".into(),
                self.root.clone().into(),
                "-p".into(),
                self.port.to_string().into(),
                "-U".into(),
                "postgres".into(),
                "-D".into(),
                standby.clone().into(),
                "-R".into(),
                "-X".into(),
                "stream".into(),
                "-c".into(),
                "fast".into(),
                "-C".into(),
                "-S".into(),
                STANDBY_NAME.into(),
                "--no-sync".into(),
            ],
        )
        .context("pg_basebackup of the throwaway cluster failed")?;
        let port = free_port()?;
        // The copied postgresql.conf has the primary's port; later lines win. The status
        // interval makes the standby report its replay position at least every second.
        let settings = format!(
            "\n# cargo xtask: the throwaway cluster's standby\nport = {port}\ncluster_name = '{STANDBY_NAME}'\nwal_receiver_status_interval = 1s\n"
        );
        self.configure_and_start(
            sh,
            &standby,
            &settings,
            "standby.log",
            "the throwaway PostgreSQL's standby",
        )?;
        self.standby_port = Some(port);
        let mut primary = db::Connect::connect(&self.database_url("postgres")?)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let streaming: bool = primary
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM pg_stat_replication WHERE application_name = $1 AND state = 'streaming')",
                    &[&STANDBY_NAME],
                )
                .context("cannot read `pg_stat_replication` on the throwaway cluster")?
                .get(0);
            if streaming {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                bail!(
                    "the throwaway PostgreSQL's standby did not start streaming within 60 s; see `{}`",
                    self.root.join("standby.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A self-signed certificate so clients can test `sslmode=require`; without the `openssl`
    /// command the cluster simply runs without TLS.
    fn make_certificate(&self, sh: &Shell) -> bool {
        let data = self.root.join("data");
        let _dir = sh.push_dir(&data);
        let made = cmd!(
            sh,
            "openssl req -new -x509 -days 2 -nodes -subj /CN=localhost -newkey rsa:2048 -keyout server.key -out server.crt"
        )
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_ok();
        if !made {
            return false;
        }
        if let Some(user) = &self.run_as {
            let _ = cmd!(sh, "chown {user} server.key server.crt").quiet().run();
        }
        let _ = std::fs::set_permissions(
            data.join("server.key"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        );
        true
    }

    fn server_tool(&self, sh: &Shell, tool: &str, args: &[OsString]) -> Result<()> {
        let tool = self.bin_dir.join(tool);
        let _dir = sh.push_dir(&self.root);
        let command = match &self.run_as {
            Some(user) => cmd!(sh, "runuser -u {user} -- {tool} {args...}"),
            None => cmd!(sh, "{tool} {args...}"),
        };
        let output = command.quiet().ignore_status().output()?;
        if !output.status.success() {
            bail!(
                "`{}` exited with {}: {}{}",
                tool.display(),
                output.status,
                String::from_utf8_lossy(&output.stdout).trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    fn spawn_watchdog(&self, xtask_program: &Path) -> Result<()> {
        let pid = std::process::id();
        let start = process::start_time(pid).unwrap_or(0);
        let mut args: Vec<OsString> = vec![
            WATCHDOG_COMMAND.into(),
            pid.to_string().into(),
            start.to_string().into(),
            self.root.clone().into(),
            self.bin_dir.clone().into(),
        ];
        if let Some(user) = &self.run_as {
            args.push(user.into());
        }
        process::spawn_detached(xtask_program, &args)
    }

    /// Restarts the server the way a crash and a supervisor would: an immediate stop (every
    /// session cut, no checkpoint, WAL replayed at start), then a start on the same port.
    pub fn restart(&self) -> Result<()> {
        let sh = Shell::new()?;
        let data = self.root.join("data");
        self.server_tool(
            &sh,
            "pg_ctl",
            &[
                "-D".into(),
                data.clone().into(),
                "-m".into(),
                "immediate".into(),
                "-w".into(),
                "stop".into(),
            ],
        )
        .context("cannot stop the throwaway PostgreSQL")?;
        self.server_tool(
            &sh,
            "pg_ctl",
            &[
                "-D".into(),
                data.into(),
                "-l".into(),
                self.root.join("server.log").into(),
                "-w".into(),
                "-t".into(),
                "60".into(),
                "start".into(),
            ],
        )
        .context("cannot start the throwaway PostgreSQL again")
    }

    /// The primary's server log.
    pub fn server_log(&self) -> PathBuf {
        self.root.join("server.log")
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The server's self-signed TLS certificate, when `openssl` could make one.
    pub fn certificate(&self) -> Option<PathBuf> {
        Some(self.root.join("data/server.crt")).filter(|path| path.is_file())
    }

    /// The PostgreSQL server binaries this cluster runs (`psql` is there too).
    pub(crate) fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// A superuser URL for `database` over TCP, with the password. Never print it.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgresql://postgres:{}@127.0.0.1:{}/{database}",
            self.password, self.port
        )
    }

    /// The same URL, parsed.
    pub(crate) fn database_url(&self, database: &str) -> Result<DatabaseUrl> {
        db::parse_url(&self.url(database))
    }

    /// A superuser URL for `database` on the standby (read only), when the cluster runs one.
    pub fn standby_url(&self, database: &str) -> Option<String> {
        self.standby_port.map(|port| {
            format!(
                "postgresql://postgres:{}@127.0.0.1:{port}/{database}",
                self.password
            )
        })
    }

    /// A superuser URL over the Unix socket, which trusts the local user: no password in it,
    /// so it can be shown to a person.
    pub(crate) fn socket_url(&self, database: &str) -> String {
        format!(
            "postgresql://postgres@/{database}?host={}&port={}",
            self.root.display(),
            self.port
        )
    }

    /// Leaves the cluster running after this process ends; returns the command that stops it.
    pub(crate) fn keep(mut self) -> String {
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

    /// Stops the server (a fast shutdown), keeping the cluster: `start_server` brings it back.
    pub(crate) fn stop_server(&self) -> Result<()> {
        let sh = Shell::new()?;
        let data = self.root.join("data");
        let args = [
            "-D".into(),
            data.into(),
            "-m".into(),
            "fast".into(),
            "-w".into(),
            "stop".into(),
        ];
        self.server_tool(&sh, "pg_ctl", &args)
    }

    /// Starts the server of a cluster stopped by `stop_server`, or whose postmaster gave up (a
    /// crash recovery that could not finish).
    pub fn start_server(&self) -> Result<()> {
        let sh = Shell::new()?;
        let data = self.root.join("data");
        let log = self.root.join("server.log");
        let args = [
            "-D".into(),
            data.into(),
            "-l".into(),
            log.into(),
            "-w".into(),
            "start".into(),
        ];
        self.server_tool(&sh, "pg_ctl", &args)
    }

    pub(crate) fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        if let Ok(sh) = Shell::new() {
            // The standby first: stopped after its primary, it would retry connecting.
            let standby = self.root.join(STANDBY_DIR);
            if standby.join("postgresql.conf").exists() {
                let _ = self.server_tool(
                    &sh,
                    "pg_ctl",
                    &[
                        "-D".into(),
                        standby.into(),
                        "-m".into(),
                        "immediate".into(),
                        "-w".into(),
                        "stop".into(),
                    ],
                );
            }
            let data = self.root.join("data");
            let _ = self.server_tool(
                &sh,
                "pg_ctl",
                &[
                    "-D".into(),
                    data.into(),
                    "-m".into(),
                    "immediate".into(),
                    "-w".into(),
                    "stop".into(),
                ],
            );
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `xtask cluster-watchdog PID START ROOT BIN_DIR [USER]`: waits until process PID (started at
/// START) is gone, then stops the cluster in ROOT and removes it, unless ROOT/keep exists.
pub(crate) fn watchdog(args: &[OsString]) -> i32 {
    let [pid, start, root, bin_dir, rest @ ..] = args else {
        return 2;
    };
    let (Some(pid), Some(start)) = (
        pid.to_str().and_then(|p| p.parse::<u32>().ok()),
        start.to_str().and_then(|s| s.parse::<u64>().ok()),
    ) else {
        return 2;
    };
    let root = PathBuf::from(root);
    while process::start_time(pid) == Some(start)
        || (start == 0 && process::start_time(pid).is_some())
    {
        std::thread::sleep(Duration::from_secs(1));
    }
    if root.join("keep").exists() {
        return 0;
    }
    let cluster = TempCluster {
        root,
        password: String::new(),
        bin_dir: PathBuf::from(bin_dir),
        port: 0,
        standby_port: None,
        run_as: rest.first().and_then(|u| u.to_str()).map(str::to_string),
        stopped: false,
    };
    drop(cluster);
    0
}

fn is_root(sh: &Shell) -> bool {
    cmd!(sh, "id -u")
        .quiet()
        .read()
        .map(|uid| uid.trim() == "0")
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
pub(crate) fn find_bin_dir(sh: &Shell) -> Result<PathBuf> {
    if let Ok(dir) = cmd!(sh, "pg_config --bindir")
        .quiet()
        .ignore_stderr()
        .read()
    {
        let dir = PathBuf::from(dir.trim());
        if has_server(&dir) {
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
        "no PostgreSQL server binaries (`initdb`, `pg_ctl`, `postgres`) found via `pg_config --bindir`, `/usr/lib/postgresql/*/bin` or `PATH`; install them (Debian/Ubuntu: `sudo apt-get install postgresql`) or point `DATABASE_URL` at a server you own",
    ))
}
