//! The RPC service of a voter: one TCP port (the voter's controller address) carrying
//! Raft's AppendEntries / Vote / InstallSnapshot and the controller RPCs.
//!
//! Framing: `[len: u32 BE][JSON]`, one request then one response per frame, in order, on
//! a connection. A length above [`MAX_FRAME`] or a frame that does not parse closes the
//! connection.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

use crate::error::ControllerError;
use crate::image::{ClusterImage, PartitionImage};
use crate::store::{NodeId, TypeConfig, MAX_FRAME};
use crate::transport::{BoxedStream, QuorumTransport};

/// A topic to create (CreateTopics).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTopic {
    pub name: String,
    /// -1: the controller's default (`num.partitions`).
    pub num_partitions: i32,
    /// -1: the controller's default (`default.replication.factor`).
    pub replication_factor: i16,
    /// Explicit replicas per partition (then the two counts above must be -1).
    pub assignments: Option<Vec<Vec<i32>>>,
    pub configs: BTreeMap<String, String>,
    /// The topic id to keep (importing a topic that already has one); None: a new id.
    #[serde(default)]
    pub id: Option<Uuid>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    /// The broker is fenced: it must not lead or be counted in an ISR.
    pub fenced: bool,
    /// For a heartbeat with `want_shutdown`: the broker leads nothing that could move and
    /// may stop.
    pub shutdown_ready: bool,
}

/// AlterPartition: the leader of a partition asks for a new ISR, naming the epochs it
/// knows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterPartitionRequest {
    pub broker_id: i32,
    pub broker_epoch: i64,
    pub topic_id: Uuid,
    pub partition: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub new_isr: Vec<i32>,
}

impl AlterPartitionRequest {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        broker_id: i32,
        broker_epoch: i64,
        topic_id: Uuid,
        partition: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        new_isr: Vec<i32>,
    ) -> Self {
        AlterPartitionRequest {
            broker_id,
            broker_epoch,
            topic_id,
            partition,
            leader_epoch,
            partition_epoch,
            new_isr,
        }
    }
}

/// The controller RPCs (what a broker asks the active controller).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ControllerRequest {
    RegisterBroker {
        id: i32,
        host: String,
        port: i32,
        #[serde(default)]
        endpoints: Vec<crate::image::BrokerEndpoint>,
        rack: Option<String>,
        incarnation: Uuid,
    },
    UnregisterBroker {
        id: i32,
    },
    Heartbeat {
        id: i32,
        broker_epoch: i64,
        want_shutdown: bool,
    },
    CreateTopics {
        topics: Vec<NewTopic>,
        validate_only: bool,
    },
    DeleteTopics {
        names: Vec<String>,
    },
    CreatePartitions {
        topic: String,
        total: i32,
        assignments: Option<Vec<Vec<i32>>>,
    },
    AlterPartition(AlterPartitionRequest),
    AlterTopicConfigs {
        topic: String,
        configs: BTreeMap<String, String>,
    },
    /// Cluster-wide dynamic broker configs (`None` deletes the key).
    AlterBrokerConfigs {
        configs: BTreeMap<String, Option<String>>,
    },
    ElectLeaders {
        partitions: Option<Vec<(String, i32)>>,
        preferred: bool,
    },
    Reassign {
        topic: String,
        partition: i32,
        replicas: Option<Vec<i32>>,
    },
    /// The quorum's state as its leader sees it (Kafka's DescribeQuorum).
    DescribeQuorum,
    /// A replica fetch connection to or from broker `id` (at `broker_epoch`) ended by
    /// EOF or reset, seen by another broker: the controller probes `id`'s port as when
    /// its heartbeat connection closes, and fences it at once if no process listens.
    PeerClosed {
        id: i32,
        broker_epoch: i64,
    },
}

/// One replica of the metadata log, as the quorum leader sees it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct QuorumReplica {
    pub id: i32,
    /// The next log index it needs (-1: not known to the leader).
    pub log_end_offset: i64,
}

