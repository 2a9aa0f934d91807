//! Client quotas (Kafka's `ClientQuotaManager`, KIP-55/KIP-124/KIP-599):
//! `producer_byte_rate`, `consumer_byte_rate`, `request_percentage` and
//! `controller_mutation_rate`, set per user, client id, or both, with defaults, through
//! AlterClientQuotas and read back with DescribeClientQuotas.
//!
//! - Where they persist: like ACLs (`authz::store`), `quota:` records in the metadata
//!   log.
//! - Which quota applies: Kafka's precedence over the 8 levels (user+client, user+default
//!   client, user, default user+client, default user+default client, default user,
//!   client, default client); the first level that sets the key wins, and the
//!   principals/clients that fall on the same level entry share one rate sensor.
//! - The rate: a windowed rate over `quota.window.num` (11) windows of
//!   `quota.window.size.seconds` (1 s), as Kafka's `Rate` (at least n-1 full windows);
//!   over the bound, the throttle time is `(rate - bound) / bound * window`, Kafka's
//!   `QuotaUtils.throttleTime`.
//!
//! Thread-safe: quotas behind a read-write lock, sensors behind a mutex (short holds).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use crate::authz::store::RecordStore;
use crate::broker::Broker;
use crate::config::ConfigError;
use crate::error::{BrokerError, ErrorCode};

pub const PRODUCER_BYTE_RATE: &str = "producer_byte_rate";
pub const CONSUMER_BYTE_RATE: &str = "consumer_byte_rate";
pub const REQUEST_PERCENTAGE: &str = "request_percentage";
pub const CONTROLLER_MUTATION_RATE: &str = "controller_mutation_rate";
/// The quota keys Runnel enforces (Kafka's client quota keys).
pub const KEYS: &[&str] = &[
    PRODUCER_BYTE_RATE,
    CONSUMER_BYTE_RATE,
    REQUEST_PERCENTAGE,
    CONTROLLER_MUTATION_RATE,
];
pub const USER: &str = "user";
pub const CLIENT_ID: &str = "client-id";

/// Sensors kept at most (one per active entity and key); the idle ones go first.
const MAX_SENSORS: usize = 100_000;

/// `quota.window.num`, `quota.window.size.seconds`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaConfig {
    pub window_num: u32,
    pub window_size_s: u32,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig {
            window_num: 11,
            window_size_s: 1,
        }
    }
}

impl QuotaConfig {
    /// Takes `key` if it is a quota key: Ok(false) for another key.
    pub fn set(&mut self, key: &str, value: &str) -> Result<bool, ConfigError> {
        let slot = match key {
            "quota.window.num" => &mut self.window_num,
            "quota.window.size.seconds" => &mut self.window_size_s,
            _ => return Ok(false),
        };
        *slot = value
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| ConfigError::InvalidValue {
                key: key.into(),
                value: value.into(),
                reason: "expected an integer of at least 1".into(),
            })?;
        Ok(true)
    }
}

/// A quota entity: each part is (type, name), name None for the default. Sorted by type.
pub type Entity = Vec<(String, Option<String>)>;

/// Changes to one entity's quotas: (key, Some(value) to set, None to remove).
pub type QuotaOps = Vec<(String, Option<f64>)>;

/// Checks an entity as Kafka's AlterClientQuotas does and puts it in canonical order.
pub fn validate_entity(mut entity: Entity) -> Result<Entity, BrokerError> {
    let invalid = |m: String| BrokerError::new(ErrorCode::InvalidRequest, m);
    if entity.is_empty() {
        return Err(invalid("the quota entity is empty".into()));
    }
    for (t, name) in &entity {
        if t != USER && t != CLIENT_ID {
            return Err(invalid(format!(
                "unknown quota entity type '{t}': expected user or client-id"
            )));
        }
        if name.as_deref() == Some("") && t == USER {
            return Err(invalid("an empty user name is not a quota entity".into()));
        }
    }
    entity.sort();
    if entity.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(invalid(
            "an entity type appears twice in the quota entity".into(),
        ));
    }
    Ok(entity)
}

