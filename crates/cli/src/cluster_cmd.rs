//! `runnel cluster local`: a replicated cluster on 127.0.0.1 for trying things out, for
//! fault drills and for tests (like `rpk container start|status|stop`), and
//! `runnel cluster info`.
//!
//! Each node is its own `runnel server` process, broker and metadata-quorum voter
//! (KRaft's combined mode), with its own data dir, log file and HTTP API port. A node's
//! stdout and stderr go to its log file (never a pipe: no node can block on or die of a
//! reader that went away), and the launcher learns a node is up from the `listening on`
//! line there. `<dir>/cluster.json` records every node's pid, ports, data dir and
//! command line, so `status`, `stop`, `restart --node N` and `kill --node N` work from
//! any shell. The launcher stays in the foreground (Ctrl-C or SIGTERM stops every node,
//! one at a time, each with a controlled shutdown) unless `--detach`; it reports a node
//! that dies once.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

/// How long a node may take to print `listening on` (it first joins the quorum).
const START_DEADLINE: Duration = Duration::from_secs(60);
/// How long a node may take to stop after SIGTERM before it gets SIGKILL.
const STOP_DEADLINE: Duration = Duration::from_secs(20);
const STATE_FILE: &str = "cluster.json";
const DEFAULT_HTTP_BASE_PORT: u16 = 9644;

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// A local multi-node cluster: start it (the default), or `status`, `stop`,
    /// `restart --node N`, `kill --node N` (like rpk container).
    Local(LocalArgs),
    /// Show the cluster id, the brokers (the controller marked *) and the topics (like
    /// `rpk cluster info` and `kcat -L`).
    Info(crate::tools::InfoArgs),
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct LocalArgs {
    #[command(subcommand)]
    pub action: Option<LocalAction>,
    #[command(flatten)]
    pub start: StartArgs,
}

#[derive(Subcommand)]
pub enum LocalAction {
    /// Start the nodes (what `runnel cluster local` alone does).
    Start(StartArgs),
    /// Each node's pid, state, Kafka, quorum and HTTP addresses, data dir and log.
    Status {
        #[command(flatten)]
        dir: DirArg,
        /// One JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Stop every node (SIGTERM, one at a time) and the launcher.
    Stop {
        #[command(flatten)]
        dir: DirArg,
    },
    /// Stop one node if it runs (SIGTERM) and start it again on the same data dir.
    Restart {
        #[command(flatten)]
        node: NodeArg,
    },
    /// SIGKILL one node (a crash, for fault drills); `restart --node N` brings it back.
    Kill {
        #[command(flatten)]
        node: NodeArg,
    },
}

#[derive(Args)]
pub struct DirArg {
    /// The cluster's directory (as given to `runnel cluster local --dir`).
    #[arg(long, default_value = "./runnel-cluster")]
    pub dir: PathBuf,
}

#[derive(Args)]
pub struct NodeArg {
    /// The node id (1..N).
    #[arg(long)]
    pub node: u16,
    #[command(flatten)]
    pub dir: DirArg,
}

#[derive(Args, Clone)]
pub struct StartArgs {
    /// How many nodes (each a broker and a quorum voter).
    #[arg(long, default_value_t = 3)]
    pub nodes: u16,
    /// Where node data and logs go (`<dir>/node-<id>/`, `<dir>/node-<id>.log`,
    /// `<dir>/cluster.json`).
    #[arg(long, default_value = "./runnel-cluster")]
    pub dir: PathBuf,
    /// Kafka port of node 1; node N listens on base + N - 1.
    #[arg(long, default_value_t = 9092)]
    pub base_port: u16,
    /// Quorum (controller) port of node 1; node N uses base + N - 1.
    #[arg(long, default_value_t = 19093)]
    pub controller_base_port: u16,
    /// HTTP admin API port of node 1; node N uses base + N - 1 (0: free ports, printed)
    /// [default: 9644, and a free port for a node whose default port is taken].
    #[arg(long, value_name = "PORT")]
    pub http_base_port: Option<u16>,
    /// Extra configuration for every node, e.g. `--set min.insync.replicas=2`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Return once the cluster is up, leaving the nodes running (stop them with
    /// `runnel cluster local stop`).
    #[arg(long)]
    pub detach: bool,
    /// `sasl_ssl`: TLS with generated test certificates and SASL (user `admin`, password
    /// printed once) on the Kafka listeners, HTTPS with Basic auth; writes
    /// `<dir>/security/client.properties` for clients (see cluster_security.rs).
    #[arg(long, value_enum, default_value = "plaintext")]
    pub security: crate::cluster_security::Mode,
}

/// `<dir>/cluster.json`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct State {
    /// The foreground launcher, if one runs.
    launcher_pid: Option<u32>,
    nodes: Vec<NodeState>,
    /// A secured cluster's client properties file (`--security`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_config: Option<PathBuf>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct NodeState {
    id: u16,
    pid: u32,
    kafka: String,
    controller: String,
    /// Empty until the node printed it (or when HTTP is switched off).
    http: String,
    data_dir: PathBuf,
    log: PathBuf,
    /// `runnel server` arguments, to restart the node as it was.
    args: Vec<String>,
}

