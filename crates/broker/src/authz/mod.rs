//! Authorization (Kafka's ACLs) and the audit of denials.
//!
//! - `acl`: the vocabulary (resource types, operations, bindings, filters);
//! - `authorizer`: the decision (`StandardAuthorizer` semantics), pure logic;
//! - `store`: where ACLs persist (the metadata log);
//! - this module: the broker's `Authz` (config + current ACLs + audit) and `Ctx`, what a
//!   handler asks ("may this connection do OP on RESOURCE?").
//!
//! Invariant: every API authorizes before it touches state; a check is one call on the
//! request's `Ctx`, made once per resource in the handler. With no
//! `authorizer.class.name` every check passes and nothing is logged.
//!
//! Thread-safe: the ACL set is an `Arc` snapshot swapped under a lock; checks clone the
//! `Arc` and never block a writer for long.

pub mod acl;
pub mod authorizer;
pub mod store;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use runnel_protocol::kp::messages::ApiKey;

use crate::broker::Broker;
use crate::config::ConfigError;
use crate::error::{BrokerError, ErrorCode};
use acl::{AclBinding, AclFilter, Operation, ResourceType, CLUSTER_NAME};
use authorizer::{Policy, Who};

/// The `authorizer.class.name` values Runnel accepts (both mean the same authorizer).
pub const AUTHORIZER_CLASSES: &[&str] = &[
    "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "kafka.security.authorizer.AclAuthorizer",
];

/// Denial log lines written per second at most; the rest are counted and summarized.
const AUDIT_LINES_PER_SECOND: u32 = 20;

/// The authorization keys of server.properties.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthzConfig {
    /// `authorizer.class.name` set to an accepted class.
    pub enabled: bool,
    pub policy: Policy,
}

