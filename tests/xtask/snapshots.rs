//! Every snapshot file under review is still asserted by a test: a renamed or deleted test must
//! take its snapshot with it, so reviewers never read output nothing checks.

use std::path::Path;

#[test]
fn every_snapshot_file_is_asserted_by_its_module() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("xtask");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir.join("snapshots")).unwrap() {
        let file = entry.unwrap().file_name().to_string_lossy().into_owned();
        let Some(stem) = file.strip_suffix(".snap") else {
            panic!("`{file}` is not a reviewed snapshot: review it with `cargo insta review`, or delete it");
        };
        let mut parts = stem.splitn(3, "__");
        let (_binary, module, name) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
        // `migrate_lint` asserts the plan of every migration in `migrations/`, by its name.
        if let ("migrate_lint", Some(migration)) = (module, name.strip_prefix("plan_")) {
            let folder = dir.join("../../migrations").join(migration);
            assert!(
                folder.join("migration.sql").is_file(),
                "`{file}`: the migration `{migration}` is gone; delete its plan snapshot"
            );
            checked += 1;
            continue;
        }
        let source =
            std::fs::read_to_string(dir.join(format!("{module}.rs"))).unwrap_or_else(|_| {
                panic!("`{file}` belongs to a module `{module}` that does not exist")
            });
        assert!(
            source.contains(&format!("\"{name}\"")),
            "`{file}`: no test in `{module}.rs` asserts the snapshot `{name}`"
        );
        checked += 1;
    }
    assert!(checked > 0);
}
