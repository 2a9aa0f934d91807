//! Broker metrics, counted on the request path and rendered for Prometheus by the HTTP
//! admin API. Counters are atomics or short-held mutexes: recording never blocks I/O.
//!
//! Thread-safe.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

/// Upper bounds (seconds) of the request-latency histogram buckets.
pub const LATENCY_BUCKETS_S: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Debug, Default, Clone)]
pub struct ApiStats {
    pub requests: u64,
    pub errors: u64,
    /// Cumulative counts per bucket of `LATENCY_BUCKETS_S`, then +Inf.
    pub buckets: Vec<u64>,
    pub latency_sum_s: f64,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct TopicStats {
    pub bytes_in: u64,
    pub records_in: u64,
    pub bytes_out: u64,
}

#[derive(Default)]
pub struct Metrics {
    /// By Kafka API key.
    apis: Mutex<BTreeMap<i16, ApiStats>>,
    topics: Mutex<BTreeMap<String, TopicStats>>,
    pub connections_active: AtomicI64,
    pub connections_total: AtomicU64,
    /// (listener, mechanism, succeeded) -> authentications.
    authentications: Mutex<BTreeMap<(String, String, bool), u64>>,
}

impl Metrics {
    /// One request handled (`api` is its Kafka API key).
    pub fn record_request(&self, api: i16, elapsed: Duration, failed: bool) {
        let secs = elapsed.as_secs_f64();
        let mut apis = self.apis.lock();
        let s = apis.entry(api).or_insert_with(|| ApiStats {
            buckets: vec![0; LATENCY_BUCKETS_S.len() + 1],
            ..ApiStats::default()
        });
        s.requests += 1;
        s.errors += u64::from(failed);
        s.latency_sum_s += secs;
        let i = LATENCY_BUCKETS_S
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS_S.len());
        s.buckets[i] += 1;
    }

    pub fn record_produce(&self, topic: &str, bytes: u64, records: u64) {
        let mut topics = self.topics.lock();
        let t = topics.entry(topic.to_string()).or_default();
        t.bytes_in += bytes;
        t.records_in += records;
    }

    pub fn record_fetch(&self, topic: &str, bytes: u64) {
        if bytes == 0 {
            return;
        }
        self.topics
            .lock()
            .entry(topic.to_string())
            .or_default()
            .bytes_out += bytes;
    }

    pub fn connection_opened(&self) {
        self.connections_active.fetch_add(1, Ordering::Relaxed);
        self.connections_total.fetch_add(1, Ordering::Relaxed);
    }

    /// One authentication attempt ended (`mechanism` is the SASL mechanism, or `SSL`).
    pub fn record_authentication(&self, listener: &str, mechanism: &str, succeeded: bool) {
        *self
            .authentications
            .lock()
            .entry((listener.to_string(), mechanism.to_string(), succeeded))
            .or_default() += 1;
    }

    /// ((listener, mechanism, succeeded), count) of every authentication outcome.
    pub fn authentication_stats(&self) -> Vec<((String, String, bool), u64)> {
        self.authentications
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    pub fn connection_closed(&self) {
        self.connections_active.fetch_sub(1, Ordering::Relaxed);
    }

    /// A copy of the per-API statistics (buckets cumulative as Prometheus wants them).
    pub fn api_stats(&self) -> Vec<(i16, ApiStats)> {
        self.apis
            .lock()
            .iter()
            .map(|(k, v)| {
                let mut v = v.clone();
                let mut running = 0;
                for b in v.buckets.iter_mut() {
                    running += *b;
                    *b = running;
                }
                (*k, v)
            })
            .collect()
    }

    pub fn topic_stats(&self) -> Vec<(String, TopicStats)> {
        self.topics
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Drops a deleted topic's counters.
    pub fn forget_topic(&self, topic: &str) {
        self.topics.lock().remove(topic);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.record_request(0, Duration::from_micros(300), false);
        m.record_request(0, Duration::from_millis(3), true);
        let (_, s) = m.api_stats().into_iter().next().unwrap();
        assert_eq!((s.requests, s.errors), (2, 1));
        assert_eq!(s.buckets[0], 1);
        assert_eq!(s.buckets[3], 2);
        assert_eq!(*s.buckets.last().unwrap(), 2);
    }
}