/// Checks a quota key and value.
pub fn validate_value(key: &str, value: f64) -> Result<(), BrokerError> {
    if !KEYS.contains(&key) {
        return Err(BrokerError::new(
            ErrorCode::InvalidRequest,
            format!(
                "unknown quota key '{key}': expected one of {}",
                KEYS.join(", ")
            ),
        ));
    }
    if !(value.is_finite() && value > 0.0) {
        return Err(BrokerError::new(
            ErrorCode::InvalidRequest,
            format!("quota '{key}' must be a positive number, not {value}"),
        ));
    }
    Ok(())
}

/// The 8 levels in Kafka's precedence order, for (user, client id).
fn levels(user: &str, client: &str) -> [Entity; 8] {
    let u = |n: Option<&str>| (USER.to_string(), n.map(String::from));
    let c = |n: Option<&str>| (CLIENT_ID.to_string(), n.map(String::from));
    [
        vec![c(Some(client)), u(Some(user))],
        vec![c(None), u(Some(user))],
        vec![u(Some(user))],
        vec![c(Some(client)), u(None)],
        vec![c(None), u(None)],
        vec![u(None)],
        vec![c(Some(client))],
        vec![c(None)],
    ]
}

/// Which quota applies to (user, client id) for `key`, and the entity whose sensor it is:
/// the first of the 8 levels that sets the key.
pub fn resolve(
    quotas: &BTreeMap<Entity, BTreeMap<String, f64>>,
    user: &str,
    client: &str,
    key: &str,
) -> Option<(f64, Entity)> {
    levels(user, client).into_iter().find_map(|level| {
        let bound = *quotas.get(&level)?.get(key)?;
        // The sensor is per concrete (user, client) under a default level, as in Kafka:
        // a default quota is each client's own, not shared.
        let sensor = level
            .into_iter()
            .map(|(t, n)| {
                let concrete = if t == USER { user } else { client };
                (t, Some(n.unwrap_or_else(|| concrete.to_string())))
            })
            .collect();
        Some((bound, sensor))
    })
}

/// Kafka's windowed `Rate`: samples of `window` each, `n` of them kept.
#[derive(Debug, Clone)]
struct Sensor {
    /// (window start, total recorded in it), oldest first.
    samples: std::collections::VecDeque<(Instant, f64)>,
    last_used: Instant,
}

impl Sensor {
    fn new(now: Instant) -> Sensor {
        Sensor {
            samples: Default::default(),
            last_used: now,
        }
    }

    fn record(&mut self, cfg: &QuotaConfig, now: Instant, value: f64) {
        let window = Duration::from_secs(u64::from(cfg.window_size_s));
        self.last_used = now;
        match self.samples.back_mut() {
            Some((start, total)) if now.duration_since(*start) < window => *total += value,
            _ => self.samples.push_back((now, value)),
        }
        self.purge(cfg, now);
    }

    fn purge(&mut self, cfg: &QuotaConfig, now: Instant) {
        let span = Duration::from_secs(u64::from(cfg.window_size_s) * u64::from(cfg.window_num));
        while self
            .samples
            .front()
            .is_some_and(|(start, _)| now.duration_since(*start) >= span)
        {
            self.samples.pop_front();
        }
    }

    /// The rate per second and the window it is measured over (Kafka's `Rate.measure`
    /// with `windowSize`: never less than n-1 full windows).
    fn rate(&mut self, cfg: &QuotaConfig, now: Instant) -> (f64, Duration) {
        self.purge(cfg, now);
        let window_ms = u64::from(cfg.window_size_s) * 1000;
        let oldest = self.samples.front().map_or(now, |(s, _)| *s);
        let mut elapsed_ms = now.duration_since(oldest).as_millis() as u64;
        let full = elapsed_ms / window_ms;
        let min_full = u64::from(cfg.window_num.saturating_sub(1));
        if full < min_full {
            elapsed_ms += (min_full - full) * window_ms;
        }
        let total: f64 = self.samples.iter().map(|(_, v)| v).sum();
        let window = Duration::from_millis(elapsed_ms.max(1));
        (total / window.as_secs_f64(), window)
    }
}

