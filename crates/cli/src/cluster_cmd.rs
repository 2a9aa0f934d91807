//! `runnel cluster local --nodes 3`: a replicated cluster on 127.0.0.1 for trying things
//! out and for tests. Each node is its own `runnel server` process with its own data dir
//! and log file, every node both broker and metadata-quorum voter (KRaft's combined mode).
//! Ctrl-C or SIGTERM stops them all (each does a controlled shutdown).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Start a local multi-node cluster (each node its own process and data dir).
    Local(LocalArgs),
}

#[derive(Args)]
pub struct LocalArgs {
    /// How many nodes (each a broker and a quorum voter).
    #[arg(long, default_value_t = 3)]
    pub nodes: u16,
    /// Where node data and logs go (`<dir>/node-<id>/`, `<dir>/node-<id>.log`).
    #[arg(long, default_value = "./runnel-cluster")]
    pub dir: PathBuf,
    /// Kafka port of node 1; node N listens on base + N - 1.
    #[arg(long, default_value_t = 9092)]
    pub base_port: u16,
    /// Quorum (controller) port of node 1; node N uses base + N - 1.
    #[arg(long, default_value_t = 19093)]
    pub controller_base_port: u16,
    /// Extra configuration for every node, e.g. `--set min.insync.replicas=2`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
}

pub fn run(cmd: ClusterCommand) -> ExitCode {
    match cmd {
        ClusterCommand::Local(args) => local(args),
    }
}

fn local(args: LocalArgs) -> ExitCode {
    if args.nodes == 0 || args.nodes > 9 {
        eprintln!(
            "runnel cluster local: --nodes must be 1 to 9, got {}",
            args.nodes
        );
        return ExitCode::from(2);
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("runnel cluster local: cannot find the runnel executable: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = std::fs::create_dir_all(&args.dir) {
        eprintln!(
            "runnel cluster local: cannot create {}: {e}",
            args.dir.display()
        );
        return ExitCode::FAILURE;
    }
    let ids: Vec<u16> = (1..=args.nodes).collect();
    let voters: Vec<String> = ids
        .iter()
        .map(|id| format!("{id}@127.0.0.1:{}", args.controller_base_port + id - 1))
        .collect();
    let rf = args.nodes.min(3);
    let mut children: Vec<(u16, Child)> = Vec::new();
    for &id in &ids {
        let port = args.base_port + id - 1;
        let log_path = args.dir.join(format!("node-{id}.log"));
        let log = match std::fs::File::create(&log_path) {
            Ok(f) => f,
            Err(e) => {
                eprintln!(
                    "runnel cluster local: cannot create {}: {e}",
                    log_path.display()
                );
                stop_all(&mut children);
                return ExitCode::FAILURE;
            }
        };
        let mut cmd = Command::new(&exe);
        cmd.arg("server");
        for (k, v) in [
            ("node.id", id.to_string()),
            ("listeners", format!("PLAINTEXT://127.0.0.1:{port}")),
            (
                "log.dirs",
                args.dir.join(format!("node-{id}")).display().to_string(),
            ),
            ("controller.quorum.voters", voters.join(",")),
            ("http.listeners", String::new()),
            ("default.replication.factor", rf.to_string()),
            ("offsets.topic.replication.factor", rf.to_string()),
            ("transaction.state.log.replication.factor", rf.to_string()),
            (
                "min.insync.replicas",
                if rf >= 3 { "2" } else { "1" }.to_string(),
            ),
        ] {
            cmd.arg("--set").arg(format!("{k}={v}"));
        }
        for o in &args.overrides {
            cmd.arg("--set").arg(o);
        }
        cmd.stdout(Stdio::piped()).stderr(log);
        match cmd.spawn() {
            Ok(child) => children.push((id, child)),
            Err(e) => {
                eprintln!("runnel cluster local: cannot start node {id}: {e}");
                stop_all(&mut children);
                return ExitCode::FAILURE;
            }
        }
        eprintln!("starting node {id} (log: {})", log_path.display());
    }
    // Every node prints "listening on HOST:PORT" once it has joined the quorum. Each
    // first line is read on its own thread, so a node that hangs cannot block the
    // deadline.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (tx, rx) = std::sync::mpsc::channel();
    for (id, child) in &mut children {
        if let Some(out) = child.stdout.take() {
            let (tx, id) = (tx.clone(), *id);
            std::thread::spawn(move || {
                let line = BufReader::new(out).lines().next().and_then(Result::ok);
                let _ = tx.send((id, line.unwrap_or_default()));
            });
        }
    }
    let mut up: Vec<(u16, String)> = Vec::new();
    while up.len() < children.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok((id, line)) = rx.recv_timeout(left) else {
            eprintln!("runnel cluster local: nodes took longer than 60 s to start");
            stop_all(&mut children);
            return ExitCode::FAILURE;
        };
        match line.strip_prefix("listening on ") {
            Some(addr) => {
                eprintln!("node {id} is up on {addr}");
                up.push((id, addr.to_string()));
            }
            None => {
                eprintln!(
                    "runnel cluster local: node {id} did not start; see {}",
                    args.dir.join(format!("node-{id}.log")).display()
                );
                stop_all(&mut children);
                return ExitCode::FAILURE;
            }
        }
    }
    up.sort();
    let bootstrap: Vec<String> = up.into_iter().map(|(_, addr)| addr).collect();
    println!("cluster up: bootstrap.servers={}", bootstrap.join(","));
    let _ = std::io::stdout().flush();
    wait_for_signal_or_exit(&mut children);
    stop_all(&mut children);
    ExitCode::SUCCESS
}

/// Blocks until SIGINT/SIGTERM, or until a node exits by itself (reported).
fn wait_for_signal_or_exit(children: &mut [(u16, Child)]) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(_) => return,
    };
    runtime.block_on(async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return,
            };
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return,
                _ = term.recv() => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {
                    for (id, child) in children.iter_mut() {
                        if let Ok(Some(status)) = child.try_wait() {
                            eprintln!("node {id} exited ({status}); the others keep running");
                        }
                    }
                }
            }
        }
    });
}

/// SIGTERM to one node at a time (each does a controlled shutdown while the others can
/// still take its partitions), waiting for each, bounded.
fn stop_all(children: &mut Vec<(u16, Child)>) {
    for (id, child) in children.iter_mut() {
        // SAFETY: kill(2) with a pid we spawned; no memory is touched.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                _ if Instant::now() > deadline => {
                    eprintln!("node {id} did not stop in time; killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
    children.clear();
}