impl AuthzConfig {
    /// Takes `key` if it is an authorization key: Ok(false) for another key.
    pub fn set(&mut self, key: &str, value: &str) -> Result<bool, ConfigError> {
        match key {
            "authorizer.class.name" => {
                let v = value.trim();
                if !v.is_empty() && !AUTHORIZER_CLASSES.contains(&v) {
                    return Err(ConfigError::InvalidValue {
                        key: key.into(),
                        value: value.into(),
                        reason: format!(
                            "unknown authorizer; Runnel accepts {} (empty for none)",
                            AUTHORIZER_CLASSES.join(" or ")
                        ),
                    });
                }
                self.enabled = !v.is_empty();
            }
            "super.users" => {
                self.policy.super_users = value
                    .split(';')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
                if let Some(bad) = self.policy.super_users.iter().find(|s| !s.contains(':')) {
                    return Err(ConfigError::InvalidValue {
                        key: key.into(),
                        value: value.into(),
                        reason: format!(
                            "'{bad}' is not a principal: expected Type:name, e.g. User:admin"
                        ),
                    });
                }
            }
            "allow.everyone.if.no.acl.found" => {
                self.policy.allow_if_no_acl = match value.trim() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(ConfigError::InvalidValue {
                            key: key.into(),
                            value: value.into(),
                            reason: "expected true or false".into(),
                        })
                    }
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// The broker's authorization state. Thread-safe.
pub struct Authz {
    pub config: AuthzConfig,
    /// False in a cluster until the metadata image has been applied once: until then
    /// the ACLs are unknown and only super users are allowed (fail closed).
    loaded: std::sync::atomic::AtomicBool,
    acls: RwLock<Arc<Vec<AclBinding>>>,
    store: store::RecordStore,
    audit: Audit,
}

/// Where ACLs live: `acl:` records (formerly `acls.json` on a single node).
pub fn acl_store() -> store::RecordStore {
    store::RecordStore::new("acl:", "acls.json")
}

impl Authz {
    /// No ACLs until the first metadata image is applied (only super users pass).
    pub fn open(config: AuthzConfig) -> Authz {
        let authz = Authz {
            config,
            loaded: std::sync::atomic::AtomicBool::new(false),
            acls: RwLock::new(Arc::new(Vec::new())),
            store: acl_store(),
            audit: Audit::default(),
        };
        if authz.enabled() {
            tracing::info!(
                acls = authz.acls().len(),
                super_users = ?authz.config.policy.super_users,
                allow_everyone_if_no_acl_found = authz.config.policy.allow_if_no_acl,
                "authorizer on (Kafka StandardAuthorizer semantics)"
            );
        }
        authz
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// The ACLs in force (a snapshot).
    pub fn acls(&self) -> Arc<Vec<AclBinding>> {
        self.acls.read().clone()
    }

    /// Rebuilds the ACL snapshot from the store. A malformed record is logged and
    /// skipped (it can only come from a newer or damaged metadata log).
    fn reload(&self) {
        let mut acls: Vec<AclBinding> = self
            .store
            .entries()
            .keys()
            .filter_map(|k| match serde_json::from_str(k) {
                Ok(a) => Some(a),
                Err(e) => {
                    tracing::error!(record = %k, error = %e, "malformed ACL record skipped");
                    None
                }
            })
            .collect();
        acls.sort();
        *self.acls.write() = Arc::new(acls);
    }

    /// In a cluster: takes the ACLs from a new metadata image (`applied_index` 0 is the
    /// empty image a node has before it heard from the quorum or read its log).
    pub fn apply_image(&self, image_configs: &BTreeMap<String, String>, applied_index: u64) {
        if self.store.apply_image(image_configs) {
            self.reload();
        }
        if applied_index > 0 && !self.loaded.swap(true, std::sync::atomic::Ordering::AcqRel) {
            tracing::info!(
                acls = self.acls().len(),
                "ACLs loaded from the metadata log"
            );
        }
    }

    fn is_loaded(&self) -> bool {
        self.loaded.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Adds bindings (already validated); an existing one is left as it is.
    pub fn create_acls(&self, broker: &Broker, acls: &[AclBinding]) -> Result<(), BrokerError> {
        let changes = acls
            .iter()
            .map(|a| (binding_key(a), Some(String::new())))
            .collect();
        self.store.commit(broker, changes)?;
        self.reload();
        tracing::info!(count = acls.len(), "ACLs created");
        Ok(())
    }

    /// Deletes the bindings that match any of `filters`; returns, per filter, the
    /// bindings it matched (all of them are gone when this returns Ok).
    pub fn delete_acls(
        &self,
        broker: &Broker,
        filters: &[AclFilter],
    ) -> Result<Vec<Vec<AclBinding>>, BrokerError> {
        let acls = self.acls();
        let matched: Vec<Vec<AclBinding>> = filters
            .iter()
            .map(|f| acls.iter().filter(|a| f.matches(a)).cloned().collect())
            .collect();
        let changes = matched
            .iter()
            .flatten()
            .map(|a| (binding_key(a), None))
            .collect();
        self.store.commit(broker, changes)?;
        self.reload();
        tracing::info!(
            count = matched.iter().map(Vec::len).sum::<usize>(),
            "ACLs deleted"
        );
        Ok(matched)
    }

    /// Denials so far by (resource type, operation), for `/metrics`.
    pub fn denials(&self) -> Vec<(ResourceType, Operation, u64)> {
        self.audit
            .counts
            .lock()
            .iter()
            .map(|((rt, op), n)| (*rt, *op, *n))
            .collect()
    }
}

/// A binding's record key: its canonical JSON (the set of keys is the set of ACLs).
fn binding_key(a: &AclBinding) -> String {
    serde_json::to_string(a).expect("an ACL binding serialises")
}

/// Counts every denial and logs them at INFO, at most `AUDIT_LINES_PER_SECOND` lines a
/// second (a flood of refused requests cannot fill the disk); the lines left out are
/// counted and reported by the next line written.
#[derive(Default)]
struct Audit {
    counts: Mutex<BTreeMap<(ResourceType, Operation), u64>>,
    limiter: Mutex<Option<(Instant, u32, u64)>>,
}

impl Audit {
    fn denied(&self, who: Who<'_>, api: ApiKey, op: Operation, rt: ResourceType, name: &str) {
        *self.counts.lock().entry((rt, op)).or_default() += 1;
        let now = Instant::now();
        let suppressed = {
            let mut l = self.limiter.lock();
            let (start, lines, suppressed) = l.get_or_insert((now, 0, 0));
            if now.duration_since(*start).as_secs() >= 1 {
                *start = now;
                *lines = 0;
            }
            if *lines >= AUDIT_LINES_PER_SECOND {
                *suppressed += 1;
                return;
            }
            *lines += 1;
            std::mem::take(suppressed)
        };
        // Kafka's authorizer logger line.
        tracing::info!(
            target: "kafka.authorizer.logger",
            principal = who.principal,
            host = who.host,
            operation = %op,
            resource_type = %rt,
            resource = name,
            api = ?api,
            suppressed_before = suppressed,
            "Principal = {} is Denied operation = {op} from host = {} on resource = {}:{} for request = {api:?}",
            who.principal,
            who.host,
            kafka_type_name(rt),
            name,
        );
    }
}

/// Kafka's `ResourceType.toString` spelling in authorizer log lines (`Topic`).
fn kafka_type_name(rt: ResourceType) -> &'static str {
    match rt {
        ResourceType::Topic => "Topic",
        ResourceType::Group => "Group",
        ResourceType::Cluster => "Cluster",
        ResourceType::TransactionalId => "TransactionalId",
        ResourceType::DelegationToken => "DelegationToken",
        ResourceType::User => "User",
        ResourceType::Any => "Any",
    }
}

/// What one request's handler asks the authorizer. Cheap to build and to clone (a
/// handler that answers later, such as Metadata in a cluster, takes it along).
#[derive(Clone)]
pub struct Ctx {
    broker: Arc<Broker>,
    principal: Arc<str>,
    peer: IpAddr,
    api: ApiKey,
}

impl Ctx {
    pub fn new(broker: &Arc<Broker>, conn: &crate::server::Conn, api: ApiKey) -> Ctx {
        Ctx {
            broker: broker.clone(),
            principal: conn.principal.clone(),
            peer: conn.peer.ip(),
            api,
        }
    }

    fn authz(&self) -> &Authz {
        &self.broker.authz
    }

    /// The KIP-430 bitfield of the operations of `supported` (a bitfield of operation
    /// codes) the connection may perform on the resource; `supported` itself when no
    /// authorizer is configured.
    pub fn authorized_bits(&self, rt: ResourceType, name: &str, supported: i32) -> i32 {
        if !self.enabled() {
            return supported;
        }
        Operation::ALL_VALUES
            .iter()
            .filter(|op| supported & (1 << op.code()) != 0)
            .filter(|op| self.visible(**op, rt, name))
            .fold(0, |bits, op| bits | (1 << op.code()))
    }

    /// Whether an authorizer is configured.
    pub fn enabled(&self) -> bool {
        self.authz().enabled()
    }

    /// Runs `decide` with the policy, the ACLs and who asks; true with no authorizer.
    fn with_policy(&self, decide: impl FnOnce(&Policy, &[AclBinding], Who<'_>) -> bool) -> bool {
        let authz = self.authz();
        if !authz.enabled() {
            return true;
        }
        let host = self.peer.to_string();
        let who = Who {
            principal: &self.principal,
            host: &host,
        };
        if !authz.is_loaded() {
            return authz.config.policy.is_super_user(&self.principal);
        }
        decide(&authz.config.policy, &authz.acls(), who)
    }

    fn decide(&self, op: Operation, rt: ResourceType, name: &str, audit: bool) -> bool {
        self.with_policy(|policy, acls, who| {
            let ok = policy.authorize(acls, who, op, rt, name);
            if !ok && audit {
                self.authz().audit.denied(who, self.api, op, rt, name);
            }
            ok
        })
    }

    /// May the connection do `op` on the resource? A denial is audited.
    pub fn allowed(&self, op: Operation, rt: ResourceType, name: &str) -> bool {
        self.decide(op, rt, name, true)
    }

    /// The same, for filtering a listing (Kafka does not log what it leaves out).
    pub fn visible(&self, op: Operation, rt: ResourceType, name: &str) -> bool {
        self.decide(op, rt, name, false)
    }

    pub fn topic(&self, op: Operation, name: &str) -> bool {
        self.allowed(op, ResourceType::Topic, name)
    }

    pub fn group(&self, op: Operation, name: &str) -> bool {
        self.allowed(op, ResourceType::Group, name)
    }

    pub fn cluster(&self, op: Operation) -> bool {
        self.allowed(op, ResourceType::Cluster, CLUSTER_NAME)
    }

    /// A check of `op` on topics that outlives the request (a consumer's subscription
    /// regex is resolved again as topics come and go), as `visible` decides it (not
    /// audited: Kafka filters regex matches silently). Holds the broker weakly; once the
    /// broker is gone it allows nothing.
    pub fn topic_filter(
        &self,
        op: Operation,
    ) -> crate::coordinators::groups::consumer::TopicFilter {
        if !self.enabled() {
            return crate::coordinators::groups::consumer::TopicFilter::all();
        }
        let broker = Arc::downgrade(&self.broker);
        let (principal, peer, api) = (self.principal.clone(), self.peer, self.api);
        crate::coordinators::groups::consumer::TopicFilter::new(move |name| {
            broker.upgrade().is_some_and(|broker| {
                let az = Ctx {
                    broker,
                    principal: principal.clone(),
                    peer,
                    api,
                };
                az.visible(op, ResourceType::Topic, name)
            })
        })
    }

    /// `op` on at least one resource of the type (Kafka's authorizeByResourceType).
    pub fn any_of_type(&self, op: Operation, rt: ResourceType) -> bool {
        self.with_policy(|policy, acls, who| policy.authorize_any(acls, who, op, rt))
    }

    /// Ok, or the error Kafka answers when `op` on the resource is denied.
    pub fn require(&self, op: Operation, rt: ResourceType, name: &str) -> Result<(), BrokerError> {
        if self.allowed(op, rt, name) {
            return Ok(());
        }
        Err(denied_error(rt, op, name))
    }
}

/// Kafka's authorization error for a resource type.
pub fn denied_code(rt: ResourceType) -> ErrorCode {
    match rt {
        ResourceType::Topic => ErrorCode::TopicAuthorizationFailed,
        ResourceType::Group => ErrorCode::GroupAuthorizationFailed,
        ResourceType::TransactionalId => ErrorCode::TransactionalIdAuthorizationFailed,
        _ => ErrorCode::ClusterAuthorizationFailed,
    }
}

pub fn denied_error(rt: ResourceType, op: Operation, name: &str) -> BrokerError {
    BrokerError::new(
        denied_code(rt),
        format!("not authorized to {op} {rt} '{name}'"),
    )
}
