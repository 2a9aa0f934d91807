//! Runnel's Kafka-compatible broker, in layers, lowest first (storage names only the
//! shared pieces, coordinators only those and storage: the `layering` tests; the crate's
//! README says where the upper layers bend the rule):
//!
//! - shared pieces: `error`, `config`, `metrics`, `fds` (the descriptor budget);
//! - `storage`: partitions, their logs, replica state and the topic registry;
//! - `coordinators`: groups, transactions, share groups (state in internal topics);
//! - `broker` (the node: storage and coordinators together, producer ids, identity),
//!   `authz`, `cluster` (the metadata quorum link, follower fetchers, markers), `mirror`;
//! - `handlers`: one module per Kafka API family;
//! - `server` (listeners, connections, authentication, quotas) and `http`.
//!
//! `Server::start` binds the listeners and opens storage; `Server::run` serves the Kafka
//! protocol until its shutdown future completes. Storage is `runnel-log`; wire types and
//! guarded decoding are `runnel-protocol`.

pub mod config;
pub mod error;
pub mod fds;
pub mod metrics;

pub mod storage;

pub mod coordinators;

pub mod authz;
pub mod broker;
pub mod cluster;
pub mod mirror;

mod handlers;

pub mod http;
pub mod server;

pub use broker::Broker;
pub use config::{BrokerConfig, ConfigError};
pub use error::{BrokerError, ErrorCode};
pub use server::Server;

#[cfg(test)]
mod layering {
    //! The layer rule of this crate's doc, checked on the sources: a module of a lower
    //! layer names no module of a higher one (comments aside).

    use std::path::Path;

    /// Every `crate::<module>` a file's code (not its comments) names.
    fn crate_paths(file: &Path) -> Vec<(usize, String)> {
        let text = std::fs::read_to_string(file).expect("read a source file");
        let mut found = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for (i, _) in code.match_indices("crate::") {
                let rest = &code[i + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                found.push((n + 1, name));
            }
        }
        found
    }

    fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read a source dir") {
            let path = entry.expect("a dir entry").path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    fn check(layer: &str, allowed: &[&str]) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&root.join(layer), &mut files);
        assert!(!files.is_empty(), "no sources under src/{layer}");
        let mut wrong = Vec::new();
        for file in files {
            for (line, name) in crate_paths(&file) {
                if !allowed.contains(&name.as_str()) {
                    wrong.push(format!("{}:{line}: crate::{name}", file.display()));
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "src/{layer} may name only crate::{{{}}}; found:\n{}",
            allowed.join(", "),
            wrong.join("\n")
        );
    }

    const SHARED: [&str; 4] = ["error", "config", "metrics", "fds"];

    #[test]
    fn storage_names_only_the_shared_pieces() {
        check("storage", &[&SHARED[..], &["storage"]].concat());
    }

    #[test]
    fn coordinators_name_only_storage_and_the_shared_pieces() {
        check(
            "coordinators",
            &[&SHARED[..], &["storage", "coordinators"]].concat(),
        );
    }
}
