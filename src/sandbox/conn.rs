//! The connection plumbing both sandbox servers share: a line reader with
//! bounded lines, the accept loop with a session limit, shutdown signals.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

/// What the acceptor tells its sessions: stop for good, or drop the
/// connection now (a bump of `kick`) to simulate a network failure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Signal {
    pub shutdown: bool,
    pub kick: u64,
}

/// Why a session's connection ended.
#[derive(Debug)]
pub(crate) enum End {
    Eof,
    Io,
    Timeout,
    Shutdown,
    /// Dropped on purpose (fault injection): the caller resets the socket.
    Kicked,
}

/// One line as read by [`Conn::read_line`].
pub(crate) enum Line {
    /// The line including its terminator.
    Full(Vec<u8>),
    /// The line was longer than allowed; it has been read and thrown away.
    TooLong,
}

/// A client connection with bounded line reads, an inactivity timeout, and
/// the server's shutdown/kick signals checked on every read and write.
pub(crate) struct Conn {
    pub(super) io: BufReader<TcpStream>,
    pub(super) signals: watch::Receiver<Signal>,
    pub(super) kick_at_start: u64,
    pub(super) partial: Vec<u8>,
    /// Bytes of an over-long line thrown away so far; `Some` while discarding.
    pub(super) discarding: Option<usize>,
    pub(super) max_line: usize,
    pub(super) timeout: Duration,
}

/// An over-long line is discarded up to this multiple of the line limit; a
/// client that keeps sending without a newline is then disconnected.
pub(super) const MAX_DISCARD_FACTOR: usize = 64;

pub(super) fn interrupted(s: Signal, kick_at_start: u64) -> Option<End> {
    if s.shutdown {
        Some(End::Shutdown)
    } else if s.kick != kick_at_start {
        Some(End::Kicked)
    } else {
        None
    }
}

pub(super) async fn wait_signal(signals: &mut watch::Receiver<Signal>, kick_at_start: u64) -> End {
    loop {
        if let Some(e) = interrupted(*signals.borrow_and_update(), kick_at_start) {
            return e;
        }
        if signals.changed().await.is_err() {
            return End::Shutdown;
        }
    }
}

/// Reads up to and including the next `\n`, keeping at most `max` bytes.
/// Cancel-safe: progress lives in `partial`/`discarding`, not in the future.
pub(super) async fn fill_line(
    io: &mut BufReader<TcpStream>,
    partial: &mut Vec<u8>,
    discarding: &mut Option<usize>,
    max: usize,
) -> io::Result<Option<Line>> {
    loop {
        let avail = io.fill_buf().await?;
        if avail.is_empty() {
            return Ok(None);
        }
        let (take, done) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (avail.len(), false),
        };
        match discarding {
            Some(n) => *n += take,
            None if partial.len() + take > max => {
                *discarding = Some(partial.len() + take);
                partial.clear();
            }
            None => partial.extend_from_slice(&avail[..take]),
        }
        io.consume(take);
        if done {
            return Ok(Some(match discarding.take() {
                Some(_) => Line::TooLong,
                None => Line::Full(std::mem::take(partial)),
            }));
        }
        if discarding.is_some_and(|n| n > max.saturating_mul(MAX_DISCARD_FACTOR)) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "line without end"));
        }
    }
}

impl Conn {
    pub fn new(tcp: TcpStream, signals: watch::Receiver<Signal>, max_line: usize, timeout: Duration) -> Conn {
        let _ = tcp.set_nodelay(true);
        let kick_at_start = signals.borrow().kick;
        Conn {
            io: BufReader::new(tcp),
            signals,
            kick_at_start,
            partial: Vec::new(),
            discarding: None,
            max_line,
            timeout,
        }
    }

    pub fn peer_ip(&self) -> String {
        self.io
            .get_ref()
            .peer_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_else(|_| "unknown".into())
    }

    pub async fn read_line(&mut self) -> Result<Line, End> {
        let Conn {
            io,
            signals,
            kick_at_start,
            partial,
            discarding,
            max_line,
            timeout,
        } = self;
        tokio::select! {
            biased;
            e = wait_signal(signals, *kick_at_start) => Err(e),
            r = tokio::time::timeout(*timeout, fill_line(io, partial, discarding, *max_line)) => match r {
                Err(_) => Err(End::Timeout),
                Ok(Err(_)) => Err(End::Io),
                Ok(Ok(None)) => Err(End::Eof),
                Ok(Ok(Some(line))) => Ok(line),
            },
        }
    }