/// Kafka's `QuotaUtils.boundedThrottleTime`: at most the whole quota window
/// (`quota.window.num` x `quota.window.size.seconds`).
fn throttle_ms(cfg: &QuotaConfig, rate: f64, bound: f64, window: Duration) -> u64 {
    if rate <= bound {
        return 0;
    }
    let max_ms = u64::from(cfg.window_num) * u64::from(cfg.window_size_s) * 1000;
    let ms = (rate - bound) / bound * window.as_millis() as f64;
    (ms.round() as u64).min(max_ms)
}

/// The broker's quotas and their sensors. Thread-safe.
pub struct Quotas {
    pub config: QuotaConfig,
    store: RecordStore,
    quotas: RwLock<BTreeMap<Entity, BTreeMap<String, f64>>>,
    sensors: Mutex<HashMap<(Entity, &'static str), Sensor>>,
}

/// Where client quotas live: `quota:` records (formerly `client-quotas.json`).
pub fn quota_store() -> RecordStore {
    RecordStore::new("quota:", "client-quotas.json")
}

impl Quotas {
    /// No quotas until the first metadata image is applied.
    pub fn open(config: QuotaConfig) -> Quotas {
        Quotas {
            config,
            store: quota_store(),
            quotas: RwLock::new(BTreeMap::new()),
            sensors: Mutex::new(HashMap::new()),
        }
    }

    fn reload(&self) {
        let parsed = self
            .store
            .entries()
            .iter()
            .filter_map(|(k, v)| {
                let entity: Entity = serde_json::from_str(k).ok()?;
                let values: BTreeMap<String, f64> = serde_json::from_str(v).ok()?;
                Some((entity, values))
            })
            .collect();
        *self.quotas.write() = parsed;
    }

    /// In a cluster: takes the quotas from a new metadata image.
    pub fn apply_image(&self, image_configs: &BTreeMap<String, String>) {
        if self.store.apply_image(image_configs) {
            self.reload();
        }
    }

    /// Every entity with quotas.
    pub fn all(&self) -> BTreeMap<Entity, BTreeMap<String, f64>> {
        self.quotas.read().clone()
    }

    /// Applies (entity, key, Some(value) to set / None to remove) changes, persisted.
    pub fn alter(
        &self,
        broker: &Broker,
        changes: &[(Entity, QuotaOps)],
    ) -> Result<(), BrokerError> {
        let current = self.all();
        let mut records = BTreeMap::new();
        for (entity, ops) in changes {
            let mut values = current.get(entity).cloned().unwrap_or_default();
            for (k, v) in ops {
                match v {
                    Some(v) => values.insert(k.clone(), *v),
                    None => values.remove(k),
                };
            }
            let key = serde_json::to_string(entity).expect("entities serialise");
            let value = (!values.is_empty())
                .then(|| serde_json::to_string(&values).expect("quota maps serialise"));
            records.insert(key, value);
        }
        self.store.commit(broker, records)?;
        self.reload();
        tracing::info!(changes = ?changes, "client quotas changed");
        Ok(())
    }

    /// Whether any quota is set (the fast path skips everything when none is).
    pub fn any(&self) -> bool {
        !self.quotas.read().is_empty()
    }

