//! A real PgBouncer (Debian's `pgbouncer` package, installed by `.ci/run`) in transaction mode,
//! on a free loopback port in front of the harness's server, as managed poolers run it in front
//! of production. Clients are not asked for a password (`auth_type = any`): the pooler logs in
//! to the server with the server URL's own user and password. Stopped when dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use xtask::db::DatabaseUrl;

/// Where Debian installs it.
const PGBOUNCER: &str = "/usr/sbin/pgbouncer";

pub struct PgBouncer {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl PgBouncer {
    /// Starts PgBouncer in transaction mode in front of the server `server_url` names (its host,
    /// port, user and password; every database), ready to accept clients when this returns.
    pub fn transaction_mode(server_url: &str) -> PgBouncer {
        let server =
            DatabaseUrl::parse(server_url, "datahub-tests").expect("the server URL parses");
        let config = server.config();
        let host = match config.get_hosts().first() {
            Some(postgres::config::Host::Tcp(name)) => name.clone(),
            _ => panic!("PgBouncer is put in front of a server reached over TCP"),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let user = config.get_user().expect("the server URL names a user");
        let password = config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        let listen_port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let dir = std::env::temp_dir().join(format!(
            "datahub-pgbouncer-{}-{listen_port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("create the PgBouncer directory");
        let ini = dir.join("pgbouncer.ini");
        std::fs::write(
            &ini,
            format!(
                "[databases]\n* = host={host} port={port} user={user} password={password}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {listen_port}\nunix_socket_dir =\nauth_type = any\npool_mode = transaction\ndefault_pool_size = 4\nmax_client_conn = 100\nignore_startup_parameters = extra_float_digits,options\nlogfile = {log}\nadmin_users = {user}\n",
                log = dir.join("pgbouncer.log").display()
            ),
        )
        .expect("write pgbouncer.ini");
        let root = is_root();
        if root {
            // PgBouncer refuses to run as root: it runs as the server's OS user.
            let _ = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(&dir)
                .status();
        }
        let mut command = Command::new(PGBOUNCER);
        if root {
            command.args(["-u", "postgres"]);
        }
        let child = command
            .arg(&ini)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start `{PGBOUNCER}` (Debian's `pgbouncer` package; `.ci/run` installs it): {e}")
            });
        let mut bouncer = PgBouncer {
            child,
            dir,
            port: listen_port,
        };
        bouncer.wait_until_listening();
        bouncer
    }

    /// Waits until the port accepts connections (the process answering, not a time).
    fn wait_until_listening(&mut self) {
        let started = Instant::now();
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "PgBouncer exited ({status}): {}",
                    std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "PgBouncer did not listen within 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `direct_url` (a harness database URL) with its host and port replaced by the pooler's.
    pub fn url_for(&self, direct_url: &str) -> String {
        let (scheme, rest) = direct_url.split_once("://").expect("a URL");
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let userinfo = authority
            .rsplit_once('@')
            .map(|(userinfo, _)| format!("{userinfo}@"))
            .unwrap_or_default();
        format!("{scheme}://{userinfo}127.0.0.1:{}/{path}", self.port)
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