    /// Reads exactly `n` bytes (an IMAP literal); the caller bounds `n`.
    pub async fn read_exact(&mut self, n: usize, into: &mut Vec<u8>) -> Result<(), End> {
        let Conn {
            io,
            signals,
            kick_at_start,
            timeout,
            ..
        } = self;
        let read = async {
            let mut left = n;
            while left > 0 {
                let avail = io.fill_buf().await?;
                if avail.is_empty() {
                    return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
                }
                let take = left.min(avail.len());
                into.extend_from_slice(&avail[..take]);
                io.consume(take);
                left -= take;
            }
            Ok(())
        };
        tokio::select! {
            biased;
            e = wait_signal(signals, *kick_at_start) => Err(e),
            r = tokio::time::timeout(*timeout, read) => match r {
                Err(_) => Err(End::Timeout),
                Ok(Err(_)) => Err(End::Io),
                Ok(Ok(())) => Ok(()),
            },
        }
    }

    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), End> {
        let Conn {
            io,
            signals,
            kick_at_start,
            timeout,
            ..
        } = self;
        let tcp = io.get_mut();
        let write = async {
            tcp.write_all(bytes).await?;
            tcp.flush().await
        };
        tokio::select! {
            biased;
            e = wait_signal(signals, *kick_at_start) => Err(e),
            r = tokio::time::timeout(*timeout, write) => match r {
                Err(_) => Err(End::Timeout),
                Ok(Err(_)) => Err(End::Io),
                Ok(Ok(())) => Ok(()),
            },
        }
    }

    /// Closes with a TCP reset, as a crashed server or a dropped NAT entry
    /// would look to the client: its next read fails instead of seeing EOF.
    pub fn reset(self) {
        let _ = self.io.get_ref().set_zero_linger();
    }

    /// Ends the connection the way `end` asks: a reset if kicked, else a close.
    pub fn finish(self, end: &End) {
        if matches!(end, End::Kicked) {
            self.reset();
        }
    }
}

/// The accept loop and signals shared by both servers.
pub(crate) struct ServerCore {
    pub(super) addr: SocketAddr,
    pub(super) signals: watch::Sender<Signal>,
    pub(super) task: Option<JoinHandle<()>>,
}

/// How long sessions get to notice a shutdown before they are aborted.
pub(super) const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

impl ServerCore {
    /// Binds 127.0.0.1:0 and spawns the acceptor. Each connection runs
    /// `session`; beyond `max_sessions` at once, a connection gets `busy`
    /// and is closed.
    pub async fn start<F, Fut>(max_sessions: usize, busy: &'static [u8], session: F) -> io::Result<ServerCore>
    where
        F: Fn(TcpStream, watch::Receiver<Signal>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (signals, _) = watch::channel(Signal::default());
        let task = tokio::spawn(accept_loop(
            listener,
            signals.clone(),
            max_sessions.max(1),
            busy,
            session,
        ));
        Ok(ServerCore {
            addr,
            signals,
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every open connection with a reset; new ones are still accepted.
    pub fn kick_all(&self) {
        self.signals.send_modify(|s| s.kick = s.kick.wrapping_add(1));
    }

    pub async fn shutdown(mut self) {
        self.signals.send_modify(|s| s.shutdown = true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ServerCore {
    fn drop(&mut self) {
        // The acceptor and the sessions see this and end on their own.
        self.signals.send_modify(|s| s.shutdown = true);
    }
}

pub(super) async fn accept_loop<F, Fut>(
    listener: TcpListener,
    signals: watch::Sender<Signal>,
    max_sessions: usize,
    busy: &'static [u8],
    session: F,
) where
    F: Fn(TcpStream, watch::Receiver<Signal>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(max_sessions));
    let mut sessions = JoinSet::new();
    let mut rx = signals.subscribe();
    loop {
        tokio::select! {
            _ = async { while !rx.borrow_and_update().shutdown { if rx.changed().await.is_err() { break } } } => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => match Arc::clone(&limit).try_acquire_owned() {
                    Ok(permit) => {
                        let fut = session(tcp, signals.subscribe());
                        sessions.spawn(async move {
                            fut.await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        // No task per refused connection: a flood must not grow memory.
                        let _ = tcp.try_write(busy);
                    }
                },
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "sandbox accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
    let drain = async { while sessions.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        sessions.shutdown().await;
    }
}

/// Lower-cased ASCII, for case-insensitive comparisons of protocol text.
pub(crate) fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    if needle.is_empty() {
        return true;
    }
    haystack.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

/// The line without its trailing CRLF or LF.
pub(crate) fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}
