//! A client connection's two deadlines, kept by the connection rather than by a timer armed per
//! request:
//! - idle: no byte moved either way for `proxy.client_idle_timeout`; the connection is asked to
//!   finish, and dropped if it stays idle for as long again;
//! - request head: a head must be complete within `proxy.client_header_timeout` of its first
//!   byte (for the first request, of the accept); the connection is dropped (the slowloris
//!   guard).
//!
//! hyper's own header-read timer is armed for every request, and it also runs while a
//! keep-alive connection waits for its next request, so it closed idle keep-alive clients after
//! the header timeout instead of the idle one. Here the socket and the service note what happens
//! in a few atomics, and the connection's one sleep reads them at least once per header timeout.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use http::Response;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use crate::proxy::Guarded;

/// What the connection's sleep decides when it wakes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Nothing moved for the idle timeout.
    Idle,
    /// A request head took longer than the header timeout.
    SlowHead,
    /// Look again then.
    WakeAt(Instant),
}

/// The limits, from `[proxy]`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub idle: Duration,
    pub head: Duration,
}

/// One connection's clock, shared by its socket, its service and its responses.
#[derive(Debug)]
pub(super) struct Deadlines {
    start: Instant,
    /// Milliseconds since `start` when a byte last moved.
    activity_ms: AtomicU64,
    /// Milliseconds since `start`, plus one, when the head now being read began; 0 when none is.
    head_ms: AtomicU64,
    /// Requests handed to the service whose responses have not ended.
    open: AtomicUsize,
    /// HTTP/2 (streams, not heads one after another): the head deadline no longer applies once
    /// the first request arrived.
    multiplexed: AtomicBool,
    /// The port's cap asked this connection to finish, to make room (see `super::limit`).
    reclaim_asked: AtomicBool,
    reclaim: Notify,
}

/// Holds one request open in [`Deadlines`] until its response ends or is dropped.
#[derive(Debug)]
pub(super) struct Open(Arc<Deadlines>);

pin_project! {
    /// A client socket that tells [`Deadlines`] when bytes move.
    pub(super) struct ActivityIo<T> {
        #[pin]
        inner: T,
        deadlines: Arc<Deadlines>,
    }
}

pin_project! {
    /// The service's response on its way; its body holds the request open until it ends.
    pub(super) struct Answering<F> {
        #[pin]
        inner: F,
        open: Option<Open>,
    }
}

// === impl Deadlines ===

impl Deadlines {
    /// A connection just accepted: its first head is due within the header timeout from now.
    pub(super) fn accepted() -> Arc<Deadlines> {
        Arc::new(Deadlines {
            start: Instant::now(),
            activity_ms: AtomicU64::new(0),
            head_ms: AtomicU64::new(1),
            open: AtomicUsize::new(0),
            multiplexed: AtomicBool::new(false),
            reclaim_asked: AtomicBool::new(false),
            reclaim: Notify::new(),
        })
    }

    /// Since when the connection has been idle between requests: nothing in flight and no head
    /// begun; `None` while it is busy (or has not sent its first head yet).
    pub(super) fn idle_since(&self) -> Option<Instant> {
        let idle =
            self.open.load(Ordering::Relaxed) == 0 && self.head_ms.load(Ordering::Relaxed) == 0;
        idle.then(|| self.at(self.activity_ms.load(Ordering::Relaxed)))
    }

    pub(super) fn reclaim_asked(&self) -> bool {
        self.reclaim_asked.load(Ordering::Relaxed)
    }

    /// Asks the connection to finish (gracefully: a request that just began still completes).
    pub(super) fn ask_to_reclaim(&self) {
        self.reclaim_asked.store(true, Ordering::Relaxed);
        self.reclaim.notify_one();
    }

    /// Completes once the connection is asked to finish to make room.
    pub(super) async fn reclaimed(&self) {
        self.reclaim.notified().await;
    }

    fn now_ms(&self) -> u64 {
        crate::clock::millis(self.start.elapsed()).min(u64::MAX - 1)
    }

    fn at(&self, ms: u64) -> Instant {
        self.start + Duration::from_millis(ms)
    }

    fn read(&self) {
        let now = self.now_ms();
        self.activity_ms.store(now, Ordering::Relaxed);
        // Bytes between requests are the next head beginning.
        if self.open.load(Ordering::Relaxed) == 0 && self.head_ms.load(Ordering::Relaxed) == 0 {
            self.head_ms.store(now + 1, Ordering::Relaxed);
        }
    }

