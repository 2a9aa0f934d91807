//! Baselines of this machine, measured with plain threads and blocking I/O so that they are
//! the ceiling Runnel's figures are compared to: TCP over loopback, sequential file writes.

use super::bench::mb_per_s;
use super::UsageError;
use anyhow::Context;
use clap::Args;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Args, Debug, Clone)]
pub struct LoopbackArgs {
    /// Bytes per "record"; total bytes = record size × count, as in `bench produce`.
    #[arg(long, default_value_t = 1024)]
    pub record_size: u64,
    /// Number of records' worth of bytes to send (default 1000000).
    #[arg(long, default_value_t = 1_000_000)]
    pub count: u64,
    /// Concurrent connections.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub producers: u32,
    /// Bytes per write call.
    #[arg(long, default_value_t = 256 * 1024)]
    pub batch_bytes: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct DiskArgs {
    /// Directory for the temporary file (use the broker's log.dirs to measure its disk).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    pub dir: PathBuf,
    /// Bytes per "record"; total bytes = record size × count.
    #[arg(long, default_value_t = 1024)]
    pub record_size: u64,
    /// Number of records' worth of bytes to write (default 1000000).
    #[arg(long, default_value_t = 1_000_000)]
    pub count: u64,
    /// Bytes per write call.
    #[arg(long, default_value_t = 256 * 1024)]
    pub batch_bytes: usize,
    /// In the synced run, fdatasync after every this many MiB.
    #[arg(long, default_value_t = 1)]
    pub sync_every_mib: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Sends record size × count bytes over `producers` loopback connections to an in-process
/// sink and reports MB/s, timed until the sink has read the last byte.
pub async fn loopback(a: LoopbackArgs) -> anyhow::Result<()> {
    if a.batch_bytes == 0 || a.count == 0 {
        return Err(UsageError("--batch-bytes and --count must be positive".into()).into());
    }
    let total = a.record_size * a.count;
    let result =
        tokio::task::spawn_blocking(move || run_loopback(total, a.producers, a.batch_bytes))
            .await??;
    let mbs = mb_per_s(total, result);
    if a.json {
        outln!(
            "{}",
            serde_json::json!({"bench": "loopback", "bytes": total, "connections": a.producers, "elapsed_s": result.as_secs_f64(), "mb_per_s": mbs})
        );
    } else {
        outln!(
            "bench loopback: {total} bytes over {} TCP connection(s) on 127.0.0.1",
            a.producers
        );
        outln!("  {:<26}{:.3} s", "elapsed", result.as_secs_f64());
        outln!("  {:<26}{mbs:.1} MB/s", "throughput");
    }
    Ok(())
}

fn run_loopback(total: u64, connections: u32, chunk: usize) -> anyhow::Result<Duration> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot listen on 127.0.0.1")?;
    let addr = listener.local_addr()?;
    let sink = std::thread::spawn(move || -> std::io::Result<u64> {
        let mut readers = Vec::new();
        for _ in 0..connections {
            let (mut sock, _) = listener.accept()?;
            readers.push(std::thread::spawn(move || -> std::io::Result<u64> {
                let mut buf = vec![0u8; 1 << 20];
                let mut n = 0u64;
                loop {
                    match sock.read(&mut buf)? {
                        0 => return Ok(n),
                        k => n += k as u64,
                    }
                }
            }));
        }
        let mut received = 0;
        for r in readers {
            received += r.join().expect("sink threads do not panic")?;
        }
        Ok(received)
    });
    let data = vec![b'x'; chunk];
    let start = Instant::now();
    let mut writers = Vec::new();
    for i in 0..connections as u64 {
        let share = total / connections as u64 + u64::from(i < total % connections as u64);
        let data = data.clone();
        writers.push(std::thread::spawn(move || -> std::io::Result<()> {
            let mut sock = TcpStream::connect(addr)?;
            sock.set_nodelay(true)?;
            let mut left = share;
            while left > 0 {
                let k = left.min(data.len() as u64) as usize;
                sock.write_all(&data[..k])?;
                left -= k as u64;
            }
            sock.shutdown(Shutdown::Write)
        }));
    }
    for w in writers {
        w.join()
            .expect("writer threads do not panic")
            .context("loopback write failed")?;
    }
    let received = sink
        .join()
        .expect("the sink thread does not panic")
        .context("loopback read failed")?;
    let elapsed = start.elapsed();
    anyhow::ensure!(
        received == total,
        "the sink received {received} of {total} bytes"
    );
    Ok(elapsed)
}

/// Writes record size × count bytes sequentially to a temporary file in `--dir`, once
/// without syncing (then one fdatasync, timed separately) and once with fdatasync every
/// `--sync-every-mib` MiB, and reports MB/s of each.
pub async fn disk(a: DiskArgs) -> anyhow::Result<()> {
    if a.batch_bytes == 0 || a.count == 0 || a.sync_every_mib == 0 {
        return Err(UsageError(
            "--batch-bytes, --count and --sync-every-mib must be positive".into(),
        )
        .into());
    }
    let total = a.record_size * a.count;
    let args = a.clone();
    let (no_sync, final_sync, synced) =
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let (no_sync, final_sync) = write_file(&args.dir, total, args.batch_bytes, None)?;
            let (synced, _) = write_file(
                &args.dir,
                total,
                args.batch_bytes,
                Some(args.sync_every_mib << 20),
            )?;
            Ok((no_sync, final_sync, synced))
        })
        .await??;
    let with_final = no_sync + final_sync;
    if a.json {
        outln!(
            "{}",
            serde_json::json!({
                "bench": "disk",
                "dir": a.dir.display().to_string(),
                "bytes": total,
                "no_sync_mb_per_s": mb_per_s(total, no_sync),
                "no_sync_then_fdatasync_mb_per_s": mb_per_s(total, with_final),
                "sync_every_mib": a.sync_every_mib,
                "sync_mb_per_s": mb_per_s(total, synced),
            })
        );
    } else {
        outln!(
            "bench disk: {total} bytes written sequentially in {}",
            a.dir.display()
        );
        outln!(
            "  {:<34}{:.1} MB/s",
            "no fdatasync (page cache)",
            mb_per_s(total, no_sync)
        );
        outln!(
            "  {:<34}{:.1} MB/s",
            "no fdatasync, one at the end",
            mb_per_s(total, with_final)
        );
        outln!(
            "  {:<34}{:.1} MB/s",
            format!("fdatasync every {} MiB", a.sync_every_mib),
            mb_per_s(total, synced)
        );
    }
    Ok(())
}

