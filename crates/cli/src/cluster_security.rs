//! `runnel cluster local --security sasl_ssl`: a secured local cluster for trying TLS and
//! SASL. Throwaway certificates (a CA and one certificate per node, for 127.0.0.1 and
//! localhost) are made with the `openssl` command; the brokers serve SASL_SSL (PLAIN and
//! SCRAM) between clients and each other, and the HTTP API over HTTPS with Basic auth;
//! user `admin` gets a generated password, printed once and written to
//! `<dir>/security/client.properties` (librdkafka keys: `kcat -F`, confluent-kafka,
//! `runnel ... --command-config`). The metadata quorum's port is the CONTROLLER listener,
//! SASL_SSL too (PLAIN, `sasl.mechanism.controller.protocol`): Raft between the voters
//! and the brokers' controller requests are encrypted and authenticated.
//!
//! Everything lives in `<dir>/security/` (files 0600 where they hold a secret) and is
//! reused by later starts of the same directory.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

type Result<T> = std::result::Result<T, String>;

/// The `--security` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// No TLS, no authentication (the default).
    Plaintext,
    /// TLS and SASL (PLAIN, SCRAM-SHA-256/512) on the Kafka listeners, HTTPS with Basic auth.
    #[value(name = "sasl_ssl", alias = "sasl-ssl")]
    SaslSsl,
}

/// The generated material of a secured cluster.
#[derive(Debug, Clone)]
pub struct Secured {
    pub dir: PathBuf,
}

const CLIENT_FILE: &str = "client.properties";
const ADMIN: &str = "admin";

impl Secured {
    pub fn client_config(&self) -> PathBuf {
        self.dir.join(CLIENT_FILE)
    }

    fn node_config(&self, id: u16) -> PathBuf {
        self.dir.join(format!("node-{id}.properties"))
    }

    /// The `runnel server` arguments that secure node `id` (its listener and HTTP
    /// addresses are set by the caller with the `https://` scheme).
    pub fn node_args(&self, id: u16) -> Vec<String> {
        vec![
            "--config".into(),
            self.node_config(id).display().to_string(),
        ]
    }
}

/// Makes (or reuses) `<dir>/security/` for `nodes` nodes whose Kafka ports start at
/// `base_port`; prints the admin password when it is new.
pub fn prepare(dir: &Path, nodes: u16, base_port: u16) -> Result<Secured> {
    let dir = std::fs::canonicalize(dir)
        .map_err(|e| format!("cannot resolve {}: {e}", dir.display()))?
        .join("security");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let s = Secured { dir: dir.clone() };
    let ca = dir.join("ca.pem");
    if !ca.exists() {
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "365",
                "-subj",
                "/CN=runnel-cluster-local-ca",
            ],
        )?;
    }
    for id in 1..=nodes {
        let keystore = dir.join(format!("node-{id}-keystore.pem"));
        if keystore.exists() {
            continue;
        }
        let name = format!("node-{id}");
        std::fs::write(
            dir.join(format!("{name}.ext")),
            "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .map_err(|e| format!("cannot write in {}: {e}", dir.display()))?;
        openssl(
            &dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN=runnel-{name}"),
            ],
        )?;
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                "365",
                "-extfile",
                &format!("{name}.ext"),
            ],
        )?;
        let key = read(&dir.join(format!("{name}.key")))?;
        let cert = read(&dir.join(format!("{name}.pem")))?;
        write_secret(&keystore, &(key + &cert))?;
    }
    let client = s.client_config();
    let password = match existing_password(&client) {
        Some(p) => p,
        None => {
            let p: String = runnel_client::security::random_bytes(16)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            crate::output::stdout_line_lossy(format_args!(
                "generated user {ADMIN} with password {p} (shown once; also in {})",
                client.display()
            ));
            p
        }
    };
    let bootstrap: Vec<String> = (0..nodes)
        .map(|i| format!("127.0.0.1:{}", base_port + i))
        .collect();
    write_secret(
        &client,
        &format!(
            "# runnel cluster local --security sasl_ssl: librdkafka keys (kcat -F, confluent-kafka,\n\
             # runnel <tool> --command-config). The HTTP API takes the same user with Basic auth.\n\
             bootstrap.servers={}\n\
             security.protocol=SASL_SSL\n\
             sasl.mechanism=PLAIN\n\
             sasl.username={ADMIN}\n\
             sasl.password={password}\n\
             ssl.ca.location={}\n",
            bootstrap.join(","),
            ca.display()
        ),
    )?;
    let jaas = format!(
        "org.apache.kafka.common.security.plain.PlainLoginModule required \
         username=\"{ADMIN}\" password=\"{password}\" user_{ADMIN}=\"{password}\";"
    );
    for id in 1..=nodes {
        write_secret(
            &s.node_config(id),
            &format!(
                "# Written by runnel cluster local --security sasl_ssl.\n\
                 ssl.keystore.type=PEM\n\
                 ssl.keystore.location={}\n\
                 ssl.truststore.type=PEM\n\
                 ssl.truststore.location={}\n\
                 sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512\n\
                 sasl.mechanism.inter.broker.protocol=PLAIN\n\
                 sasl.mechanism.controller.protocol=PLAIN\n\
                 sasl.jaas.config={jaas}\n\
                 http.authentication.method=BASIC\n",
                dir.join(format!("node-{id}-keystore.pem")).display(),
                ca.display()
            ),
        )?;
    }
    Ok(s)
}

fn existing_password(client: &Path) -> Option<String> {
    std::fs::read_to_string(client).ok()?.lines().find_map(|l| {
        l.strip_prefix("sasl.password=")
            .map(|p| p.trim().to_string())
    })
}

fn read(p: &Path) -> Result<String> {
    std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
}

/// Writes `text` to `path`, readable by its owner only.
fn write_secret(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| {
            format!(
                "--security sasl_ssl makes test certificates with the openssl command, which cannot run ({e}); install it (apt-get install openssl) or run without --security"
            )
        })?;
    if !out.status.success() {
        return Err(format!(
            "openssl {} failed: {}",
            args.first().unwrap_or(&""),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makes_certificates_configs_and_a_client_file_once() {
        let d = tempfile::tempdir().unwrap();
        let s = prepare(d.path(), 2, 9100).unwrap();
        let client = std::fs::read_to_string(s.client_config()).unwrap();
        assert!(
            client.contains("bootstrap.servers=127.0.0.1:9100,127.0.0.1:9101\n"),
            "{client}"
        );
        assert!(client.contains("security.protocol=SASL_SSL\n"));
        let password = existing_password(&s.client_config()).unwrap();
        assert_eq!(password.len(), 32);
        let node2 = std::fs::read_to_string(s.node_config(2)).unwrap();
        assert!(node2.contains("node-2-keystore.pem") && node2.contains(&password));
        assert!(node2.contains("sasl.mechanism.controller.protocol=PLAIN\n"));
        let mode = std::fs::metadata(s.client_config()).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o077,
            0
        );
        // A second start reuses the password and the certificates.
        let ca = std::fs::read(s.dir.join("ca.pem")).unwrap();
        let again = prepare(d.path(), 2, 9100).unwrap();
        assert_eq!(existing_password(&again.client_config()).unwrap(), password);
        assert_eq!(std::fs::read(s.dir.join("ca.pem")).unwrap(), ca);
    }
}
