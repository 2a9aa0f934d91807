//! `throttle_time_ms` for `request_percentage` (Kafka's `ClientRequestQuotaManager`):
//! the handler's time is only known once it has run, after the response body was built,
//! so a throttled request's encoded response gets the throttle written into its
//! `throttle_time_ms` field (the larger of that and what a byte-rate quota already put
//! there), as Kafka's `sendResponseMaybeThrottle` does. Only throttled requests pay for
//! the copy.
//!
//! Where the field is: first in the body of every response listed below (from the
//! version named; the list comes from the generated encoders in vendor/kafka-protocol, and
//! `every_listed_field_is_where_the_table_says` checks each one), after the error code in
//! OffsetDelete. Produce and ApiVersions carry it after variable-length fields: their
//! responses are not patched (the connection is still muted).

use bytes::{Bytes, BytesMut};
use runnel_protocol::kp::messages::ApiKey;

macro_rules! throttle_first {
    ($($ty:ident => $key:ident from $v:literal,)*) => {
        /// The first version whose response body starts with `throttle_time_ms`.
        fn first_from(key: ApiKey) -> Option<i16> {
            match key {
                $(ApiKey::$key => Some($v),)*
                _ => None,
            }
        }

        #[cfg(test)]
        fn check_every_listed_response() -> usize {
            let mut checked = 0;
            $(
                if let Some((lo, hi)) = runnel_protocol::supported_range(ApiKey::$key) {
                    for v in [lo.max($v), hi] {
                        checked += tests::check(ApiKey::$key, v, |t| {
                            let mut r = runnel_protocol::kp::messages::$ty::default();
                            r.throttle_time_ms = t;
                            r
                        }, |r: &runnel_protocol::kp::messages::$ty| r.throttle_time_ms);
                    }
                }
            )*
            checked
        }
    };
}

throttle_first! {
    AddOffsetsToTxnResponse => AddOffsetsToTxn from 0,
    AddPartitionsToTxnResponse => AddPartitionsToTxn from 0,
    AddRaftVoterResponse => AddRaftVoter from 0,
    AllocateProducerIdsResponse => AllocateProducerIds from 0,
    AlterClientQuotasResponse => AlterClientQuotas from 0,
    AlterConfigsResponse => AlterConfigs from 0,
    AlterPartitionReassignmentsResponse => AlterPartitionReassignments from 0,
    AlterPartitionResponse => AlterPartition from 0,
    AlterReplicaLogDirsResponse => AlterReplicaLogDirs from 0,
    AlterShareGroupOffsetsResponse => AlterShareGroupOffsets from 0,
    AlterUserScramCredentialsResponse => AlterUserScramCredentials from 0,
    AssignReplicasToDirsResponse => AssignReplicasToDirs from 0,
    BrokerHeartbeatResponse => BrokerHeartbeat from 0,
    BrokerRegistrationResponse => BrokerRegistration from 0,
    ConsumerGroupDescribeResponse => ConsumerGroupDescribe from 0,
    ConsumerGroupHeartbeatResponse => ConsumerGroupHeartbeat from 0,
    ControllerRegistrationResponse => ControllerRegistration from 0,
    CreateAclsResponse => CreateAcls from 0,
    CreatePartitionsResponse => CreatePartitions from 0,
    CreateTopicsResponse => CreateTopics from 0,
    DeleteAclsResponse => DeleteAcls from 0,
    DeleteGroupsResponse => DeleteGroups from 0,
    DeleteRecordsResponse => DeleteRecords from 0,
    DeleteShareGroupOffsetsResponse => DeleteShareGroupOffsets from 0,
    DeleteTopicsResponse => DeleteTopics from 0,
    DescribeAclsResponse => DescribeAcls from 0,
    DescribeClientQuotasResponse => DescribeClientQuotas from 0,
    DescribeClusterResponse => DescribeCluster from 0,
    DescribeConfigsResponse => DescribeConfigs from 0,
    DescribeGroupsResponse => DescribeGroups from 1,
    DescribeLogDirsResponse => DescribeLogDirs from 0,
    DescribeProducersResponse => DescribeProducers from 0,
    DescribeShareGroupOffsetsResponse => DescribeShareGroupOffsets from 0,
    DescribeTopicPartitionsResponse => DescribeTopicPartitions from 0,
    DescribeTransactionsResponse => DescribeTransactions from 0,
    DescribeUserScramCredentialsResponse => DescribeUserScramCredentials from 0,
    ElectLeadersResponse => ElectLeaders from 0,
    EndTxnResponse => EndTxn from 0,
    FetchResponse => Fetch from 0,
    FetchSnapshotResponse => FetchSnapshot from 0,
    FindCoordinatorResponse => FindCoordinator from 1,
    GetTelemetrySubscriptionsResponse => GetTelemetrySubscriptions from 0,
    HeartbeatResponse => Heartbeat from 1,
    IncrementalAlterConfigsResponse => IncrementalAlterConfigs from 0,
    InitProducerIdResponse => InitProducerId from 0,
    JoinGroupResponse => JoinGroup from 2,
    LeaveGroupResponse => LeaveGroup from 1,
    ListConfigResourcesResponse => ListConfigResources from 0,
    ListGroupsResponse => ListGroups from 1,
    ListOffsetsResponse => ListOffsets from 2,
    ListPartitionReassignmentsResponse => ListPartitionReassignments from 0,
    ListTransactionsResponse => ListTransactions from 0,
    MetadataResponse => Metadata from 3,
    OffsetCommitResponse => OffsetCommit from 3,
    OffsetFetchResponse => OffsetFetch from 3,
    OffsetForLeaderEpochResponse => OffsetForLeaderEpoch from 0,
    PushTelemetryResponse => PushTelemetry from 0,
    RemoveRaftVoterResponse => RemoveRaftVoter from 0,
    ShareAcknowledgeResponse => ShareAcknowledge from 0,
    ShareFetchResponse => ShareFetch from 0,
    ShareGroupDescribeResponse => ShareGroupDescribe from 0,
    ShareGroupHeartbeatResponse => ShareGroupHeartbeat from 0,
    SyncGroupResponse => SyncGroup from 1,
    TxnOffsetCommitResponse => TxnOffsetCommit from 0,
    UnregisterBrokerResponse => UnregisterBroker from 0,
    UpdateFeaturesResponse => UpdateFeatures from 0,
    UpdateRaftVoterResponse => UpdateRaftVoter from 0,
}

