//! An encoded response on its way to the socket: bytes in memory, and for a fetch the
//! record sets as ranges of segment files, sent with `sendfile` on a plaintext
//! connection (no copy through user space) and read in bounded chunks on a TLS one.
//!
//! Not shared between threads while written: one connection's writer task owns it.

use std::future::Future;
use std::io;

use bytes::Bytes;
use runnel_log::FileSlice;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// One part of a response, in wire order.
#[derive(Debug, Clone)]
pub enum Piece {
    Mem(Bytes),
    File(FileSlice),
}

/// A whole response frame (size prefix included) as pieces. Empty: the marker for a
/// response that could not be encoded (no real response is empty).
#[derive(Debug, Clone, Default)]
pub struct Response {
    pieces: Vec<Piece>,
}

impl From<Bytes> for Response {
    fn from(b: Bytes) -> Self {
        Response {
            pieces: vec![Piece::Mem(b)],
        }
    }
}

impl Response {
    pub const fn empty() -> Self {
        Response { pieces: Vec::new() }
    }

    pub fn from_pieces(pieces: Vec<Piece>) -> Self {
        Response { pieces }
    }

    /// Bytes on the wire.
    pub fn len(&self) -> usize {
        self.pieces
            .iter()
            .map(|p| match p {
                Piece::Mem(b) => b.len(),
                Piece::File(f) => f.len,
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn pieces(&self) -> &[Piece] {
        &self.pieces
    }

    /// Rewrites the first piece, which holds the frame's header and the body's leading
    /// fields (a throttle time, say).
    pub fn map_head(mut self, f: impl FnOnce(Bytes) -> Bytes) -> Self {
        if let Some(Piece::Mem(b)) = self.pieces.first_mut() {
            *b = f(std::mem::take(b));
        }
        self
    }

    /// The whole response in memory (tests, and the few paths that need one buffer).
    pub fn to_bytes(&self) -> io::Result<Bytes> {
        if let [Piece::Mem(b)] = self.pieces.as_slice() {
            return Ok(b.clone());
        }
        let mut out = Vec::with_capacity(self.len());
        for p in &self.pieces {
            match p {
                Piece::Mem(b) => out.extend_from_slice(b),
                Piece::File(f) => f.read_into(&mut out, f.position, f.len)?,
            }
        }
        Ok(Bytes::from(out))
    }

    /// Writes every piece, in order.
    pub async fn write_to<W: ResponseSink>(&self, w: &mut W) -> io::Result<()> {
        for p in &self.pieces {
            match p {
                Piece::Mem(b) => w.write_all(b).await?,
                Piece::File(f) => w.send_file(f).await?,
            }
        }
        Ok(())
    }
}

/// Bytes of a file slice read into memory at a time on a connection that cannot use
/// `sendfile` (TLS): bounds the memory one response pins while it is written.
const COPY_CHUNK: usize = 256 * 1024;

/// A connection's write side that can send a file range.
pub trait ResponseSink: AsyncWrite + Unpin + Send {
    /// Sends `slice` whole; a file that ends first is an `UnexpectedEof` error (the
    /// connection must then close: the response's framing promised those bytes).
    fn send_file<'a>(
        &'a mut self,
        slice: &'a FileSlice,
    ) -> impl Future<Output = io::Result<()>> + Send + 'a {
        async move {
            let mut buf = Vec::with_capacity(COPY_CHUNK.min(slice.len));
            let mut done = 0usize;
            while done < slice.len {
                let n = (slice.len - done).min(COPY_CHUNK);
                buf.clear();
                slice.read_into(&mut buf, slice.position + done as u64, n)?;
                self.write_all(&buf).await?;
                done += n;
            }
            Ok(())
        }
    }
}

/// Plaintext TCP: `sendfile`, from the page cache straight into the socket.
impl ResponseSink for tokio::net::tcp::OwnedWriteHalf {
    async fn send_file<'a>(&'a mut self, slice: &'a FileSlice) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let stream: &tokio::net::TcpStream = self.as_ref();
        let mut offset = slice.position as libc::off_t;
        let end = slice.position + slice.len as u64;
        while (offset as u64) < end {
            stream.writable().await?;
            let left = (end - offset as u64) as usize;
            let sent = stream.try_io(tokio::io::Interest::WRITABLE, || {
                // SAFETY: both descriptors are open for the call (the stream and the
                // slice's file are borrowed); the kernel advances `offset` by what it sent.
                let n = unsafe {
                    libc::sendfile(
                        stream.as_raw_fd(),
                        slice.file.as_raw_fd(),
                        &mut offset,
                        left,
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match sent {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "a segment was truncated while a fetch response was being sent from it",
                    ))
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// TLS: the bounded copy.
impl<S: tokio::io::AsyncRead + AsyncWrite + Unpin + Send> ResponseSink
    for tokio::io::WriteHalf<tokio_rustls::server::TlsStream<S>>
{
}