    /// Records `value` against the quota `key` of (user, client id) and returns the
    /// throttle time in ms (0 when under the quota or no quota applies).
    pub fn record(&self, user: &str, client: &str, key: &'static str, value: f64) -> u64 {
        let Some((bound, entity)) = resolve(&self.quotas.read(), user, client, key) else {
            return 0;
        };
        let now = Instant::now();
        let mut sensors = self.sensors.lock();
        if sensors.len() >= MAX_SENSORS {
            let idle = Duration::from_secs(
                u64::from(self.config.window_size_s) * u64::from(self.config.window_num),
            );
            sensors.retain(|_, s| now.duration_since(s.last_used) < idle);
        }
        let s = sensors
            .entry((entity, key))
            .or_insert_with(|| Sensor::new(now));
        s.record(&self.config, now, value);
        let (rate, window) = s.rate(&self.config, now);
        throttle_ms(&self.config, rate, bound, window)
    }

    /// Whether the quota `key` of (user, client id) is already over its bound (KIP-599's
    /// check before a controller mutation), with the throttle time.
    pub fn exceeded(&self, user: &str, client: &str, key: &'static str) -> Option<u64> {
        let (bound, entity) = resolve(&self.quotas.read(), user, client, key)?;
        let now = Instant::now();
        let mut sensors = self.sensors.lock();
        let s = sensors.get_mut(&(entity, key))?;
        let (rate, window) = s.rate(&self.config, now);
        let ms = throttle_ms(&self.config, rate, bound, window);
        (ms > 0).then_some(ms)
    }
}

/// The quota user of a principal (`User:alice` is `alice`), as Kafka's `principal.getName`.
pub fn user_of(principal: &str) -> &str {
    principal.split_once(':').map_or(principal, |(_, n)| n)
}

/// A connection's mute (KIP-219): a throttled request's response goes out at once, and
/// the connection's next request is not read until the throttle time has passed.
/// Thread-safe.
#[derive(Debug, Default)]
pub struct Mute {
    until: Mutex<Option<tokio::time::Instant>>,
}

impl Mute {
    /// Mutes the connection for `ms` from now (a longer mute already set stays).
    pub fn mute_for(&self, ms: u64) {
        if ms == 0 {
            return;
        }
        let until = tokio::time::Instant::now() + Duration::from_millis(ms);
        let mut slot = self.until.lock();
        if slot.is_none_or(|u| u < until) {
            *slot = Some(until);
        }
    }

    /// Waits until the mute (if any) ends.
    pub async fn wait(&self) {
        let until = self.until.lock().take();
        if let Some(until) = until {
            tokio::time::sleep_until(until).await;
        }
    }
}

/// What one request's handler asks of the quotas: who (user, client id) and the
/// connection to mute. Cheap to build; does nothing when no quota is set.
#[derive(Clone)]
pub struct Ctx {
    broker: std::sync::Arc<Broker>,
    principal: std::sync::Arc<str>,
    client_id: Option<runnel_protocol::kp::protocol::StrBytes>,
    mute: std::sync::Arc<Mute>,
}

impl Ctx {
    pub fn new(
        broker: &std::sync::Arc<Broker>,
        conn: &crate::server::Conn,
        client_id: Option<&runnel_protocol::kp::protocol::StrBytes>,
    ) -> Ctx {
        Ctx {
            broker: broker.clone(),
            principal: conn.principal.clone(),
            client_id: client_id.cloned(),
            mute: conn.mute.clone(),
        }
    }

    fn client(&self) -> &str {
        self.client_id.as_deref().unwrap_or("")
    }

    /// Records `value` against the quota `key`, mutes the connection for the throttle
    /// time, and returns that time for the response's `throttle_time_ms`.
    pub fn record(&self, key: &'static str, value: f64) -> i32 {
        let quotas = &self.broker.quotas;
        if !quotas.any() {
            return 0;
        }
        let ms = quotas.record(user_of(&self.principal), self.client(), key, value);
        self.mute.mute_for(ms);
        ms as i32
    }

