//! Real Prisma as a peer in the tests: the Prisma CLI 6.19.3, installed from the npm registry on
//! first use, driven against the harness's test databases.
//!
//! Prisma 7 needs a native engine binary that only Prisma's own download host serves; 6.19.3
//! runs its schema engine compiled to WebAssembly (inside the `prisma` package) through the
//! `@prisma/adapter-pg` driver adapter. `tests/prisma/` holds the configuration that makes that
//! path behave as native Prisma does (see its comments). The install goes into the cargo target
//! directory (`target/prisma-peer/<version>`), once: npm installs into a fresh directory that is
//! then renamed into place, so test binaries running at the same time never see half of it, and
//! later runs reuse it. Node.js and npm must be on the machine (`.ci/run` installs them if not).
//! Never skipped: without Prisma the cross-tool tests fail, saying why.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The pinned packages: `--save-exact` records these versions in the install's package.json.
pub const PACKAGES: [&str; 3] = ["prisma@6.19.3", "@prisma/adapter-pg@6.19.3", "pg@8.23.1"];
const INSTALL_NAME: &str = "6.19.3-adapter-pg-6.19.3-pg-8.23.1";

/// The configuration files of `tests/prisma/`, written next to `node_modules` (the config's
/// imports resolve from its own directory) on every start, so edits to them take effect.
const SUPPORT_FILES: [(&str, &str); 4] = [
    (
        "prisma.config.ts",
        include_str!("../prisma/prisma.config.ts"),
    ),
    ("schema.prisma", include_str!("../prisma/schema.prisma")),
    (
        "schema-engine-standin.js",
        include_str!("../prisma/schema-engine-standin.js"),
    ),
    ("peer.js", include_str!("../prisma/peer.js")),
];

/// The installed Prisma CLI.
pub struct Prisma {
    dir: PathBuf,
}