    fn wrote(&self) {
        self.activity_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// A whole head arrived and its request goes to the service.
    pub(super) fn request(self: &Arc<Self>, multiplexed: bool) -> Open {
        self.open.fetch_add(1, Ordering::Relaxed);
        self.head_ms.store(0, Ordering::Relaxed);
        if multiplexed {
            self.multiplexed.store(true, Ordering::Relaxed);
        }
        Open(self.clone())
    }

    /// Whether a deadline has passed at `now`, or when to look again.
    pub(super) fn check(&self, now: Instant, limits: Limits) -> Verdict {
        let last = self.at(self.activity_ms.load(Ordering::Relaxed));
        if now.saturating_duration_since(last) >= limits.idle {
            return Verdict::Idle;
        }
        let mut wake = (last + limits.idle).min(now + limits.head);
        let head = self.head_ms.load(Ordering::Relaxed);
        let reading_head = head != 0
            && self.open.load(Ordering::Relaxed) == 0
            && !self.multiplexed.load(Ordering::Relaxed);
        if reading_head {
            let due = self.at(head - 1) + limits.head;
            if now >= due {
                return Verdict::SlowHead;
            }
            wake = wake.min(due);
        }
        Verdict::WakeAt(wake)
    }
}

// === impl Open ===

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

// === impl ActivityIo ===

impl<T> ActivityIo<T> {
    pub(super) fn new(inner: T, deadlines: Arc<Deadlines>) -> ActivityIo<T> {
        ActivityIo { inner, deadlines }
    }
}

impl<T: AsyncRead> AsyncRead for ActivityIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.deadlines.read();
        }
        polled
    }
}

impl<T: AsyncWrite> AsyncWrite for ActivityIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.deadlines.wrote();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.deadlines.wrote();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

// === impl Answering ===

impl<F> Answering<F> {
    pub(super) fn new(inner: F, open: Open) -> Answering<F> {
        Answering {
            inner,
            open: Some(open),
        }
    }
}

impl<F, B, E> Future for Answering<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<Guarded<B, Open>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let answered = ready!(this.inner.poll(cx));
        let open = this.open.take().expect("Answering polled after completion");
        Poll::Ready(answered.map(|response| response.map(|body| Guarded::new(body, open))))
    }
}

#[cfg(test)]
mod tests {
    //! Unit tests for the deadline arithmetic.

    use super::*;

    const LIMITS: Limits = Limits {
        idle: Duration::from_secs(75),
        head: Duration::from_secs(10),
    };

    fn wake(verdict: Verdict) -> Instant {
        match verdict {
            Verdict::WakeAt(at) => at,
            other => panic!("expected a wake-up, got {other:?}"),
        }
    }

    #[test]
    fn the_first_head_is_due_from_the_accept() {
        let clock = Deadlines::accepted();
        let start = clock.start;
        assert_eq!(wake(clock.check(start, LIMITS)), start + LIMITS.head);
        assert_eq!(clock.check(start + LIMITS.head, LIMITS), Verdict::SlowHead);
    }

    #[test]
    fn between_requests_only_the_idle_timeout_applies() {
        let clock = Deadlines::accepted();
        let start = clock.start;
        drop(clock.request(false));
        // Waiting for the next request: no head yet, so no head deadline, only a look every
        // header timeout in case one begins.
        let later = start + Duration::from_secs(30);
        assert_eq!(wake(clock.check(later, LIMITS)), later + LIMITS.head);
        assert_eq!(clock.check(start + LIMITS.idle, LIMITS), Verdict::Idle);
    }

    #[test]
    fn a_head_begun_between_requests_is_due_from_its_first_byte() {
        let clock = Deadlines::accepted();
        drop(clock.request(false));
        clock.read();
        let began = clock.at(clock.head_ms.load(Ordering::Relaxed) - 1);
        let now = began + Duration::from_secs(4);
        assert_eq!(wake(clock.check(now, LIMITS)), began + LIMITS.head);
        assert_eq!(clock.check(began + LIMITS.head, LIMITS), Verdict::SlowHead);
    }

    #[test]
    fn bytes_while_a_request_is_served_are_its_body_not_a_head() {
        let clock = Deadlines::accepted();
        let open = clock.request(false);
        clock.read();
        let now = clock.start + Duration::from_secs(30);
        assert_eq!(wake(clock.check(now, LIMITS)), now + LIMITS.head);
        drop(open);
        assert_eq!(clock.head_ms.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn http2_streams_have_no_head_deadline_after_the_first() {
        let clock = Deadlines::accepted();
        drop(clock.request(true));
        clock.read();
        let now = clock.start + Duration::from_secs(30);
        assert_eq!(wake(clock.check(now, LIMITS)), now + LIMITS.head);
    }
}
