//! The newest migration in the repository's `migrations/` folder, compiled into the app as
//! `DATAHUB_SCHEMA`: the app names it in `application_name`, so `cargo xtask release` can tell a
//! running app that predates a migration it cannot survive from the app of this release.

fn main() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    println!("cargo:rerun-if-changed={}", dir.display());
    let newest = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.path().join("migration.sql").is_file())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .max()
        .unwrap_or_default();
    println!("cargo:rustc-env=DATAHUB_SCHEMA={newest}");
}
