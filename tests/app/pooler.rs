//! Behind a transaction-mode pooler (real PgBouncer, Debian's package; `.ci/run` installs it,
//! this test starts it on a loopback port in front of the test database) with Prisma's
//! `?pgbouncer=true`: two apps on two schemas of one database, and a rogue client that leaves
//! `SET search_path` on the pooler's one shared server session, take turns on that session.
//! Every page shows its own schema's rows (the schema is set in each transaction), and no
//! named prepared statement ever collides (statements are unnamed).

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{count, start_on, two_workspaces, Browser, ALICE};

struct PgBouncer {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `postgresql://USER:PASSWORD@HOST:PORT/DB?…` → (user, password, port, db).
fn parts(url: &str) -> (String, String, u16, String) {
    let rest = url.split_once("://").unwrap().1;
    let (credentials, rest) = rest.rsplit_once('@').unwrap();
    let (user, password) = credentials.split_once(':').unwrap();
    let (authority, rest) = rest.split_once('/').unwrap();
    let port = authority.rsplit_once(':').unwrap().1.parse().unwrap();
    let database = rest.split('?').next().unwrap();
    (user.into(), password.into(), port, database.into())
}

impl PgBouncer {
    /// PgBouncer in transaction mode with one server connection for everyone, in front of
    /// the server of `url`; as the `postgres` user when running as root (it refuses root).
    fn start(url: &str) -> PgBouncer {
        let (user, password, server_port, _) = parts(url);
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let users = dir.path().join("users.txt");
        std::fs::write(&users, format!("\"{user}\" \"{password}\"\n")).unwrap();
        let config = dir.path().join("pgbouncer.ini");
        std::fs::write(
            &config,
            format!(
                "[databases]\n* = host=127.0.0.1 port={server_port}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\nauth_type = scram-sha-256\nauth_file = {}\npool_mode = transaction\ndefault_pool_size = 1\nmax_client_conn = 100\nignore_startup_parameters = extra_float_digits,options\n",
                users.display()
            ),
        )
        .unwrap();
        let program = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .into_iter()
            .find(|path| std::path::Path::new(path).is_file())
            .expect(
                "PgBouncer is not installed: `sudo apt-get install pgbouncer` (`.ci/run` does)",
            );
        let mut command = Command::new(program);
        command
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: geteuid and getpwnam only read; the name is a NUL-terminated literal.
        let postgres = unsafe {
            (libc::geteuid() == 0)
                .then(|| libc::getpwnam(c"postgres".as_ptr()))
                .filter(|entry| !entry.is_null())
                .map(|entry| ((*entry).pw_uid, (*entry).pw_gid))
        };
        if let Some((uid, gid)) = postgres {
            use std::os::unix::fs::PermissionsExt;
            for path in [dir.path(), users.as_path(), config.as_path()] {
                let mode = if path.is_dir() { 0o755 } else { 0o644 };
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
            }
            command.uid(uid).gid(gid);
        }
        let mut child = command.spawn().expect("start pgbouncer");
        for _ in 0..1000 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return PgBouncer {
                    port,
                    child,
                    _dir: dir,
                };
            }
            assert!(child.try_wait().unwrap().is_none(), "pgbouncer exited");
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("pgbouncer never listened");
    }

    /// `url` pointed at the pooler, with `extra` query parameters.
    fn url(&self, url: &str, extra: &str) -> String {
        let (user, password, _, database) = parts(url);
        format!(
            "postgresql://{user}:{password}@127.0.0.1:{}/{database}?{extra}",
            self.port
        )
    }
}

/// A second schema, `tenant`, with the same tables and rows, its workspaces renamed.
const TENANT_SQL: &str = r#"
    CREATE SCHEMA tenant;
    DO $$
    DECLARE t text;
    BEGIN
      FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename NOT LIKE '\_prisma%' LOOP
        EXECUTE format('CREATE TABLE tenant.%I (LIKE public.%I INCLUDING ALL)', t, t);
        EXECUTE format('INSERT INTO tenant.%I SELECT * FROM public.%I', t, t);
      END LOOP;
    END $$;
    UPDATE tenant."Workspace" SET "name" = 'TENANT-' || "name";"#;

#[test]
fn behind_pgbouncer_each_schema_reads_only_its_own_rows() {
    let db = two_workspaces();
    db.client().batch_execute(TENANT_SQL).unwrap();
    let pooler = PgBouncer::start(db.url());
    let public = start_on(
        &pooler.url(db.url(), "pgbouncer=true&connection_limit=2"),
        app::Config::default(),
        app::Limits::default(),
    );
    let tenant = start_on(
        &pooler.url(db.url(), "schema=tenant&pgbouncer=true&connection_limit=2"),
        app::Config::default(),
        app::Limits::default(),
    );
    // A client of the same pool that leaves session state behind on the shared server session.
    let mut rogue = postgres::Client::connect(&pooler.url(db.url(), ""), postgres::NoTls).unwrap();
    let alice_public = Browser::signed_in(&public, ALICE);
    let alice_tenant = Browser::signed_in(&tenant, ALICE);
    for round in 0..20 {
        let schema = if round % 2 == 0 { "tenant" } else { "public" };
        rogue
            .simple_query(&format!("SET search_path TO {schema}"))
            .unwrap();
        for (browser, own, other) in [
            (&alice_public, "Alpha Team", "TENANT-Alpha Team"),
            (&alice_tenant, "TENANT-Alpha Team", "<h1>Alpha Team"),
        ] {
            for path in ["/data", "/data/google-ads"] {
                let page = browser.get(path);
                assert_eq!(page.status, 200, "round {round} {path}: {}", page.body);
                assert!(page.body.contains(own), "round {round} {path}");
                assert!(!page.body.contains(other), "round {round} {path}: {other}");
            }
        }
    }
    // Writes land in their own schema too.
    let csrf = alice_tenant.csrf();
    let sent = alice_tenant.post("/chat", &[("csrf", &csrf), ("message", "TENANT-ONLY")]);
    assert_eq!(sent.status, 303);
    let mut client = db.client();
    for (sql, expected) in [
        (
            r#"SELECT count(*) FROM tenant."ChatMessage" WHERE "content" = 'TENANT-ONLY'"#,
            1,
        ),
        (
            r#"SELECT count(*) FROM public."ChatMessage" WHERE "content" = 'TENANT-ONLY'"#,
            0,
        ),
        // The sessions live where they were made.
        (r#"SELECT count(*) FROM tenant."Session""#, 1),
        (r#"SELECT count(*) FROM public."Session""#, 1),
    ] {
        assert_eq!(count(&mut client, sql), expected, "{sql}");
    }
}
