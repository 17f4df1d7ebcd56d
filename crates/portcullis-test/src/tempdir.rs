//! A temporary directory of one test's own (unique per process, test and call), removed when
//! dropped: for config files, access-log outputs and named pipes.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A temp directory of the test's own, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty directory named after `test`.
    pub fn new(test: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "portcullis-test-{}-{}-{test}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// The path of `name` in the directory (nothing is created).
    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// A named pipe `name` made in the directory (`mkfifo`).
    pub fn fifo(&self, name: &str) -> PathBuf {
        let path = self.file(name);
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap();
        assert!(made.success(), "mkfifo");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
