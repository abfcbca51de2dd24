//! The connection I/O both Stratum dialects share: newline-framed lines under a length limit,
//! requests answered concurrently but replied to in request order (a bounded number in
//! flight), job-change wake-ups, the idle timeout, and the write timeout for miners that stop
//! reading.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};
use futures_util::stream::FuturesOrdered;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{timeout, Instant, Sleep};
use tokio_util::codec::{Framed, LinesCodec, LinesCodecError};
use tokio_util::sync::CancellationToken;

use crate::upstream::template::BlockTemplate;

/// Requests of one connection answered at once; beyond this the connection is not read until
/// an answer is written (back-pressure instead of unbounded memory).
pub const MAX_IN_FLIGHT: usize = 64;

/// Initial read buffer of a connection: Stratum lines are a few hundred bytes, and 10,000
/// idle miners should not cost 8 KiB each (the buffer grows for longer lines).
pub const BUFFER_BYTES: usize = 512;

/// After its last reply a closing connection reads (and drops) what the miner still sends for
/// at most this long, or [`LINGER_BYTES`], before the socket is closed.
pub const LINGER: Duration = Duration::from_secs(2);
/// See [`LINGER`].
pub const LINGER_BYTES: usize = 64 * 1024;

/// Errors that end a connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// Reading or writing failed.
    #[error(transparent)]
    Lines(#[from] LinesCodecError),
    /// The miner does not read its replies.
    #[error("write timed out")]
    WriteTimeout,
}

/// A line that could not be taken as a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadLine {
    /// Longer than the limit (the rest of it is skipped).
    TooLarge,
    /// Not UTF-8.
    NotUtf8,
}

/// What happened next on a connection.
#[derive(Debug)]
pub enum Event<T> {
    /// A request line (not blank).
    Line(String),
    /// A line that is no request.
    Bad(BadLine),
    /// The oldest answer in flight is ready.
    Done(T),
    /// The pool's work changed.
    NewWork,
    /// The connection is over: shutdown, idle timeout, EOF or a read error (the reason).
    Close(&'static str),
}

type Jobs = watch::Receiver<Option<Arc<BlockTemplate>>>;

/// One connection: its framed socket and its answers in flight.
pub struct Conn<'a, T> {
    framed: Framed<TcpStream, LinesCodec>,
    answers: FuturesOrdered<BoxFuture<'a, T>>,
    idle: Pin<Box<Sleep>>,
    idle_timeout: Duration,
    jobs: Jobs,
    /// After a decode error the framed stream yields one `None` that is not EOF.
    after_error: bool,
}

impl<T> std::fmt::Debug for Conn<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("in_flight", &self.answers.len())
            .finish_non_exhaustive()
    }
}

impl<'a, T: Send + 'a> Conn<'a, T> {
    /// Wraps `framed`; `jobs` wakes the connection on new work (seen work counts as seen).
    pub fn new(
        framed: Framed<TcpStream, LinesCodec>,
        mut jobs: Jobs,
        idle_timeout: Duration,
    ) -> Self {
        jobs.mark_unchanged();
        Self {
            framed,
            answers: FuturesOrdered::new(),
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
            idle_timeout,
            jobs,
            after_error: false,
        }
    }

    /// The socket, for handing the connection to the other dialect (nothing may be in flight).
    pub fn into_framed(self) -> Framed<TcpStream, LinesCodec> {
        self.framed
    }

    /// Answers in flight.
    pub fn in_flight(&self) -> usize {
        self.answers.len()
    }

    /// Queues an answer that is ready now (it is still written after those before it).
    pub fn answer_now(&mut self, v: T) {
        self.answers.push_back(std::future::ready(v).boxed());
    }

    /// Queues an answer still being worked out.
    pub fn answer_later(&mut self, f: impl Future<Output = T> + Send + 'a) {
        self.answers.push_back(f.boxed());
    }

    /// The next event. Shutdown wins over buffered lines; answers are written before more
    /// lines are read.
    pub async fn next(&mut self, shutdown: &CancellationToken) -> Event<T> {
        loop {
            let reading = self.answers.len() < MAX_IN_FLIGHT;
            let item = tokio::select! {
                biased;
                () = shutdown.cancelled() => return Event::Close("shutdown"),
                Some(done) = self.answers.next(), if !self.answers.is_empty() => {
                    return Event::Done(done);
                }
                () = &mut self.idle => return Event::Close("idle timeout"),
                changed = self.jobs.changed() => {
                    return match changed {
                        Ok(()) => Event::NewWork,
                        Err(_) => Event::Close("job feed closed"),
                    };
                }
                item = self.framed.next(), if reading => item,
            };
            let event = match item {
                None if self.after_error => {
                    self.after_error = false;
                    continue;
                }
                None => return Event::Close("closed by peer"),
                Some(Err(LinesCodecError::MaxLineLengthExceeded)) => {
                    self.after_error = true;
                    Event::Bad(BadLine::TooLarge)
                }
                // LinesCodec consumed the line before finding it is not UTF-8.
                Some(Err(LinesCodecError::Io(e)))
                    if e.kind() == std::io::ErrorKind::InvalidData =>
                {
                    self.after_error = true;
                    Event::Bad(BadLine::NotUtf8)
                }
                Some(Err(_)) => return Event::Close("read error"),
                Some(Ok(line)) if line.trim().is_empty() => continue,
                Some(Ok(line)) => Event::Line(line),
            };
            // Only a miner's own lines keep its connection open.
            self.idle.as_mut().reset(Instant::now() + self.idle_timeout);
            return event;
        }
    }

    /// The next answer that is ready without waiting, to write several in one go.
    pub fn ready_answer(&mut self) -> Option<T> {
        self.answers.next().now_or_never().flatten()
    }

    /// Ends the connection: the answers still in flight are finished and written (rendered by
    /// `lines`, within [`super::DRAIN_TIMEOUT`]), then the socket is closed with a linger.
    ///
    /// Closing a socket with unread input makes the kernel send a reset instead of a FIN, and a
    /// reset can discard the last replies (a ban's reason, a share's answer) before the miner
    /// reads them. So the write side is shut first and the miner's further input is read and
    /// dropped until its EOF, [`LINGER`] or [`LINGER_BYTES`].
    pub async fn finish(
        mut self,
        mut lines: impl FnMut(T) -> Vec<String>,
    ) -> Result<(), ConnError> {
        let drain = async {
            while let Some(a) = self.answers.next().await {
                self.send(lines(a)).await?;
            }
            Ok::<_, ConnError>(())
        };
        timeout(super::DRAIN_TIMEOUT, drain)
            .await
            .unwrap_or(Err(ConnError::WriteTimeout))?;
        let mut stream = self.framed.into_inner();
        if stream.shutdown().await.is_err() {
            return Ok(());
        }
        let discard = async {
            let mut buf = [0u8; 4096];
            let mut total = 0;
            while total < LINGER_BYTES {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
        };
        let _ = timeout(LINGER, discard).await;
        Ok(())
    }

    /// Writes `lines`, flushing once; a miner that stops reading for the idle timeout loses
    /// its connection.
    pub async fn send(&mut self, lines: impl IntoIterator<Item = String>) -> Result<(), ConnError> {
        let framed = &mut self.framed;
        let write = async move {
            for line in lines {
                framed.feed(line).await?;
            }
            SinkExt::<String>::flush(framed).await
        };
        timeout(self.idle_timeout, write)
            .await
            .map_err(|_| ConnError::WriteTimeout)?
            .map_err(ConnError::from)
    }
}
