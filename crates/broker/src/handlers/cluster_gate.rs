//! The APIs that act on the cluster as a whole, the operation on the CLUSTER resource
//! each needs (Kafka's KafkaApis / ControllerApis), and the refusal each answers
//! (CLUSTER_AUTHORIZATION_FAILED in the shape of its response). The dispatcher checks
//! these before the handler runs, so the handlers themselves need no check.

use runnel_protocol::kp::messages::alter_replica_log_dirs_response::{
    AlterReplicaLogDirPartitionResult, AlterReplicaLogDirTopicResult,
};
use runnel_protocol::kp::messages::elect_leaders_response::{
    PartitionResult, ReplicaElectionResult,
};
use runnel_protocol::kp::messages::*;
use runnel_protocol::{decode_body, DecodeError, ParsedRequest};

use super::{ready, ResponseFuture};
use crate::authz::acl::Operation;
use crate::error::ErrorCode;

/// The operation on CLUSTER `api` needs, for the APIs checked here.
pub fn required(api: ApiKey) -> Option<Operation> {
    match api {
        ApiKey::ElectLeaders
        | ApiKey::AlterPartitionReassignments
        | ApiKey::AlterReplicaLogDirs
        | ApiKey::AlterUserScramCredentials => Some(Operation::Alter),
        ApiKey::ListPartitionReassignments
        | ApiKey::DescribeLogDirs
        | ApiKey::DescribeQuorum
        | ApiKey::DescribeUserScramCredentials => Some(Operation::Describe),
        _ => None,
    }
}

/// The answer to a request of one of these APIs the principal may not make.
pub fn refuse(req: &ParsedRequest) -> Result<ResponseFuture, DecodeError> {
    let code = ErrorCode::ClusterAuthorizationFailed.code();
    let v = req.api_version;
    match req.api_key {
        ApiKey::ElectLeaders if v >= 1 => {
            ready(req, &ElectLeadersResponse::default().with_error_code(code))
        }
        ApiKey::ElectLeaders => {
            // v0 has no top-level error: every partition asked for carries it.
            let body: ElectLeadersRequest = decode_body(&req.body, v)?;
            let results = body
                .topic_partitions
                .unwrap_or_default()
                .into_iter()
                .map(|t| {
                    let parts = t.partitions.iter().map(|&p| {
                        PartitionResult::default()
                            .with_partition_id(p)
                            .with_error_code(code)
                    });
                    ReplicaElectionResult::default()
                        .with_topic(t.topic)
                        .with_partition_result(parts.collect())
                })
                .collect();
            ready(
                req,
                &ElectLeadersResponse::default().with_replica_election_results(results),
            )
        }
        ApiKey::AlterReplicaLogDirs => {
            let body: AlterReplicaLogDirsRequest = decode_body(&req.body, v)?;
            let results = body
                .dirs
                .iter()
                .flat_map(|d| d.topics.iter())
                .map(|t| {
                    let parts = t.partitions.iter().map(|&p| {
                        AlterReplicaLogDirPartitionResult::default()
                            .with_partition_index(p)
                            .with_error_code(code)
                    });
                    AlterReplicaLogDirTopicResult::default()
                        .with_topic_name(t.name.clone())
                        .with_partitions(parts.collect())
                })
                .collect();
            ready(
                req,
                &AlterReplicaLogDirsResponse::default().with_results(results),
            )
        }
        ApiKey::AlterPartitionReassignments => ready(
            req,
            &AlterPartitionReassignmentsResponse::default().with_error_code(code),
        ),
        ApiKey::ListPartitionReassignments => ready(
            req,
            &ListPartitionReassignmentsResponse::default().with_error_code(code),
        ),
        // v1-2 have no top-level error; Kafka answers them with no log dirs.
        ApiKey::DescribeLogDirs if v >= 3 => ready(
            req,
            &DescribeLogDirsResponse::default().with_error_code(code),
        ),
        ApiKey::DescribeLogDirs => ready(req, &DescribeLogDirsResponse::default()),
        ApiKey::DescribeQuorum => ready(
            req,
            &DescribeQuorumResponse::default().with_error_code(code),
        ),
        // The top-level error alone: librdkafka aborts on per-user results next to it.
        ApiKey::DescribeUserScramCredentials => ready(
            req,
            &DescribeUserScramCredentialsResponse::default().with_error_code(code),
        ),
        ApiKey::AlterUserScramCredentials => {
            // No top-level error: every user asked about carries it (Kafka's answer).
            use alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
            let body: AlterUserScramCredentialsRequest = decode_body(&req.body, v)?;
            let mut users: Vec<_> = body
                .deletions
                .iter()
                .map(|d| d.name.clone())
                .chain(body.upsertions.iter().map(|u| u.name.clone()))
                .collect();
            users.dedup();
            let results = users
                .into_iter()
                .map(|u| {
                    AlterUserScramCredentialsResult::default()
                        .with_user(u)
                        .with_error_code(code)
                })
                .collect();
            ready(
                req,
                &AlterUserScramCredentialsResponse::default().with_results(results),
            )
        }
        other => Err(DecodeError::Malformed {
            what: "request",
            reason: format!("{other:?} is not a cluster-gated API"),
        }),
    }
}
