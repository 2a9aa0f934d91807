//! One module per API family. `dispatch` decodes the body and runs the handler's
//! synchronous part now; what must wait (fsync, long poll) is in the returned future.

mod acls;
mod admin;
pub mod api_versions;
mod authorized;
mod cluster_gate;
mod fetch;
pub mod fetch_session;
mod groups;
mod leader_epoch;
mod list_offsets;
mod metadata;
mod produce;
mod producer_id;
mod quotas;
mod reassign;
mod share;
mod throttle;
mod topics_admin;
pub(crate) mod txn;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use runnel_protocol::kp::messages::ApiKey;
use runnel_protocol::kp::protocol::{Encodable, StrBytes};
use runnel_protocol::{encode_response, DecodeError, ParsedRequest};

use crate::broker::Broker;
use crate::server::response::Response;

/// Resolves to the encoded response, or None when the request gets no response
/// (acks=0 produce). [`UNENCODABLE`] (an empty response) means the response could not
/// be encoded: the connection is closed, since a client that got no answer would take
/// the next response for this one.
pub type ResponseFuture = Pin<Box<dyn Future<Output = Option<Response>> + Send>>;

/// The marker for a response that could not be encoded (no real response is empty).
pub const UNENCODABLE: Response = Response::empty();

pub fn dispatch(
    broker: &Arc<Broker>,
    req: ParsedRequest,
    conn: &crate::server::Conn,
) -> Result<ResponseFuture, DecodeError> {
    let qc = crate::server::quota::Ctx::new(broker, conn, req.client_id.as_ref());
    let start = std::time::Instant::now();
    let (key, version) = (req.api_key, req.api_version);
    let response = dispatch_api(broker, req, conn, &qc);
    // request_percentage: the handler's time in percent of a second (Kafka's
    // ClientRequestQuotaManager); over the quota, the connection is muted and the
    // response tells the throttle (`throttle.rs`).
    let ms = qc.record(
        crate::server::quota::REQUEST_PERCENTAGE,
        start.elapsed().as_nanos() as f64 * 1e-7,
    );
    if ms <= 0 {
        return response;
    }
    response.map(|future| -> ResponseFuture {
        Box::pin(async move {
            let response = future.await?;
            Some(response.map_head(|bytes| throttle::with_throttle(bytes, key, version, ms)))
        })
    })
}

