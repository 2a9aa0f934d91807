//! The fixed API versions this client speaks, and what a broker said it serves.
//!
//! The client uses one version per API rather than negotiating the highest common one:
//! field meanings change between versions (Fetch v13 and Produce v13 address topics by id,
//! for example), and one tested version per API is easier to reason about. Each was chosen
//! as one that current Kafka brokers (3.x and 4.x) serve.

use crate::error::{Error, Result};
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};
use std::collections::HashMap;

pub const API_VERSIONS: i16 = 3;
pub const METADATA: i16 = 12;
pub const PRODUCE: i16 = 9;
pub const FETCH: i16 = 12;
pub const LIST_OFFSETS: i16 = 7;
pub const CREATE_TOPICS: i16 = 5;
pub const DELETE_TOPICS: i16 = 4;
pub const INIT_PRODUCER_ID: i16 = 4;
pub const DESCRIBE_CONFIGS: i16 = 4;
pub const ALTER_CONFIGS: i16 = 2;
pub const INCREMENTAL_ALTER_CONFIGS: i16 = 1;
pub const CREATE_PARTITIONS: i16 = 3;
pub const DELETE_RECORDS: i16 = 2;
pub const DESCRIBE_LOG_DIRS: i16 = 4;
pub const ALTER_REPLICA_LOG_DIRS: i16 = 2;

/// The (min, max) version of each API a broker advertised in ApiVersions.
#[derive(Debug, Clone, Default)]
pub struct BrokerVersions {
    ranges: HashMap<i16, (i16, i16)>,
}

impl BrokerVersions {
    pub fn from_response(response: &ApiVersionsResponse) -> Self {
        let ranges = response
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        BrokerVersions { ranges }
    }

    /// The range the broker serves for `api`, if any.
    pub fn range(&self, api: ApiKey) -> Option<(i16, i16)> {
        self.ranges.get(&(api as i16)).copied()
    }

    /// Fails with [`Error::UnsupportedVersion`] naming what the broker serves instead.
    pub fn require(&self, addr: &str, api: ApiKey, version: i16) -> Result<()> {
        match self.range(api) {
            Some((min, max)) if (min..=max).contains(&version) => Ok(()),
            other => Err(Error::UnsupportedVersion {
                addr: addr.to_string(),
                api,
                version,
                supported: match other {
                    Some((min, max)) => format!("it serves v{min} to v{max}"),
                    None => "it does not serve this API at all".to_string(),
                },
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chosen_versions_are_within_the_codec() {
        for (api, v) in [
            (ApiKey::ApiVersions, API_VERSIONS),
            (ApiKey::Metadata, METADATA),
            (ApiKey::Produce, PRODUCE),
            (ApiKey::Fetch, FETCH),
            (ApiKey::ListOffsets, LIST_OFFSETS),
            (ApiKey::CreateTopics, CREATE_TOPICS),
            (ApiKey::DeleteTopics, DELETE_TOPICS),
            (ApiKey::InitProducerId, INIT_PRODUCER_ID),
            (ApiKey::DescribeConfigs, DESCRIBE_CONFIGS),
            (ApiKey::AlterConfigs, ALTER_CONFIGS),
            (ApiKey::IncrementalAlterConfigs, INCREMENTAL_ALTER_CONFIGS),
            (ApiKey::CreatePartitions, CREATE_PARTITIONS),
            (ApiKey::DeleteRecords, DELETE_RECORDS),
            (ApiKey::DescribeLogDirs, DESCRIBE_LOG_DIRS),
            (ApiKey::AlterReplicaLogDirs, ALTER_REPLICA_LOG_DIRS),
        ] {
            let codec = api.valid_versions();
            assert!(
                codec.min <= v && v <= codec.max,
                "{api:?} v{v} outside {codec}"
            );
        }
    }
}
