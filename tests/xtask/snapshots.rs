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

/// Tables read in a 100-column terminal: no header, row, rule or record line of any snapshot is
/// wider (a table's free-text last column goes beneath its row when it would not fit, any
/// other wide table prints one record per block; see `xtask::report::Table`).
#[test]
fn no_table_line_of_any_snapshot_is_wider_than_100_columns() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("xtask/snapshots");
    let mut n_table_lines = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let snapshot = std::fs::read_to_string(&path).unwrap();
        // The body, after insta's `---` header.
        let body = snapshot.splitn(3, "---\n").nth(2).unwrap_or_default();
        for line in body.lines() {
            let rule = !line.is_empty() && line.chars().all(|c| c == '-' || c == '+');
            // A row (` a | b`) or a record's field (`key | value`); a long last column's text
            // beneath its row is indented by four spaces, prose that is not a table line.
            let row = !line.starts_with("    ") && (line.contains(" | ") || line.ends_with(" |"));
            if !(rule || row || line.starts_with("-[ RECORD ")) {
                continue;
            }
            n_table_lines += 1;
            assert!(
                line.chars().count() <= xtask::report::MAX_WIDTH,
                "`{}`: a table line of {} columns: {line}",
                path.file_name().unwrap().to_string_lossy(),
                line.chars().count()
            );
        }
    }
    assert!(
        n_table_lines > 100,
        "only {n_table_lines} table lines found"
    );
}
