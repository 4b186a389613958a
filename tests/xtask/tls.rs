//! TLS as libpq: `sslmode=require` with a root certificate given (`sslrootcert`) checks the
//! server's certificate chain against it, as `verify-ca` does; without one it only encrypts.
//! Against the harness's self-signed server, with its own certificate and with another.

use std::process::Command;

use datahub_tests::harness::{run_xtask, server_certificate, text, TestDb};
use xtask::tenancy::INIT;

#[test]
fn require_with_a_root_certificate_checks_the_server_as_libpq_does() {
    let db = TestDb::migrated_to(INIT);
    let own = server_certificate().expect("the test cluster has a certificate");
    let dir = std::env::temp_dir().join(format!("datahub-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let other = dir.join("other.crt");
    let made = Command::new("openssl")
        .args([
            "req",
            "-new",
            "-x509",
            "-days",
            "1",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-newkey",
            "rsa:2048",
            "-keyout",
        ])
        .arg(dir.join("other.key"))
        .arg("-out")
        .arg(&other)
        .output()
        .expect("run openssl");
    assert!(made.status.success(), "{}", text(&made.stderr));

    let with = |params: &str| format!("{}?{params}", db.url());
    // The server's own certificate as the root: accepted (the host name is not checked).
    let trusted = run_xtask(
        &["migrate", "status"],
        Some(&with(&format!(
            "sslmode=require&sslrootcert={}",
            own.display()
        ))),
    );
    assert_eq!(trusted.status.code(), Some(1), "{}", text(&trusted.stderr));
    // Another certificate as the root: refused, as libpq refuses it.
    let refused = run_xtask(
        &["migrate", "status"],
        Some(&with(&format!(
            "sslmode=require&sslrootcert={}",
            other.display()
        ))),
    );
    let stderr = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot connect to PostgreSQL"), "{stderr}");
    // Without a root certificate, `require` only encrypts, as libpq does.
    let plain = run_xtask(&["migrate", "status"], Some(&with("sslmode=require")));
    assert_eq!(plain.status.code(), Some(1), "{}", text(&plain.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}