/// What one Prisma command printed, and its exit code (0 ok, 1 any error).
#[derive(Debug)]
pub struct PrismaOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl PrismaOutput {
    /// stdout and stderr, for assertion messages and searching.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Waits for a spawned Prisma command (see [`Prisma::spawn_migrate`]), killing it after
    /// `limit` and failing with `hang`: a guard that turns a hang into a failure, not a
    /// measurement.
    pub fn wait(mut child: std::process::Child, limit: Duration, hang: &str) -> PrismaOutput {
        use std::io::Read;
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let (mut stdout, mut stderr) = (String::new(), String::new());
                if let Some(mut out) = child.stdout.take() {
                    out.read_to_string(&mut stdout).unwrap();
                }
                if let Some(mut err) = child.stderr.take() {
                    err.read_to_string(&mut stderr).unwrap();
                }
                return PrismaOutput {
                    code: status.code(),
                    stdout,
                    stderr,
                };
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                panic!("{hang}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Prisma, installed on first use (about 15 s and 100 MB, once per target directory).
pub fn prisma() -> &'static Prisma {
    static PRISMA: OnceLock<Prisma> = OnceLock::new();
    PRISMA.get_or_init(|| {
        let dir = target_dir().join("prisma-peer").join(INSTALL_NAME);
        if !dir.join("node_modules/prisma/build/index.js").exists() {
            install(&dir);
        }
        for (name, text) in SUPPORT_FILES {
            write_if_changed(&dir.join(name), text);
        }
        std::fs::set_permissions(
            dir.join("schema-engine-standin.js"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("make the schema-engine stand-in executable");
        Prisma { dir }
    })
}

/// target/, from this test binary's path: target/<profile>/deps/<binary>.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.ancestors()
        .nth(3)
        .expect("test binaries live in target/<profile>/deps")
        .to_path_buf()
}

fn install(dir: &Path) {
    let parent = dir.parent().expect("install dir has a parent");
    std::fs::create_dir_all(parent).expect("create target/prisma-peer");
    let staging = parent.join(format!(".installing-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).expect("create the staging directory");
    std::fs::write(
        staging.join("package.json"),
        "{ \"name\": \"datahub-prisma-peer\", \"private\": true }\n",
    )
    .expect("write package.json");
    // --ignore-scripts: Prisma's install scripts would download native engines, which only
    // Prisma's own host serves; the wasm engine needs none of them.
    let output = Command::new("npm")
        .args([
            "install",
            "--ignore-scripts",
            "--save-exact",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
        ])
        .args(PACKAGES)
        .current_dir(&staging)
        .output()
        .unwrap_or_else(|error| {
            panic!("cannot run `npm` to install Prisma for the cross-tool tests ({error}); install Node.js and npm (`apt-get install nodejs npm`)")
        });
    assert!(
        output.status.success(),
        "`npm install {}` failed in `{}`: {}",
        PACKAGES.join(" "),
        staging.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    // Another test binary may have finished first: then its copy stays and this one goes.
    if std::fs::rename(&staging, dir).is_err() {
        let _ = std::fs::remove_dir_all(&staging);
        assert!(
            dir.join("node_modules/prisma/build/index.js").exists(),
            "cannot move the Prisma install into `{}`",
            dir.display()
        );
    }
}

/// Writes through a temporary file and a rename, so a concurrent reader sees one whole version.
fn write_if_changed(path: &Path, text: &str) {
    if std::fs::read_to_string(path).is_ok_and(|current| current == text) {
        return;
    }
    let temporary = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&temporary, text).expect("write a Prisma support file");
    std::fs::rename(&temporary, path).expect("move a Prisma support file into place");
}

impl Prisma {
    /// `prisma migrate <args>` against `database_url` with the migrations of `migrations_dir`.
    pub fn migrate(
        &self,
        migrations_dir: &Path,
        database_url: &str,
        args: &[&str],
    ) -> PrismaOutput {
        self.migrate_in_schema(migrations_dir, database_url, None, args)
    }

    /// The same in a schema other than `public` (adapter-pg ignores the URL's `?schema=`).
    pub fn migrate_in_schema(
        &self,
        migrations_dir: &Path,
        database_url: &str,
        schema: Option<&str>,
        args: &[&str],
    ) -> PrismaOutput {
        let output = self
            .command(migrations_dir, database_url, schema, args)
            .output()
            .expect("run node with the Prisma CLI");
        PrismaOutput {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// `prisma migrate <args>` started in the background, for a test that holds a lock while
    /// Prisma runs; `wait_with_output` collects it.
    pub fn spawn_migrate(
        &self,
        migrations_dir: &Path,
        database_url: &str,
        args: &[&str],
    ) -> std::process::Child {
        self.command(migrations_dir, database_url, None, args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start node with the Prisma CLI")
    }

    fn command(
        &self,
        migrations_dir: &Path,
        database_url: &str,
        schema: Option<&str>,
        args: &[&str],
    ) -> Command {
        let migrations_dir = migrations_dir
            .canonicalize()
            .expect("the migrations folder exists");
        let mut command = Command::new("node");
        command
            .arg(self.dir.join("node_modules/prisma/build/index.js"))
            .arg("migrate")
            .args(args)
            .arg("--config")
            .arg(self.dir.join("prisma.config.ts"))
            .current_dir(migrations_dir.parent().unwrap_or(&migrations_dir));
        self.environment(&mut command);
        command
            .env("DATABASE_URL", database_url)
            .env("PRISMA_MIGRATIONS_DIR", &migrations_dir)
            .env(
                "PRISMA_SCHEMA_ENGINE_BINARY",
                self.dir.join("schema-engine-standin.js"),
            );
        if let Some(schema) = schema {
            command.env("DATABASE_SCHEMA", schema);
        }
        command
    }

    /// The migration-name part `prisma migrate dev --name NAME` gives each of `names`.
    pub fn slugs(&self, names: &[&str]) -> Vec<String> {
        self.peer("slug", names)
    }

    /// `names` in the order Prisma lists migration folders.
    pub fn sorted(&self, names: &[&str]) -> Vec<String> {
        self.peer("sort", names)
    }

    fn peer(&self, command: &str, names: &[&str]) -> Vec<String> {
        let mut node = Command::new("node");
        node.arg(self.dir.join("peer.js"))
            .arg(command)
            .arg(serde_json::to_string(names).expect("names as JSON"))
            .current_dir(&self.dir);
        self.environment(&mut node);
        let output = node.output().expect("run node peer.js");
        assert!(
            output.status.success(),
            "peer.js {command}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("peer.js prints a JSON array")
    }

    /// A clean environment: what node needs, Prisma's quiet switches, and a fixed locale (the
    /// folder order is the locale's collation).
    fn environment(&self, command: &mut Command) {
        command.env_clear();
        for keep in ["PATH", "HOME"] {
            if let Some(value) = std::env::var_os(keep) {
                command.env(keep, value);
            }
        }
        command
            .env("LANG", "C.UTF-8")
            .env("PRISMA_HIDE_UPDATE_MESSAGE", "1")
            .env("CHECKPOINT_DISABLE", "1")
            .env("PRISMA_TELEMETRY_DISABLED", "1")
            .env("NO_COLOR", "1")
            .env("CI", "1");
    }
}
