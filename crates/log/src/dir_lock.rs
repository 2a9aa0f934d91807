//! The per-log-dir lock (Kafka's `.lock`): one process owns a log dir at a time.
//!
//! Two brokers writing the same partition files both acknowledge writes and then lose
//! each other's after a restart, so the second one must refuse to start. The lock is an
//! `flock` on `<dir>/.lock`, held until the [`DirLock`] is dropped (the process lifetime
//! in the broker); the kernel releases it when the process dies, so a crash leaves no
//! stale lock. The holder writes its pid into the file so the refusal can name it.
//!
//! Thread-safe: a `DirLock` is only an open file.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{LogError, Result};

pub const LOCK_FILE: &str = ".lock";

#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// Takes the lock of `dir`, or fails with [`LogError::DirLocked`] naming the dir and,
    /// when it wrote it, the pid of the process that holds it.
    pub fn acquire(dir: &Path) -> Result<Self> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| LogError::io(&path, e))?;
        // SAFETY: flock on a file descriptor this function owns for the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(LogError::io(&path, e));
            }
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(LogError::DirLocked {
                dir: dir.display().to_string(),
                holder: holder.trim().parse().ok(),
            });
        }
        let pid = std::process::id().to_string();
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(pid.as_bytes()))
            .map_err(|e| LogError::io(&path, e))?;
        Ok(DirLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path()).unwrap();
        match DirLock::acquire(dir.path()) {
            Err(LogError::DirLocked { dir: d, holder }) => {
                assert_eq!(d, dir.path().display().to_string());
                assert_eq!(holder, Some(std::process::id()));
            }
            other => panic!("second lock: {other:?}"),
        }
        drop(first);
        DirLock::acquire(dir.path()).unwrap();
    }
}