fn dispatch_api(
    broker: &Arc<Broker>,
    req: ParsedRequest,
    conn: &crate::server::Conn,
    qc: &crate::server::quota::Ctx,
) -> Result<ResponseFuture, DecodeError> {
    let peer = conn.peer;
    let az = crate::authz::Ctx::new(broker, conn, req.api_key);
    if let Some(op) = cluster_gate::required(req.api_key) {
        if !az.cluster(op) {
            return cluster_gate::refuse(&req);
        }
    }
    match req.api_key {
        ApiKey::ApiVersions => api_versions::handle(&req),
        ApiKey::Metadata => metadata::handle(broker, &req, &conn.listener, &az),
        ApiKey::Produce => produce::handle(broker, &req, &az, qc),
        ApiKey::Fetch => fetch::handle(broker, &req, &az, qc, &conn.replica_of),
        ApiKey::ListOffsets => list_offsets::handle(broker, &req, &az),
        ApiKey::CreateTopics => topics_admin::create(broker, &req, &az, qc),
        ApiKey::DeleteTopics => topics_admin::delete(broker, &req, &az, qc),
        ApiKey::InitProducerId => producer_id::handle(broker, &req, &az),
        ApiKey::OffsetForLeaderEpoch => leader_epoch::handle(broker, &req, &az),
        ApiKey::FindCoordinator => groups::find_coordinator(broker, &req, &conn.listener, &az),
        ApiKey::JoinGroup => groups::join(broker, &req, peer, &az),
        ApiKey::SyncGroup => groups::sync(broker, &req, &az),
        ApiKey::Heartbeat => groups::heartbeat(broker, &req, &az),
        ApiKey::LeaveGroup => groups::leave(broker, &req, &az),
        ApiKey::OffsetCommit => groups::offset_commit(broker, &req, &az),
        ApiKey::OffsetFetch => groups::offset_fetch(broker, &req, &az),
        ApiKey::ListGroups => groups::list(broker, &req, &az),
        ApiKey::DescribeGroups => groups::describe(broker, &req, &az),
        ApiKey::DeleteGroups => groups::delete(broker, &req, &az),
        ApiKey::OffsetDelete => groups::offset_delete(broker, &req, &az),
        ApiKey::ConsumerGroupHeartbeat => groups::consumer_heartbeat(broker, &req, peer, &az),
        ApiKey::ConsumerGroupDescribe => groups::consumer_describe(broker, &req, &az),
        ApiKey::DescribeConfigs => admin::describe_configs(broker, &req, &az),
        ApiKey::AlterConfigs => admin::alter_configs(broker, &req, &az),
        ApiKey::IncrementalAlterConfigs => admin::incremental_alter_configs(broker, &req, &az),
        ApiKey::CreatePartitions => admin::create_partitions(broker, &req, &az, qc),
        ApiKey::DescribeCluster => admin::describe_cluster(broker, &req, &conn.listener, &az),
        ApiKey::DeleteRecords => admin::delete_records(broker, &req, &az),
        ApiKey::ShareGroupHeartbeat => share::heartbeat(broker, &req, peer, &az),
        ApiKey::ShareGroupDescribe => share::describe(broker, &req, &az),
        ApiKey::ShareFetch => share::fetch(broker, &req, &az),
        ApiKey::ShareAcknowledge => share::acknowledge(broker, &req, &az),
        ApiKey::DescribeShareGroupOffsets => share::describe_offsets(broker, &req, &az),
        ApiKey::AlterShareGroupOffsets => share::alter_offsets(broker, &req, &az),
        ApiKey::DeleteShareGroupOffsets => share::delete_offsets(broker, &req, &az),
        ApiKey::DescribeLogDirs => admin::describe_log_dirs(broker, &req),
        ApiKey::AlterReplicaLogDirs => admin::alter_replica_log_dirs(broker, &req),
        ApiKey::DescribeTopicPartitions => admin::describe_topic_partitions(broker, &req, &az),
        ApiKey::AddPartitionsToTxn => txn::add_partitions(broker, &req, &az),
        ApiKey::AddOffsetsToTxn => txn::add_offsets(broker, &req, &az),
        ApiKey::TxnOffsetCommit => txn::txn_offset_commit(broker, &req, &az),
        ApiKey::EndTxn => txn::end_txn(broker, &req, &az),
        ApiKey::WriteTxnMarkers => txn::write_markers(broker, &req, &az),
        ApiKey::DescribeTransactions => txn::describe_transactions(broker, &req, &az),
        ApiKey::ListTransactions => txn::list_transactions(broker, &req, &az),
        ApiKey::DescribeProducers => txn::describe_producers(broker, &req, &az),
        ApiKey::ElectLeaders => reassign::elect_leaders(broker, &req),
        ApiKey::DescribeQuorum => admin::describe_quorum(broker, &req),
        ApiKey::AlterPartitionReassignments => reassign::alter_reassignments(broker, &req),
        ApiKey::ListPartitionReassignments => reassign::list_reassignments(broker, &req),
        ApiKey::DescribeClientQuotas => quotas::describe(broker, &req, &az),
        ApiKey::AlterClientQuotas => quotas::alter(broker, &req, &az),
        ApiKey::CreateAcls => acls::create(broker, &req, &az),
        ApiKey::DescribeAcls => acls::describe(broker, &req, &az),
        ApiKey::DeleteAcls => acls::delete(broker, &req, &az),
        ApiKey::SaslHandshake | ApiKey::SaslAuthenticate => {
            crate::server::security::sasl::after_authentication(&req)
        }
        ApiKey::DescribeUserScramCredentials => {
            crate::server::security::scram::describe(broker, &req)
        }
        ApiKey::AlterUserScramCredentials => crate::server::security::scram::alter(broker, &req),
        // parse_request only lets through APIs in the supported table.
        other => Err(DecodeError::Malformed {
            what: "request",
            reason: format!("{other:?} has no handler"),
        }),
    }
}

/// Encodes `body` as the response to `req`.
pub fn encode<T: Encodable>(req: &ParsedRequest, body: &T) -> Option<Response> {
    match encode_response(req.api_key, req.api_version, req.correlation_id, body) {
        Ok(bytes) => Some(Response::from(bytes)),
        Err(e) => {
            tracing::error!(api = ?req.api_key, version = req.api_version, correlation_id = req.correlation_id, error = %e, "could not encode a response; closing the connection");
            Some(UNENCODABLE)
        }
    }
}

/// A response that is ready now.
pub fn ready<T: Encodable>(req: &ParsedRequest, body: &T) -> Result<ResponseFuture, DecodeError> {
    let bytes = encode(req, body);
    Ok(Box::pin(async move { bytes }))
}

/// Runs `f` on the blocking pool and encodes what it returns: for a handler whose work
/// a request can make long (creating thousands of partitions), so it never holds up
/// the runtime's worker threads and the other connections they serve. Requests of one
/// connection still get their responses in order.
pub fn off_runtime<T: Encodable + Send + 'static>(
    req: &ParsedRequest,
    f: impl FnOnce() -> T + Send + 'static,
) -> ResponseFuture {
    let req = req.clone();
    Box::pin(async move {
        match tokio::task::spawn_blocking(f).await {
            Ok(body) => encode(&req, &body),
            Err(e) => {
                tracing::error!(api = ?req.api_key, error = %e, "a handler failed; closing the connection");
                Some(UNENCODABLE)
            }
        }
    })
}

pub fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub use runnel_core::clock::now_ms;