/// Where `throttle_time_ms` is in a `key` v`version` response body, if it is at a fixed place.
fn offset_in_body(key: ApiKey, version: i16) -> Option<usize> {
    match key {
        ApiKey::OffsetDelete => Some(2),
        _ => first_from(key).filter(|&v| version >= v).map(|_| 0),
    }
}

/// `response` (size-prefixed, as the handlers encode it) with `throttle_time_ms` raised to
/// `ms`; unchanged when the field is not at a fixed place or the bytes are not a response.
pub fn with_throttle(response: Bytes, key: ApiKey, version: i16, ms: i32) -> Bytes {
    let Some(at) = offset_in_body(key, version) else {
        return response;
    };
    // Size (4), correlation id (4), and in a flexible header its tagged fields: a
    // one-byte zero count as the broker writes it (anything else is left alone).
    let mut header = 8;
    if key.response_header_version(version) >= 1 {
        if response.get(header) != Some(&0) {
            return response;
        }
        header += 1;
    }
    let pos = header + at;
    let Some(field) = response.get(pos..pos + 4) else {
        return response;
    };
    let current = i32::from_be_bytes([field[0], field[1], field[2], field[3]]);
    if current >= ms {
        return response;
    }
    let mut out = BytesMut::from(&response[..]);
    out[pos..pos + 4].copy_from_slice(&ms.to_be_bytes());
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_protocol::kp::protocol::{Decodable, Encodable};

    /// Encodes a `key` v`version` response with throttle 7, patches it to 5000, and checks
    /// the decoded throttle and that nothing else changed; 1 when checked.
    pub(super) fn check<T: Encodable + Decodable>(
        key: ApiKey,
        version: i16,
        make: impl Fn(i32) -> T,
        throttle: impl Fn(&T) -> i32,
    ) -> usize {
        let Ok(small) = runnel_protocol::encode_response(key, version, 9, &make(7)) else {
            return 0; // the default body does not encode at this version
        };
        let patched = with_throttle(small.clone(), key, version, 5000);
        let want = runnel_protocol::encode_response(key, version, 9, &make(5000)).unwrap();
        assert_eq!(patched, want, "{key:?} v{version}");
        // A larger throttle already there stays.
        let big = runnel_protocol::encode_response(key, version, 9, &make(9000)).unwrap();
        assert_eq!(with_throttle(big.clone(), key, version, 5000), big);
        let mut body = patched.slice(4..);
        runnel_protocol::kp::messages::ResponseHeader::decode(
            &mut body,
            key.response_header_version(version),
        )
        .unwrap();
        assert_eq!(throttle(&T::decode(&mut body, version).unwrap()), 5000);
        1
    }

    #[test]
    fn every_listed_field_is_where_the_table_says() {
        assert!(check_every_listed_response() > 60);
        use runnel_protocol::kp::messages::OffsetDeleteResponse;
        assert_eq!(
            check(
                ApiKey::OffsetDelete,
                0,
                |t| OffsetDeleteResponse::default().with_throttle_time_ms(t),
                |r| r.throttle_time_ms
            ),
            1
        );
    }

    #[test]
    fn unlisted_and_old_versions_and_short_bytes_are_left_alone() {
        use runnel_protocol::kp::messages::MetadataResponse;
        // Metadata v0-2 has no throttle field.
        let v1 =
            runnel_protocol::encode_response(ApiKey::Metadata, 1, 1, &MetadataResponse::default())
                .unwrap();
        assert_eq!(with_throttle(v1.clone(), ApiKey::Metadata, 1, 100), v1);
        for b in [Bytes::new(), Bytes::from_static(&[0, 0, 0, 4, 0, 0, 0, 1])] {
            assert_eq!(with_throttle(b.clone(), ApiKey::Metadata, 12, 100), b);
        }
        assert!(offset_in_body(ApiKey::Produce, 11).is_none());
        assert!(offset_in_body(ApiKey::ApiVersions, 3).is_none());
    }
}
