//! openraft's network: AppendEntries, Vote and InstallSnapshot over [`crate::rpc`].

// openraft's RPCError is what its trait returns; boxing it is not ours to choose.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;

use crate::rpc::{Conn, FrameError, Request, Response};
use crate::store::{NodeId, TypeConfig};
use crate::transport::QuorumTransport;

pub struct Network {
    pub me: NodeId,
    pub voters: BTreeMap<NodeId, SocketAddr>,
    pub transport: QuorumTransport,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        let addr = self
            .voters
            .get(&target)
            .copied()
            .or_else(|| node.addr.parse().ok());
        Peer {
            me: self.me,
            target,
            conn: addr.map(|a| Conn::new(a, self.transport.clone())),
        }
    }
}

pub struct Peer {
    me: NodeId,
    target: NodeId,
    conn: Option<Conn>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Msg(String);

impl Peer {
    async fn call<E: std::error::Error>(
        &mut self,
        req: Request,
        option: &RPCOption,
    ) -> Result<Response, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>> {
        let target = self.target;
        let Some(conn) = self.conn.as_mut() else {
            return Err(RPCError::Unreachable(Unreachable::new(&Msg(format!(
                "no address for voter {target}"
            )))));
        };
        let ttl = option.hard_ttl();
        match conn.call(&req, ttl).await {
            Ok(r) => Ok(r),
            // Too many entries for one frame: openraft retries with fewer.
            Err((_, FrameError::TooLarge(_))) => match &req {
                Request::AppendEntries(a) if a.entries.len() > 1 => Err(RPCError::PayloadTooLarge(
                    PayloadTooLarge::new_entries_hint(a.entries.len() as u64 / 2),
                )),
                _ => Err(RPCError::Network(NetworkError::new(&Msg(format!(
                    "voter {target}: a request is larger than the frame limit"
                ))))),
            },
            Err((_, FrameError::Timeout(_))) => Err(RPCError::Timeout(Timeout {
                action: rpc_action(&req),
                id: self.me,
                target,
                timeout: ttl,
            })),
            Err((false, e)) => Err(RPCError::Unreachable(Unreachable::new(&Msg(format!(
                "voter {target} at {}: {e}",
                conn.addr
            ))))),
            Err((true, e)) => Err(RPCError::Network(NetworkError::new(&Msg(format!(
                "voter {target} at {}: {e}",
                conn.addr
            ))))),
        }
    }
}

fn rpc_action(req: &Request) -> openraft::network::RPCTypes {
    use openraft::network::RPCTypes;
    match req {
        Request::Vote(_) => RPCTypes::Vote,
        Request::InstallSnapshot(_) => RPCTypes::InstallSnapshot,
        _ => RPCTypes::AppendEntries,
    }
}

fn unexpected<E: std::error::Error>(
    target: NodeId,
    what: &str,
) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
    RPCError::Network(NetworkError::new(&Msg(format!(
        "voter {target} answered {what} with another kind of response"
    ))))
}

fn remote<T, E: std::error::Error>(
    target: NodeId,
    r: Result<T, RaftError<NodeId, E>>,
) -> Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>> {
    r.map_err(|e| RPCError::RemoteError(RemoteError::new(target, e)))
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self.call(Request::AppendEntries(rpc), &option).await? {
            Response::AppendEntries(r) => remote(self.target, r),
            _ => Err(unexpected(self.target, "AppendEntries")),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self.call(Request::InstallSnapshot(rpc), &option).await? {
            Response::InstallSnapshot(r) => remote(self.target, r),
            _ => Err(unexpected(self.target, "InstallSnapshot")),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self.call(Request::Vote(rpc), &option).await? {
            Response::Vote(r) => remote(self.target, r),
            _ => Err(unexpected(self.target, "Vote")),
        }
    }

    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(100)))
    }
}