    /// KIP-599: Some(throttle ms) when the controller mutation quota is already used
    /// up (the request's topics are then refused THROTTLING_QUOTA_EXCEEDED).
    pub fn mutation_exceeded(&self) -> Option<u64> {
        let quotas = &self.broker.quotas;
        if !quotas.any() {
            return None;
        }
        let ms = quotas.exceeded(
            user_of(&self.principal),
            self.client(),
            CONTROLLER_MUTATION_RATE,
        )?;
        self.mute.mute_for(ms);
        Some(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(parts: &[(&str, Option<&str>)]) -> Entity {
        validate_entity(
            parts
                .iter()
                .map(|(t, n)| (t.to_string(), n.map(String::from)))
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn precedence_follows_kafkas_eight_levels() {
        let mut q: BTreeMap<Entity, BTreeMap<String, f64>> = BTreeMap::new();
        let set = |q: &mut BTreeMap<Entity, BTreeMap<String, f64>>, ent: Entity, v: f64| {
            q.entry(ent)
                .or_default()
                .insert(PRODUCER_BYTE_RATE.into(), v);
        };
        let levels: Vec<Entity> = vec![
            e(&[(USER, Some("u")), (CLIENT_ID, Some("c"))]),
            e(&[(USER, Some("u")), (CLIENT_ID, None)]),
            e(&[(USER, Some("u"))]),
            e(&[(USER, None), (CLIENT_ID, Some("c"))]),
            e(&[(USER, None), (CLIENT_ID, None)]),
            e(&[(USER, None)]),
            e(&[(CLIENT_ID, Some("c"))]),
            e(&[(CLIENT_ID, None)]),
        ];
        // Set from the lowest precedence up: each new level takes over.
        for (i, level) in levels.iter().enumerate().rev() {
            set(&mut q, level.clone(), (i + 1) as f64);
            let (bound, _) = resolve(&q, "u", "c", PRODUCER_BYTE_RATE).unwrap();
            assert_eq!(bound, (i + 1) as f64, "level {}", i + 1);
        }
        assert!(resolve(&q, "u", "c", CONSUMER_BYTE_RATE).is_none());
        // Another user falls to the default-user levels.
        let (bound, sensor) = resolve(&q, "v", "c", PRODUCER_BYTE_RATE).unwrap();
        assert_eq!(bound, 4.0);
        assert_eq!(sensor, e(&[(USER, Some("v")), (CLIENT_ID, Some("c"))]));
    }

    #[test]
    fn entities_and_values_are_validated() {
        assert!(validate_entity(vec![]).is_err());
        assert!(validate_entity(vec![("ip".into(), Some("1.2.3.4".into()))]).is_err());
        assert!(validate_entity(vec![
            (USER.into(), Some("a".into())),
            (USER.into(), Some("b".into()))
        ])
        .is_err());
        assert!(validate_value(PRODUCER_BYTE_RATE, 1024.0).is_ok());
        assert!(validate_value(PRODUCER_BYTE_RATE, 0.0).is_err());
        assert!(validate_value("bogus_rate", 1.0).is_err());
    }

    #[test]
    fn rate_and_throttle_follow_kafka() {
        let cfg = QuotaConfig::default();
        let t0 = Instant::now();
        let mut s = Sensor::new(t0);
        // 20 MB in the first second: measured over at least 10 s (n-1 windows) = 2 MB/s.
        s.record(&cfg, t0, 20_000_000.0);
        let (rate, window) = s.rate(&cfg, t0);
        assert_eq!(window, Duration::from_secs(10));
        assert!((rate - 2_000_000.0).abs() < 1.0);
        // Against a 1 MB/s bound: (2 - 1) / 1 * 10 s = 10 s of throttle.
        assert_eq!(throttle_ms(&cfg, rate, 1_000_000.0, window), 10_000);
        assert_eq!(throttle_ms(&cfg, 0.5, 1.0, window), 0);
        // Never more than the whole window (11 s).
        assert_eq!(throttle_ms(&cfg, 100.0, 1.0, window), 11_000);
        // Samples older than n windows are forgotten.
        let later = t0 + Duration::from_secs(12);
        let (rate, _) = s.rate(&cfg, later);
        assert_eq!(rate, 0.0);
    }
}
