//! Response bodies: whole buffers, or a channel for streams (watch) whose unsent bytes are
//! bounded, so a client that stops reading holds a fixed amount of the server's memory.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body as HttpBody, Frame};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// The body type of every response.
pub type Body = BoxBody<Bytes, Infallible>;

/// A complete body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into()).boxed()
}

/// An empty body.
pub fn empty() -> Body {
    http_body_util::Empty::new().boxed()
}

/// A streaming body fed through the returned sender, holding at most `max_bytes` of frames
/// not yet taken by the connection (a larger frame waits until the body is empty); it ends
/// when the sender is dropped.
pub fn channel(max_bytes: usize) -> (Sender, Body) {
    let (tx, rx) = mpsc::unbounded_channel();
    let budget = Arc::new(Semaphore::new(max_bytes));
    (Sender { tx, budget, max: max_bytes as u32 }, ChannelBody(rx).boxed())
}

/// The feeding end of a [`channel`] body.
#[derive(Clone)]
pub struct Sender {
    tx: mpsc::UnboundedSender<(Bytes, OwnedSemaphorePermit)>,
    budget: Arc<Semaphore>,
    max: u32,
}

/// Why a frame was not sent.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    /// The body is gone (the client went away).
    Closed,
    /// The client read nothing for the whole wait.
    Stalled,
}

impl Sender {
    /// Queues `frame`, waiting while the body holds its maximum of unsent bytes.
    pub async fn send(&self, frame: Bytes) -> Result<(), SendError> {
        let need = (frame.len().min(self.max as usize) as u32).max(1);
        let permit = tokio::select! {
            p = self.budget.clone().acquire_many_owned(need) => p.map_err(|_| SendError::Closed)?,
            _ = self.tx.closed() => return Err(SendError::Closed),
        };
        self.tx.send((frame, permit)).map_err(|_| SendError::Closed)
    }

    /// [`Sender::send`], giving up after `patience` without room.
    pub async fn send_within(&self, frame: Bytes, patience: std::time::Duration) -> Result<(), SendError> {
        match tokio::time::timeout(patience, self.send(frame)).await {
            Ok(r) => r,
            Err(_) => Err(SendError::Stalled),
        }
    }

    /// Resolves when the body is gone.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

/// `body`, holding `guard` until the body is dropped (finished, or its client gone).
pub fn guarded<G: Send + Sync + Unpin + 'static>(body: Body, guard: G) -> Body {
    Guarded { body, _guard: guard }.boxed()
}

struct Guarded<G> {
    body: Body,
    _guard: G,
}

impl<G> HttpBody for Guarded<G>
where
    G: Unpin,
{
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

struct ChannelBody(mpsc::UnboundedReceiver<(Bytes, OwnedSemaphorePermit)>);

impl HttpBody for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        // The frame's bytes leave the budget as the connection takes them (the permit drops).
        self.0.poll_recv(cx).map(|chunk| chunk.map(|(b, _permit)| Ok(Frame::data(b))))
    }
}
