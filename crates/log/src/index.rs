//! Sparse indexes of one segment, held in memory and rebuilt from batch headers at open.
//!
//! The offset index maps a relative offset to the file position of the batch holding it;
//! the time index maps a timestamp to the first relative offset at or after which records
//! may carry it. Both are sparse (one entry per `index.interval.bytes`), so a lookup gives
//! a place to start a short scan, never the answer itself.

use std::path::Path;

use crate::error::{LogError, Result};

#[derive(Debug, Default, Clone)]
pub struct OffsetIndex {
    /// (relative offset, file position), both strictly increasing.
    entries: Vec<(u32, u32)>,
}

impl OffsetIndex {
    pub fn push(&mut self, relative_offset: u32, position: u32) {
        if self
            .entries
            .last()
            .is_none_or(|&(o, p)| relative_offset > o && position > p)
        {
            self.entries.push((relative_offset, position));
        }
    }

    /// The file position of the last indexed batch starting at or before `relative_offset`.
    pub fn lookup(&self, relative_offset: u32) -> u32 {
        match self.entries.partition_point(|&(o, _)| o <= relative_offset) {
            0 => 0,
            i => self.entries[i - 1].1,
        }
    }

    /// The file position of the last indexed batch starting at or before `position`
    /// (0 when none is indexed there): where a scan for the batch boundaries before a
    /// byte limit may start.
    pub fn batch_start_at_or_before(&self, position: u64) -> u64 {
        match self.entries.partition_point(|&(_, p)| p as u64 <= position) {
            0 => 0,
            i => self.entries[i - 1].1 as u64,
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct TimeIndex {
    /// (max timestamp so far, relative offset of the batch that raised it).
    entries: Vec<(i64, u32)>,
}

impl TimeIndex {
    pub fn push(&mut self, timestamp: i64, relative_offset: u32) {
        if self
            .entries
            .last()
            .is_none_or(|&(t, o)| timestamp > t && relative_offset > o)
        {
            self.entries.push((timestamp, relative_offset));
        }
    }

    /// The relative offset from which a scan for the first record with a timestamp
    /// >= `timestamp` must start.
    pub fn lookup(&self, timestamp: i64) -> u32 {
        match self.entries.partition_point(|&(t, _)| t < timestamp) {
            0 => 0,
            i => self.entries[i - 1].1,
        }
    }
}

/// `runnel_core::fs::write_atomically` (a crash leaves the old file or the new one, never
/// half of one), with the log's error type.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    runnel_core::fs::write_atomically(path, bytes).map_err(|e| LogError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_lookup_finds_the_floor_entry() {
        let mut i = OffsetIndex::default();
        i.push(0, 0);
        i.push(10, 4096);
        i.push(20, 8192);
        assert_eq!(i.lookup(5), 0);
        assert_eq!(i.lookup(10), 4096);
        assert_eq!(i.lookup(25), 8192);
    }

    #[test]
    fn time_lookup_starts_before_the_target() {
        let mut t = TimeIndex::default();
        t.push(100, 0);
        t.push(200, 10);
        t.push(300, 20);
        assert_eq!(t.lookup(50), 0);
        assert_eq!(t.lookup(200), 0);
        assert_eq!(t.lookup(201), 10);
        assert_eq!(t.lookup(1000), 20);
    }
}
