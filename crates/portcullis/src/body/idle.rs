//! The stream idle timeout: cuts a streamed body that moves no frame for a while, without
//! touching a timer per frame.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use crate::error::Side;

/// The error a body yields when its idle timeout cut it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamIdle {
    /// Who stalled: the client (its request body) or the upstream (its response body).
    pub side: Side,
    pub timeout: Duration,
}

impl fmt::Display for StreamIdle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let body = match self.side {
            Side::Downstream => "the client's request body",
            Side::Upstream => "the upstream's response body",
            Side::Internal => "a body",
        };
        write!(f, "{body} moved nothing for {:?}", self.timeout)
    }
}

impl std::error::Error for StreamIdle {}

/// Watches one streamed body for stalls, cheaply: nothing is allocated until the body is
/// first pending (most small bodies never are); once armed, a frame costs one clock read; the
/// one timer is set again only when it fires, for what remains of the timeout.
#[derive(Debug)]
pub struct IdleWatch {
    /// The idle timeout in nanoseconds; 0: off. (A `u64`, not a `Duration`, keeps `Body`
    /// 8 bytes smaller.)
    timeout_nanos: u64,
    timer: Option<Pin<Box<Timer>>>,
}

pin_project_lite::pin_project! {
    #[derive(Debug)]
    struct Timer {
        #[pin]
        sleep: Sleep,
        // The last frame, or when the timer was armed.
        last: Instant,
    }
}

impl IdleWatch {
    /// No idle timeout.
    pub(crate) const OFF: IdleWatch = IdleWatch {
        timeout_nanos: 0,
        timer: None,
    };

    /// `Duration::ZERO` is off.
    pub(crate) fn new(timeout: Duration) -> Self {
        Self {
            timeout_nanos: u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX),
            timer: None,
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_nanos(self.timeout_nanos)
    }

    /// The body yielded a frame.
    #[inline]
    pub(crate) fn moved(&mut self) {
        if let Some(timer) = &mut self.timer {
            *timer.as_mut().project().last = Instant::now();
        }
    }

    /// The body is pending: arms the timer on first use, and says whether the body has now
    /// moved nothing for the whole timeout. When not, `cx` is woken when it might have.
    pub(crate) fn stalled(&mut self, cx: &mut Context<'_>) -> bool {
        if self.timeout_nanos == 0 {
            return false;
        }
        let timeout = self.timeout();
        if self.timer.is_none() {
            let now = Instant::now();
            let Some(at) = now.checked_add(timeout) else {
                return false; // practically never: no cut
            };
            self.timer = Some(Box::pin(Timer {
                sleep: tokio::time::sleep_until(at),
                last: now,
            }));
        }
        let Some(timer) = self.timer.as_mut() else {
            return false;
        };
        loop {
            let mut timer = timer.as_mut().project();
            if timer.sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
            // Fired: cut unless a frame came since, else wait for the rest.
            let Some(until) = timer.last.checked_add(timeout) else {
                return false;
            };
            if Instant::now() >= until {
                return true;
            }
            timer.sleep.reset(until);
        }
    }

    /// The error that cuts the body, for `side`.
    pub(crate) fn cut(&self, side: Side) -> StreamIdle {
        StreamIdle {
            side,
            timeout: self.timeout(),
        }
    }

    #[cfg(test)]
    pub(crate) fn is_armed(&self) -> bool {
        self.timer.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body::{Body as HttpBody, Frame};
    use http_body_util::channel::Channel;
    use http_body_util::{BodyExt, Full};
    use std::task::Poll;

    use crate::body::BoxError;

    const T: Duration = Duration::from_secs(10);

    /// Any body under an `IdleWatch`, polled the way `Body` polls its streamed variants.
    struct Watched<B> {
        inner: B,
        idle: IdleWatch,
    }

    impl<B> HttpBody for Watched<B>
    where
        B: HttpBody<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            let this = self.get_mut();
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    this.idle.moved();
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending if this.idle.stalled(cx) => {
                    Poll::Ready(Some(Err(Box::new(this.idle.cut(Side::Upstream)))))
                }
                Poll::Pending => Poll::Pending,
            }
        }
    }

    fn watched<B>(inner: B, timeout: Duration) -> Watched<B> {
        Watched {
            inner,
            idle: IdleWatch::new(timeout),
        }
    }

    fn is_cut(res: Option<Result<Frame<Bytes>, BoxError>>) -> bool {
        matches!(res, Some(Err(e)) if e.downcast_ref::<StreamIdle>().is_some())
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_is_cut_after_the_timeout_exactly() {
        let (mut tx, body) = Channel::<Bytes, BoxError>::new(1);
        let mut body = watched(body, T);
        tx.send_data(Bytes::from_static(b"a")).await.unwrap();
        assert!(body.frame().await.unwrap().is_ok());
        let start = Instant::now();
        assert!(is_cut(body.frame().await));
        assert_eq!(start.elapsed(), T);
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_just_before_the_timeout_restarts_it() {
        let (mut tx, body) = Channel::<Bytes, BoxError>::new(1);
        let mut body = watched(body, T);
        let start = Instant::now();
        let sender = tokio::spawn(async move {
            tokio::time::sleep(T - Duration::from_millis(100)).await;
            tx.send_data(Bytes::from_static(b"late")).await.unwrap();
            tokio::time::sleep(T * 10).await; // then stalls, still open
            drop(tx);
        });
        assert!(body.frame().await.unwrap().is_ok());
        assert!(is_cut(body.frame().await));
        assert_eq!(start.elapsed(), T * 2 - Duration::from_millis(100));
        sender.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_steady_body_is_not_cut() {
        let (mut tx, body) = Channel::<Bytes, BoxError>::new(1);
        let body = watched(body, T);
        let start = Instant::now();
        tokio::spawn(async move {
            for _ in 0..8 {
                tokio::time::sleep(T / 2).await;
                tx.send_data(Bytes::from_static(b"tick")).await.unwrap();
            }
        });
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(collected.len(), 8 * 4);
        assert_eq!(start.elapsed(), T * 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_never_waits_never_arms_the_timer() {
        let mut body = watched(Full::new(Bytes::from_static(b"small")), T);
        assert!(body.frame().await.unwrap().is_ok());
        assert!(body.frame().await.is_none());
        assert!(!body.idle.is_armed());
    }

    #[tokio::test(start_paused = true)]
    async fn zero_turns_the_timeout_off() {
        let (_tx, body) = Channel::<Bytes, BoxError>::new(1);
        let mut body = watched(body, Duration::ZERO);
        let waited = tokio::time::timeout(T * 1000, body.frame()).await;
        assert!(waited.is_err(), "still waiting");
        assert!(!body.idle.is_armed());
    }

    #[test]
    fn the_error_says_who_stalled() {
        let cut = IdleWatch::new(T).cut(Side::Downstream);
        assert_eq!(
            cut.to_string(),
            "the client's request body moved nothing for 10s"
        );
    }
}