/// DescribeQuorum's answer: leader, epoch (Raft term), the committed index and each
/// voter's and observer's progress.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct QuorumState {
    pub leader: i32,
    pub epoch: i32,
    pub high_watermark: i64,
    pub voters: Vec<QuorumReplica>,
    /// Brokers that are not voters (they follow the image, not the log).
    pub observers: Vec<QuorumReplica>,
}

/// ElectLeaders results: per partition, elected or why not.
pub type Elections = Vec<((String, i32), Result<(), ControllerError>)>;

/// What the controller answers (per-item results for the batch requests).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ControllerReply {
    BrokerEpoch(i64),
    Heartbeat(HeartbeatReply),
    Topics(Vec<Result<Uuid, ControllerError>>),
    Deleted(Vec<Result<(), ControllerError>>),
    Partition(PartitionImage),
    Elected(Elections),
    Quorum(QuorumState),
    Done,
}

#[derive(Debug, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
pub enum Request {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    Controller(ControllerRequest),
    /// Long poll: answers with the image once its `applied_index` is above `known_index`,
    /// or `None` after `wait_ms`.
    WatchImage {
        known_index: u64,
        wait_ms: u64,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
pub enum Response {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    Controller(Result<ControllerReply, ControllerError>),
    Image(Option<ClusterImage>),
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes is above the limit of {MAX_FRAME}")]
    TooLarge(usize),
    #[error("bad frame: {0}")]
    Decode(serde_json::Error),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Handshake(String),
}

pub(crate) async fn write_frame<T: Serialize, S: AsyncWrite + Unpin + ?Sized>(
    stream: &mut S,
    msg: &T,
) -> Result<(), FrameError> {
    let body = serde_json::to_vec(msg).map_err(FrameError::Decode)?;
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(body.len()));
    }
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(&body);
    stream.write_all(&buf).await?;
    Ok(())
}

/// Reads one frame. The buffer grows with the bytes that actually arrive, so a large
/// length prefix alone allocates nothing.
pub(crate) async fn read_frame<T: DeserializeOwned, S: AsyncRead + Unpin + ?Sized>(
    stream: &mut S,
) -> Result<T, FrameError> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = Vec::with_capacity(len.min(64 << 10));
    let n = (&mut *stream)
        .take(len as u64)
        .read_to_end(&mut body)
        .await?;
    if n < len {
        return Err(FrameError::Closed);
    }
    serde_json::from_slice(&body).map_err(FrameError::Decode)
}

/// One client connection to a voter, reconnected on demand (through the quorum's
/// transport: TLS and SASL when the controller listener is secured).
pub(crate) struct Conn {
    pub addr: SocketAddr,
    transport: QuorumTransport,
    stream: Option<BoxedStream>,
}

impl Conn {
    pub fn new(addr: SocketAddr, transport: QuorumTransport) -> Self {
        Conn {
            addr,
            transport,
            stream: None,
        }
    }

    /// Sends `req` and reads its response within `timeout`. On any failure the connection is
    /// dropped (the next call reconnects). `Err((connected, e))`: whether the connection
    /// existed (for telling an unreachable node from a broken exchange).
    pub async fn call(
        &mut self,
        req: &Request,
        timeout: Duration,
    ) -> Result<Response, (bool, FrameError)> {
        let addr = self.addr;
        let fut = async {
            if self.stream.is_none() {
                let s = TcpStream::connect(addr)
                    .await
                    .map_err(|e| (false, e.into()))?;
                let _ = s.set_nodelay(true);
                // A failed handshake counts as unreachable: nothing was exchanged.
                let s = self.transport.connect(s, addr).await.map_err(|e| {
                    (
                        false,
                        FrameError::Handshake(format!(
                            "{} handshake: {e}",
                            self.transport.protocol()
                        )),
                    )
                })?;
                self.stream = Some(s);
            }
            let Some(s) = self.stream.as_mut() else {
                return Err((false, FrameError::Closed));
            };
            write_frame(s, req).await.map_err(|e| (true, e))?;
            read_frame::<Response, _>(s).await.map_err(|e| (true, e))
        };
        let res = match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err((self.stream.is_some(), FrameError::Timeout(timeout))),
        };
        if res.is_err() {
            self.stream = None;
        }
        res
    }
}
