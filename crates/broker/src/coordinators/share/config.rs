//! The broker's share-group keys (Kafka's `ShareGroupConfig`, `group.share.*`), with
//! Kafka 4.x's defaults and bounds.

/// Share-group settings. Plain data, set once at startup.
#[derive(Debug, Clone)]
pub struct ShareConfig {
    pub session_timeout_ms: i32,
    pub heartbeat_interval_ms: i32,
    pub record_lock_duration_ms: i32,
    pub min_record_lock_duration_ms: i32,
    pub max_record_lock_duration_ms: i32,
    pub delivery_count_limit: i32,
    pub partition_max_record_locks: i32,
    pub max_size: i32,
    pub max_share_sessions: i32,
    /// `share.coordinator.state.topic.num.partitions` / `.replication.factor`.
    pub state_topic_partitions: i32,
    pub state_topic_replication_factor: i16,
}

impl Default for ShareConfig {
    fn default() -> Self {
        ShareConfig {
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 5_000,
            record_lock_duration_ms: 30_000,
            min_record_lock_duration_ms: 15_000,
            max_record_lock_duration_ms: 60_000,
            delivery_count_limit: 5,
            partition_max_record_locks: 2_000,
            max_size: 200,
            max_share_sessions: 2_000,
            state_topic_partitions: 50,
            state_topic_replication_factor: 3,
        }
    }
}

fn int_between(v: &str, min: i64, max: i64) -> Result<i32, String> {
    let n: i64 = v
        .trim()
        .parse()
        .map_err(|_| "expected an integer".to_string())?;
    if n < min || n > max {
        return Err(format!("must be between {min} and {max}"));
    }
    Ok(n as i32)
}

impl ShareConfig {
    /// Sets one `group.share.*` key; Err names what is wrong with the value. Unknown
    /// share keys are refused like any unknown key.
    pub fn set(&mut self, key: &str, v: &str) -> Result<(), String> {
        const MAX: i64 = i32::MAX as i64;
        match key {
            "group.share.session.timeout.ms" => self.session_timeout_ms = int_between(v, 1, MAX)?,
            "group.share.heartbeat.interval.ms" => {
                self.heartbeat_interval_ms = int_between(v, 1, MAX)?
            }
            "group.share.record.lock.duration.ms" => {
                self.record_lock_duration_ms = int_between(v, 1, MAX)?
            }
            "group.share.min.record.lock.duration.ms" => {
                self.min_record_lock_duration_ms = int_between(v, 1, MAX)?
            }
            "group.share.max.record.lock.duration.ms" => {
                self.max_record_lock_duration_ms = int_between(v, 1, MAX)?
            }
            "group.share.delivery.count.limit" => {
                self.delivery_count_limit = int_between(v, 2, 10)?
            }
            "group.share.partition.max.record.locks" => {
                self.partition_max_record_locks = int_between(v, 100, 10_000)?
            }
            "group.share.max.size" => self.max_size = int_between(v, 1, 1000)?,
            "group.share.max.share.sessions" => self.max_share_sessions = int_between(v, 1, MAX)?,
            "share.coordinator.state.topic.num.partitions" => {
                self.state_topic_partitions = int_between(v, 1, 100_000)?
            }
            "share.coordinator.state.topic.replication.factor" => {
                self.state_topic_replication_factor = int_between(v, 1, i16::MAX as i64)? as i16
            }
            // Kafka's other share keys (ShareGroupConfig, ShareCoordinatorConfig), found
            // in its sample server.properties: checked for type, no effect here (the state
            // topic is written like every other partition, with the broker's defaults).
            "share.coordinator.state.topic.min.isr"
            | "share.coordinator.state.topic.segment.bytes"
            | "share.coordinator.state.topic.prune.interval.ms"
            | "share.coordinator.snapshot.update.records.per.snapshot"
            | "share.coordinator.threads"
            | "share.coordinator.load.buffer.size"
            | "share.coordinator.append.linger.ms"
            | "share.coordinator.write.timeout.ms"
            | "share.coordinator.cold.partition.snapshot.interval.ms"
            | "group.share.min.session.timeout.ms"
            | "group.share.max.session.timeout.ms"
            | "group.share.min.heartbeat.interval.ms"
            | "group.share.max.heartbeat.interval.ms"
            | "group.share.fetch.purgatory.purge.interval.requests" => {
                int_between(v, 0, MAX)?;
            }
            // Kafka 4.0's cap on share groups sized only its share-session cache and was
            // removed in 4.1 (KAFKA-19156) for `group.share.max.share.sessions`; nothing
            // refuses a share group for being one too many. Accepted so 4.0 configs load.
            "group.share.max.groups" => {
                int_between(v, 1, 100)?;
            }
            "share.coordinator.state.topic.compression.codec"
            | "group.share.enable"
            | "group.share.assignors"
            | "group.share.persister.class.name" => {}
            _ => return Err("not a share-group key Runnel knows".into()),
        }
        Ok(())
    }

    /// Cross-key checks, as Kafka's `ShareGroupConfig` constructor makes them.
    pub fn validate(&self) -> Result<(), String> {
        if self.record_lock_duration_ms < self.min_record_lock_duration_ms
            || self.record_lock_duration_ms > self.max_record_lock_duration_ms
        {
            return Err(format!(
                "group.share.record.lock.duration.ms ({}) must be between group.share.min.record.lock.duration.ms ({}) and group.share.max.record.lock.duration.ms ({})",
                self.record_lock_duration_ms,
                self.min_record_lock_duration_ms,
                self.max_record_lock_duration_ms
            ));
        }
        if self.session_timeout_ms <= self.heartbeat_interval_ms {
            return Err(format!(
                "group.share.session.timeout.ms ({}) must be greater than group.share.heartbeat.interval.ms ({})",
                self.session_timeout_ms, self.heartbeat_interval_ms
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_and_cross_checks() {
        let mut c = ShareConfig::default();
        assert!(c.validate().is_ok());
        assert!(c.set("group.share.delivery.count.limit", "1").is_err());
        assert!(c
            .set("group.share.partition.max.record.locks", "99")
            .is_err());
        assert!(c.set("group.share.nope", "1").is_err());
        c.set("group.share.record.lock.duration.ms", "1000")
            .unwrap();
        assert!(c.validate().is_err());
        c.set("group.share.min.record.lock.duration.ms", "500")
            .unwrap();
        assert!(c.validate().is_ok());
    }
}
