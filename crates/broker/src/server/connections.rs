//! Connection and request-memory bounds: how many client connections may be open (in
//! all, per address), and how many request bytes may be read but not yet answered (in
//! all, per connection). Thread-safe.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::RequestLimits;

pub struct Connections {
    max_total: usize,
    max_per_ip: usize,
    overrides: std::collections::BTreeMap<IpAddr, usize>,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
    /// `queued.max.request.bytes`, one permit a byte; None = unbounded.
    request_bytes: Option<Arc<Semaphore>>,
    per_connection_bytes: usize,
}

/// Why a connection was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    Total(usize),
    PerIp(usize),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Total(n) => write!(
                f,
                "{n} connections are open (max.connections, or the open-file limit)"
            ),
            Refused::PerIp(n) => write!(
                f,
                "{n} connections from this address are open (max.connections.per.ip)"
            ),
        }
    }
}

/// An open connection's slot; dropping it frees the slot.
pub struct Slot {
    owner: Arc<Connections>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock();
        open.0 -= 1;
        if let Some(n) = open.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.ip);
            }
        }
    }
}

impl Connections {
    /// `fd_limit`: the process's open-file limit; connections may take at most
    /// [`crate::fds::connection_budget`] of it, so storage can always open files.
    pub fn new(limits: &RequestLimits, fd_limit: Option<usize>) -> Arc<Self> {
        let by_fds = fd_limit.map_or(usize::MAX, crate::fds::connection_budget);
        if by_fds < limits.max_connections {
            tracing::info!(
                max_connections = by_fds,
                "the open-file limit caps client connections below max.connections"
            );
        }
        Arc::new(Connections {
            max_total: limits.max_connections.min(by_fds),
            max_per_ip: limits.max_connections_per_ip,
            overrides: limits.max_connections_per_ip_overrides.clone(),
            open: Mutex::new((0, HashMap::new())),
            request_bytes: limits
                .queued_max_request_bytes
                .map(|n| Arc::new(Semaphore::new(n.min(Semaphore::MAX_PERMITS)))),
            per_connection_bytes: limits.connection_queued_max_request_bytes,
        })
    }

    /// Takes a slot for a connection from `ip`, or says which bound refuses it.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refused> {
        let mut open = self.open.lock();
        if open.0 >= self.max_total {
            return Err(Refused::Total(open.0));
        }
        let limit = self.overrides.get(&ip).copied().unwrap_or(self.max_per_ip);
        let from_ip = open.1.get(&ip).copied().unwrap_or(0);
        if from_ip >= limit {
            return Err(Refused::PerIp(from_ip));
        }
        open.0 += 1;
        *open.1.entry(ip).or_default() += 1;
        Ok(Slot {
            owner: self.clone(),
            ip,
        })
    }

    /// A new connection's request-byte budget.
    pub fn budget(&self) -> RequestBudget {
        RequestBudget {
            shared: self.request_bytes.clone(),
            own: Arc::new(Semaphore::new(
                self.per_connection_bytes.min(Semaphore::MAX_PERMITS),
            )),
        }
    }
}

/// One connection's claim on request memory: bytes are claimed as they arrive and given
/// back when the request's response has been written.
pub struct RequestBudget {
    shared: Option<Arc<Semaphore>>,
    own: Arc<Semaphore>,
}

/// Request bytes held until dropped.
#[derive(Default)]
pub struct Held {
    permits: Vec<OwnedSemaphorePermit>,
    /// Bytes claimed (from the connection's bound, and the broker's when it has one).
    bytes: usize,
}

impl Held {
    /// Bytes claimed.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Takes over `other`'s claim.
    pub fn absorb(&mut self, mut other: Held) {
        self.permits.append(&mut other.permits);
        self.bytes += other.bytes;
    }
}

impl RequestBudget {
    /// Waits until `n` more bytes fit both the connection's and the broker's bound, and
    /// adds them to `held`. A frame never waits for itself: the caller claims at most
    /// `socket.request.max.bytes` per frame and both bounds are at least that.
    pub async fn claim(&self, held: &mut Held, n: usize) {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        if n == 0 {
            return;
        }
        if let Ok(p) = self.own.clone().acquire_many_owned(n).await {
            held.permits.push(p);
        }
        if let Some(shared) = &self.shared {
            if let Ok(p) = shared.clone().acquire_many_owned(n).await {
                held.permits.push(p);
            }
        }
        held.bytes += n as usize;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_and_total_bounds_hold_and_free() {
        let limits = RequestLimits {
            max_connections: 3,
            max_connections_per_ip: 2,
            max_connections_per_ip_overrides: [("127.0.0.2".parse().unwrap(), 0)].into(),
            ..RequestLimits::default()
        };
        let c = Connections::new(&limits, None);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let s1 = c.admit(a).unwrap();
        let _s2 = c.admit(a).unwrap();
        assert_eq!(c.admit(a).err(), Some(Refused::PerIp(2)));
        assert_eq!(
            c.admit("127.0.0.2".parse().unwrap()).err(),
            Some(Refused::PerIp(0))
        );
        let _s3 = c.admit(b).unwrap();
        assert_eq!(c.admit(b).err(), Some(Refused::Total(3)));
        drop(s1);
        assert!(c.admit(a).is_ok());
    }
}