pub fn run(cmd: ClusterCommand) -> ExitCode {
    let result = match cmd {
        ClusterCommand::Info(args) => return crate::tools::cluster_info(args),
        ClusterCommand::Local(LocalArgs { action, start }) => match action {
            None => start_cluster(start),
            Some(LocalAction::Start(start)) => start_cluster(start),
            Some(LocalAction::Status { dir, json }) => status(&dir.dir, json),
            Some(LocalAction::Stop { dir }) => stop(&dir.dir),
            Some(LocalAction::Restart { node }) => restart(&node),
            Some(LocalAction::Kill { node }) => kill(&node),
        },
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            errln!("runnel cluster local: {e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T> = std::result::Result<T, String>;

fn read_state(dir: &Path) -> Result<State> {
    let path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "cannot read {}: {e}; is there a cluster started with `runnel cluster local --dir {}`?",
            path.display(),
            dir.display()
        )
    })?;
    serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a cluster state file: {e}", path.display()))
}

/// Written whole and renamed into place, so a reader never sees half a file.
fn write_state(dir: &Path, state: &State) -> Result<()> {
    let path = dir.join(STATE_FILE);
    let text = serde_json::to_string_pretty(state).map_err(|e| e.to_string())?;
    runnel_core::fs::write_atomically(&path, (text + "\n").as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Whether `pid` is a live process (a zombie is not: it has exited, only unreaped).
fn alive(pid: u32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    if pid == 0 || unsafe { libc::kill(pid as i32, 0) } != 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_none_or(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => true,
    }
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a pid from our state file; no memory is touched.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// Reaps children that exited, returning their ids and statuses.
fn reap(children: &mut HashMap<u32, Child>) -> Vec<(u32, std::process::ExitStatus)> {
    let mut done = Vec::new();
    children.retain(|&pid, child| match child.try_wait() {
        Ok(Some(status)) => {
            done.push((pid, status));
            false
        }
        _ => true,
    });
    done
}

/// SIGTERM, then waits (reaping it if it is our child); SIGKILL after the deadline.
fn stop_node(node: &NodeState, children: &mut HashMap<u32, Child>) {
    if !alive(node.pid) {
        return;
    }
    signal(node.pid, libc::SIGTERM);
    let deadline = Instant::now() + STOP_DEADLINE;
    loop {
        reap(children);
        if !alive(node.pid) {
            return;
        }
        if Instant::now() > deadline {
            errln!(
                "node {} (pid {}) did not stop in {STOP_DEADLINE:?}; killing it",
                node.id,
                node.pid
            );
            signal(node.pid, libc::SIGKILL);
            std::thread::sleep(Duration::from_millis(200));
            reap(children);
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `runnel server` arguments of node `id` (`secured`: its generated security config).
fn node_args(
    a: &StartArgs,
    id: u16,
    voters: &str,
    secured: Option<&crate::cluster_security::Secured>,
) -> Vec<String> {
    let rf = a.nodes.min(3);
    let http_port = match a.http_base_port {
        Some(0) => 0,
        Some(base) => base + id - 1,
        None => {
            let port = DEFAULT_HTTP_BASE_PORT + id - 1;
            // As a lone broker does with its default port: taken means another one.
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                port
            } else {
                errln!(
                    "port {port} is taken; node {id} serves HTTP on a free port (printed below)"
                );
                0
            }
        }
    };
    let mut args = vec!["server".to_string()];
    let kafka_port = a.base_port + id - 1;
    let (listeners, http) = match secured {
        Some(s) => {
            args.extend(s.node_args(id));
            // The quorum's port is a SASL_SSL controller listener too.
            for (k, v) in [
                ("controller.listener.names", "CONTROLLER".to_string()),
                (
                    "listener.security.protocol.map",
                    "SASL_SSL:SASL_SSL,CONTROLLER:SASL_SSL".to_string(),
                ),
            ] {
                args.push("--set".into());
                args.push(format!("{k}={v}"));
            }
            let controller_port = a.controller_base_port + id - 1;
            (
                format!(
                    "SASL_SSL://127.0.0.1:{kafka_port},CONTROLLER://127.0.0.1:{controller_port}"
                ),
                "https://",
            )
        }
        None => (format!("PLAINTEXT://127.0.0.1:{kafka_port}"), ""),
    };
    for (k, v) in [
        ("node.id", id.to_string()),
        ("listeners", listeners),
        (
            "log.dirs",
            a.dir.join(format!("node-{id}")).display().to_string(),
        ),
        ("controller.quorum.voters", voters.to_string()),
        ("http.listeners", format!("{http}127.0.0.1:{http_port}")),
        ("default.replication.factor", rf.to_string()),
        ("offsets.topic.replication.factor", rf.to_string()),
        ("transaction.state.log.replication.factor", rf.to_string()),
        (
            "min.insync.replicas",
            if rf >= 3 { "2" } else { "1" }.to_string(),
        ),
    ] {
        args.push("--set".into());
        args.push(format!("{k}={v}"));
    }
    for o in &a.overrides {
        args.push("--set".into());
        args.push(o.clone());
    }
    args
}

/// Starts a node with stdout and stderr appended to its log; it gets its own process
/// group, so a Ctrl-C meant for the launcher reaches the nodes only through it (one at a
/// time, each a controlled shutdown).
fn spawn_node(exe: &Path, node: &NodeState) -> Result<(Child, u64)> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&node.log)
        .map_err(|e| format!("cannot open {}: {e}", node.log.display()))?;
    let offset = log.metadata().map(|m| m.len()).unwrap_or(0);
    let err = log.try_clone().map_err(|e| e.to_string())?;
    let child = Command::new(exe)
        .args(&node.args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start node {}: {e}", node.id))?;
    Ok((child, offset))
}

/// What a node printed on start: its Kafka and HTTP addresses.
#[derive(Debug, Default, PartialEq)]
struct Started {
    kafka: Option<String>,
    http: Option<String>,
}

fn parse_started(text: &str) -> Started {
    let mut s = Started::default();
    for line in text.lines() {
        if let Some(a) = line.strip_prefix("listening on ") {
            s.kafka = Some(a.trim().to_string());
        } else if let Some(a) = line.strip_prefix("http listening on ") {
            s.http = Some(a.trim().to_string());
        }
    }
    s
}

/// Waits until every node in `pending` (id, pid, log, offset at spawn) printed its
/// `listening on` line (and `http listening on`, when `want_http`), or one died, or the
/// deadline passed.
fn wait_started(
    pending: &[(u16, u32, PathBuf, u64)],
    want_http: bool,
    children: &mut HashMap<u32, Child>,
) -> Result<HashMap<u16, Started>> {
    let deadline = Instant::now() + START_DEADLINE;
    let mut up: HashMap<u16, Started> = HashMap::new();
    loop {
        for (id, pid, log, offset) in pending {
            if up.contains_key(id) {
                continue;
            }
            let mut text = String::new();
            if let Ok(mut f) = std::fs::File::open(log) {
                let _ = f.seek(SeekFrom::Start(*offset));
                let _ = f.read_to_string(&mut text);
            }
            let started = parse_started(&text);
            if started.kafka.is_some() && (started.http.is_some() || !want_http) {
                errln!(
                    "node {id} is up on {} (http {}, pid {pid})",
                    started.kafka.as_deref().unwrap_or(""),
                    started.http.as_deref().unwrap_or("off")
                );
                up.insert(*id, started);
                continue;
            }
            reap(children);
            if !alive(*pid) {
                return Err(format!(
                    "node {id} exited before it was up; its log ({}) ends:\n{}",
                    log.display(),
                    tail(&text, 10)
                ));
            }
        }
        if up.len() == pending.len() {
            return Ok(up);
        }
        if STOP_REQUESTED.load(Ordering::SeqCst) {
            return Err("interrupted while the nodes were starting; stopping them".into());
        }
        if Instant::now() > deadline {
            let late: Vec<String> = pending
                .iter()
                .filter(|(id, ..)| !up.contains_key(id))
                .map(|(id, _, log, _)| format!("node {id} (see {})", log.display()))
                .collect();
            return Err(format!(
                "not up within {START_DEADLINE:?}: {}",
                late.join(", ")
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Whether the overrides switch the HTTP API off (`--set http.listeners=`).
fn http_wanted(overrides: &[String]) -> bool {
    !overrides
        .iter()
        .rev()
        .find_map(|o| {
            o.split_once('=')
                .filter(|(k, _)| k.trim() == "http.listeners")
        })
        .is_some_and(|(_, v)| v.trim().is_empty())
}

fn start_cluster(a: StartArgs) -> Result<ExitCode> {
    if a.nodes == 0 || a.nodes > 9 {
        errln!(
            "runnel cluster local: --nodes must be 1 to 9, got {}",
            a.nodes
        );
        return Ok(ExitCode::from(2));
    }
    if let Ok(old) = read_state(&a.dir) {
        let running: Vec<String> = old
            .nodes
            .iter()
            .filter(|n| alive(n.pid))
            .map(|n| format!("node {} (pid {})", n.id, n.pid))
            .collect();
        if !running.is_empty() {
            return Err(format!(
                "a cluster in {} is running: {}; stop it first with `runnel cluster local stop --dir {}`",
                a.dir.display(),
                running.join(", "),
                a.dir.display()
            ));
        }
    }
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the runnel executable: {e}"))?;
    std::fs::create_dir_all(&a.dir)
        .map_err(|e| format!("cannot create {}: {e}", a.dir.display()))?;
    let voters: Vec<String> = (1..=a.nodes)
        .map(|id| format!("{id}@127.0.0.1:{}", a.controller_base_port + id - 1))
        .collect();
    let secured = match a.security {
        crate::cluster_security::Mode::Plaintext => None,
        crate::cluster_security::Mode::SaslSsl => Some(crate::cluster_security::prepare(
            &a.dir,
            a.nodes,
            a.base_port,
        )?),
    };
    let mut state = State {
        launcher_pid: (!a.detach).then(std::process::id),
        nodes: Vec::new(),
        client_config: secured.as_ref().map(|s| s.client_config()),
    };
    let mut children: HashMap<u32, Child> = HashMap::new();
    let mut pending = Vec::new();
    catch_stop_signals();
    for id in 1..=a.nodes {
        let log = a.dir.join(format!("node-{id}.log"));
        // A fresh start begins a fresh log; restarts append.
        std::fs::write(&log, b"").map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let mut node = NodeState {
            id,
            pid: 0,
            kafka: format!("127.0.0.1:{}", a.base_port + id - 1),
            controller: format!("127.0.0.1:{}", a.controller_base_port + id - 1),
            http: String::new(),
            data_dir: a.dir.join(format!("node-{id}")),
            log: log.clone(),
            args: node_args(&a, id, &voters.join(","), secured.as_ref()),
        };
        match spawn_node(&exe, &node) {
            Ok((child, offset)) => {
                node.pid = child.id();
                pending.push((id, node.pid, log.clone(), offset));
                children.insert(node.pid, child);
            }
            Err(e) => {
                stop_all(&state, &mut children);
                return Err(e);
            }
        }
        errln!(
            "starting node {id} (pid {}, log: {})",
            node.pid,
            log.display()
        );
        state.nodes.push(node);
    }
    write_state(&a.dir, &state)?;
    let up = match wait_started(&pending, http_wanted(&a.overrides), &mut children) {
        Ok(up) => up,
        Err(e) => {
            stop_all(&state, &mut children);
            return Err(e);
        }
    };
    for node in &mut state.nodes {
        if let Some(s) = up.get(&node.id) {
            node.kafka = s.kafka.clone().unwrap_or_else(|| node.kafka.clone());
            node.http = s.http.clone().unwrap_or_default();
        }
    }
    write_state(&a.dir, &state)?;
    let bootstrap: Vec<&str> = state.nodes.iter().map(|n| n.kafka.as_str()).collect();
    crate::output::stdout_line_lossy(format_args!(
        "cluster up: bootstrap.servers={}",
        bootstrap.join(",")
    ));
    for line in status_table(&state).lines() {
        crate::output::stdout_line_lossy(format_args!("{line}"));
    }
    let dir = a.dir.display();
    if a.detach {
        errln!("nodes keep running; `runnel cluster local status|stop --dir {dir}`");
        // The nodes are in their own process groups and reaped by init once we exit.
        return Ok(ExitCode::SUCCESS);
    }
    errln!(
        "Ctrl-C stops the cluster; from another shell: runnel cluster local status|stop|restart --node N|kill --node N --dir {dir}"
    );
    watch(&a.dir, state.clone(), &mut children);
    let mut state = read_state(&a.dir).unwrap_or(state);
    stop_all(&state, &mut children);
    state.launcher_pid = None;
    let _ = write_state(&a.dir, &state);
    Ok(ExitCode::SUCCESS)
}

/// Set by SIGINT/SIGTERM once the launcher installed its handler.
static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_signal: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP_REQUESTED.store(true, Ordering::SeqCst);
}

/// From here on SIGINT and SIGTERM ask the launcher to stop its nodes instead of killing
/// it at once (which would leave them running, in their own process groups).
fn catch_stop_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe {
            libc::signal(
                sig,
                request_stop as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}

/// Blocks until SIGINT/SIGTERM, reporting each node that dies once (and once when it runs
/// again after `restart`), reaping the children it started.
fn watch(dir: &Path, mut state: State, children: &mut HashMap<u32, Child>) {
    let mut statuses: HashMap<u32, std::process::ExitStatus> = HashMap::new();
    // Per node, the pid last reported dead.
    let mut reported: HashMap<u16, u32> = HashMap::new();
    while !STOP_REQUESTED.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
        statuses.extend(reap(children));
        if let Ok(s) = read_state(dir) {
            state = s;
        }
        for n in &state.nodes {
            match (alive(n.pid), reported.get(&n.id)) {
                (false, Some(&pid)) if pid == n.pid => {}
                (false, _) => {
                    let how = statuses
                        .get(&n.pid)
                        .map(|s| format!(" ({s})"))
                        .unwrap_or_default();
                    errln!(
                        "node {} (pid {}) exited{how}; the others keep running; \
                         `runnel cluster local restart --node {} --dir {}` starts it again",
                        n.id,
                        n.pid,
                        n.id,
                        dir.display()
                    );
                    reported.insert(n.id, n.pid);
                }
                (true, Some(_)) => {
                    errln!("node {} runs again (pid {})", n.id, n.pid);
                    reported.remove(&n.id);
                }
                (true, None) => {}
            }
        }
    }
}

/// Stops every node, one at a time (each does a controlled shutdown while the others can
/// still take its partitions).
fn stop_all(state: &State, children: &mut HashMap<u32, Child>) {
    for node in &state.nodes {
        stop_node(node, children);
    }
    reap(children);
}

fn status_table(state: &State) -> String {
    let mut s = format!(
        "{:<6}{:<9}{:<9}{:<22}{:<22}{:<22}{}\n",
        "NODE", "PID", "STATE", "KAFKA", "QUORUM", "HTTP", "DATA DIR (LOG)"
    );
    for n in &state.nodes {
        s.push_str(&format!(
            "{:<6}{:<9}{:<9}{:<22}{:<22}{:<22}{} ({})\n",
            n.id,
            n.pid,
            if alive(n.pid) { "running" } else { "stopped" },
            n.kafka,
            n.controller,
            if n.http.is_empty() { "-" } else { &n.http },
            n.data_dir.display(),
            n.log.display()
        ));
    }
    if let Some(c) = &state.client_config {
        s.push_str(&format!(
            "secured (SASL_SSL, HTTPS with Basic auth): client config {}\n",
            c.display()
        ));
    }
    s
}

fn status(dir: &Path, json: bool) -> Result<ExitCode> {
    let state = read_state(dir)?;
    if json {
        let nodes: Vec<serde_json::Value> = state
            .nodes
            .iter()
            .map(|n| {
                let mut v = serde_json::to_value(n).unwrap_or_default();
                v["running"] = alive(n.pid).into();
                v
            })
            .collect();
        outln!(
            "{}",
            serde_json::json!({
                "launcher_pid": state.launcher_pid.filter(|&p| alive(p)),
                "bootstrap_servers": state.nodes.iter().map(|n| n.kafka.as_str()).collect::<Vec<_>>().join(","),
                "client_config": state.client_config,
                "nodes": nodes,
            })
        );
    } else {
        out!("{}", status_table(&state));
    }
    Ok(ExitCode::SUCCESS)
}

fn stop(dir: &Path) -> Result<ExitCode> {
    let state = read_state(dir)?;
    let mut children = HashMap::new();
    // A foreground launcher stops its nodes itself (and must not report them as dead).
    if let Some(pid) = state.launcher_pid.filter(|&p| alive(p)) {
        signal(pid, libc::SIGTERM);
        let deadline = Instant::now() + STOP_DEADLINE * (state.nodes.len() as u32 + 1);
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let state = read_state(dir).unwrap_or(state);
    stop_all(&state, &mut children);
    let mut state = state;
    state.launcher_pid = None;
    write_state(dir, &state)?;
    errln!("stopped {} node(s) in {}", state.nodes.len(), dir.display());
    Ok(ExitCode::SUCCESS)
}

fn find_node(state: &State, id: u16) -> Result<usize> {
    state.nodes.iter().position(|n| n.id == id).ok_or_else(|| {
        format!(
            "there is no node {id}; the nodes are {}",
            state
                .nodes
                .iter()
                .map(|n| n.id.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

fn kill(a: &NodeArg) -> Result<ExitCode> {
    let state = read_state(&a.dir.dir)?;
    let node = &state.nodes[find_node(&state, a.node)?];
    if !alive(node.pid) {
        errln!("node {} is not running", node.id);
        return Ok(ExitCode::SUCCESS);
    }
    signal(node.pid, libc::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(node.pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    errln!("killed node {} (pid {}, SIGKILL)", node.id, node.pid);
    Ok(ExitCode::SUCCESS)
}

fn restart(a: &NodeArg) -> Result<ExitCode> {
    let dir = &a.dir.dir;
    let mut state = read_state(dir)?;
    let i = find_node(&state, a.node)?;
    let mut children = HashMap::new();
    stop_node(&state.nodes[i], &mut children);
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the runnel executable: {e}"))?;
    let (child, offset) = spawn_node(&exe, &state.nodes[i])?;
    let pid = child.id();
    // Not kept as our child: the node outlives this command (init reaps it).
    drop(child);
    state.nodes[i].pid = pid;
    write_state(dir, &state)?;
    let node = &state.nodes[i];
    let want_http = !node.http.is_empty();
    let up = wait_started(
        &[(node.id, pid, node.log.clone(), offset)],
        want_http,
        &mut children,
    )?;
    if let Some(http) = up.get(&node.id).and_then(|s| s.http.clone()) {
        state.nodes[i].http = http;
        write_state(dir, &state)?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_lines_are_found_in_a_log() {
        let log =
            "2026 INFO starting\nlistening on 127.0.0.1:9092\nhttp listening on 127.0.0.1:9644\n";
        assert_eq!(
            parse_started(log),
            Started {
                kafka: Some("127.0.0.1:9092".into()),
                http: Some("127.0.0.1:9644".into())
            }
        );
        assert_eq!(parse_started("INFO nothing yet\n"), Started::default());
    }

    #[test]
    fn http_is_off_only_when_the_last_override_empties_it() {
        assert!(http_wanted(&[]));
        assert!(!http_wanted(&["http.listeners=".into()]));
        assert!(http_wanted(&[
            "http.listeners=".into(),
            "http.listeners=127.0.0.1:0".into()
        ]));
    }

    #[test]
    fn node_args_number_ports_from_the_bases() {
        let a = StartArgs {
            nodes: 3,
            dir: "d".into(),
            base_port: 9092,
            controller_base_port: 19093,
            http_base_port: Some(9644),
            overrides: vec!["x=1".into()],
            detach: false,
            security: crate::cluster_security::Mode::Plaintext,
        };
        let args = node_args(&a, 2, "v", None).join(" ");
        assert!(args.starts_with("server --set node.id=2 "), "{args}");
        assert!(
            args.contains("listeners=PLAINTEXT://127.0.0.1:9093"),
            "{args}"
        );
        assert!(args.contains("http.listeners=127.0.0.1:9645"), "{args}");
        assert!(args.ends_with("--set x=1"), "{args}");
        let free = StartArgs {
            http_base_port: Some(0),
            ..a
        };
        assert!(node_args(&free, 2, "v", None)
            .join(" ")
            .contains("http.listeners=127.0.0.1:0"));
        let secured = crate::cluster_security::Secured { dir: "/s".into() };
        let args = node_args(&free, 2, "v", Some(&secured)).join(" ");
        assert!(
            args.starts_with("server --config /s/node-2.properties --set controller.listener.names=CONTROLLER --set listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SASL_SSL --set node.id=2 "),
            "{args}"
        );
        assert!(
            args.contains("listeners=SASL_SSL://127.0.0.1:9093,CONTROLLER://127.0.0.1:"),
            "{args}"
        );
        assert!(
            args.contains("http.listeners=https://127.0.0.1:0"),
            "{args}"
        );
    }

    #[test]
    fn state_round_trips_and_dead_pids_are_not_alive() {
        let dir = tempfile::tempdir().unwrap();
        let state = State {
            launcher_pid: None,
            nodes: vec![NodeState {
                id: 1,
                pid: std::process::id(),
                kafka: "k".into(),
                controller: "c".into(),
                http: String::new(),
                data_dir: "d".into(),
                log: "l".into(),
                args: vec!["server".into()],
            }],
            client_config: Some("/s/client.properties".into()),
        };
        write_state(dir.path(), &state).unwrap();
        assert_eq!(read_state(dir.path()).unwrap(), state);
        assert!(alive(std::process::id()));
        assert!(!alive(0));
        let err = read_state(&dir.path().join("none")).unwrap_err();
        assert!(err.contains("runnel cluster local --dir"), "{err}");
    }
}