/// Writes `total` bytes to a new file, returning the time of the writes (including any
/// periodic syncs) and the time of a final fdatasync. The file is removed afterwards.
fn write_file(
    dir: &std::path::Path,
    total: u64,
    chunk: usize,
    sync_every: Option<u64>,
) -> anyhow::Result<(Duration, Duration)> {
    let path = dir.join(format!("runnel-bench-disk-{}.tmp", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    // The file goes whatever happens below.
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _remove = Remove(path.clone());
    let data: Vec<u8> = (0..chunk).map(|i| (i % 251) as u8).collect();
    let start = Instant::now();
    let (mut written, mut since_sync) = (0u64, 0u64);
    while written < total {
        let k = (total - written).min(chunk as u64) as usize;
        file.write_all(&data[..k])
            .with_context(|| format!("cannot write {}", path.display()))?;
        written += k as u64;
        since_sync += k as u64;
        if let Some(every) = sync_every {
            if since_sync >= every {
                file.sync_data()
                    .with_context(|| format!("cannot fdatasync {}", path.display()))?;
                since_sync = 0;
            }
        }
    }
    let writes = start.elapsed();
    let sync_start = Instant::now();
    file.sync_data()
        .with_context(|| format!("cannot fdatasync {}", path.display()))?;
    let final_sync = sync_start.elapsed();
    let writes = if sync_every.is_some() {
        writes + final_sync
    } else {
        writes
    };
    Ok((writes, final_sync))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_moves_every_byte() {
        let elapsed = run_loopback(3 * 1024 * 1024 + 7, 3, 64 * 1024).unwrap();
        assert!(elapsed > Duration::ZERO);
    }

    #[test]
    fn disk_files_are_written_and_removed() {
        let dir = std::env::temp_dir().join(format!("runnel-disk-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        write_file(&dir, 3 << 20, 100_000, Some(1 << 20)).unwrap();
        write_file(&dir, 1000, 64, None).unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        std::fs::remove_dir(&dir).unwrap();
    }
}
