//! Which log dirs have failed. Any I/O error on a partition, a full disk included, takes
//! the partition's whole log dir offline until a restart, as Kafka does (JBOD): the
//! failed write was already cut back, and a directory that failed once is not written
//! again. The other dirs keep serving. One `LogDirs` per broker, shared by its partitions.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use parking_lot::RwLock;

#[derive(Debug, Default)]
pub struct LogDirs {
    offline: RwLock<BTreeSet<PathBuf>>,
}

impl LogDirs {
    /// Whether `dir` (a log dir: the parent of partition directories) has failed.
    pub fn is_offline(&self, dir: &Path) -> bool {
        let offline = self.offline.read();
        !offline.is_empty() && offline.contains(dir)
    }

    /// Whether any log dir has failed.
    pub fn any_offline(&self) -> bool {
        !self.offline.read().is_empty()
    }

    /// Takes `dir` offline after `e`, when it is an I/O error (a record the log refused
    /// is not a failing disk). Logged once per dir.
    pub fn note_error(&self, dir: &Path, e: &runnel_log::LogError) {
        let runnel_log::LogError::Io { .. } = e else {
            return;
        };
        if self.offline.write().insert(dir.to_path_buf()) {
            tracing::error!(dir = %dir.display(), error = %e, "log dir failed: its partitions are offline until the broker restarts");
        }
    }

    /// The failed log dirs.
    pub fn offline(&self) -> Vec<PathBuf> {
        self.offline.read().iter().cloned().collect()
    }
}
