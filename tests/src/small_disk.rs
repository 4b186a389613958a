//! A small filesystem that PostgreSQL really fills: a tmpfs of a few MiB mounted in a temp
//! directory (this needs root, as CI runs the tests), with a directory in it for a tablespace,
//! owned by the server's OS user, and one for a cluster's WAL. [`SmallDisk::fill`] takes every byte left, so the next file
//! extension in the tablespace fails with "No space left on device"; [`SmallDisk::free`] gives
//! the space back. Unmounted when dropped (after the cluster using it has stopped).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct SmallDisk {
    mount: PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (as `mount -o size=` reads it, e.g. `8m`).
    pub fn mount(size: &str) -> SmallDisk {
        let mount = std::env::temp_dir().join(format!(
            "datahub-small-disk-{}-{}",
            std::process::id(),
            &datahub_core::password::random_token()[..8]
        ));
        std::fs::create_dir_all(&mount).expect("create the mount point");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(&mount)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "cannot mount a small tmpfs at `{}` (the full-disk tests run as root, as CI does): {}",
            mount.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let disk = SmallDisk { mount };
        for dir in [disk.tablespace_dir(), disk.wal_dir()] {
            std::fs::create_dir_all(&dir).expect("create a directory for the server");
            // The server runs as `postgres` when the tests run as root (see the harness).
            let chown = Command::new("chown")
                .arg("postgres")
                .arg(&dir)
                .status()
                .expect("run chown");
            assert!(chown.success(), "chown postgres of `{}`", dir.display());
        }
        disk
    }

    /// The empty directory for `CREATE TABLESPACE … LOCATION`.
    pub fn tablespace_dir(&self) -> PathBuf {
        self.mount.join("tablespace")
    }

    /// The empty directory for a cluster's WAL (initdb `--waldir`).
    pub fn wal_dir(&self) -> PathBuf {
        self.mount.join("wal")
    }

    fn padding(&self) -> PathBuf {
        self.mount.join("padding")
    }

    /// Takes every byte left on the filesystem.
    pub fn fill(&self) {
        let mut file = std::fs::File::create(self.padding()).expect("create the padding file");
        let block = vec![0u8; 64 * 1024];
        loop {
            match file.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(error) if error.raw_os_error() == Some(libc_enospc()) => break,
                Err(error) => panic!("cannot fill the small disk: {error}"),
            }
        }
        // Partial blocks at the very end: one byte at a time.
        while let Ok(1) = file.write(&[0u8]) {}
        let _ = file.sync_all();
    }

    /// Gives the space [`SmallDisk::fill`] took back.
    pub fn free(&self) {
        std::fs::remove_file(self.padding()).expect("remove the padding file");
    }

    pub fn path(&self) -> &Path {
        &self.mount
    }
}

/// ENOSPC on Linux.
fn libc_enospc() -> i32 {
    28
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount).status();
        let _ = std::fs::remove_dir(&self.mount);
    }
}
