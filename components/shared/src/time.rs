//! Timers on the WASI monotonic clock, driven by spin-sdk's executor.

use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;
use wasi::clocks::{monotonic_clock, wall_clock};

/// A future ran out of time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Elapsed;

/// Completes after `duration`.
pub async fn sleep(duration: Duration) {
    let deadline = monotonic_clock::now().saturating_add(duration.as_nanos().min(u64::MAX as u128) as u64);
    let mut registration = None;
    std::future::poll_fn(move |cx| {
        if monotonic_clock::now() >= deadline {
            return Poll::Ready(());
        }
        let pollable = monotonic_clock::subscribe_instant(deadline);
        let token = spin_executor::push_waker_and_get_token(pollable, cx.waker().clone());
        // The replaced token is dropped, which cancels the previous registration.
        registration.replace(spin_executor::CancelOnDropToken::from(token));
        Poll::Pending
    })
    .await
}

/// Runs `future` for at most `duration`; dropping it on time-out cancels whatever it was doing.
pub async fn timeout<F: Future>(duration: Duration, future: F) -> Result<F::Output, Elapsed> {
    let mut future = pin!(future);
    let mut timer = pin!(sleep(duration));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = future.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        timer.as_mut().poll(cx).map(|()| Err(Elapsed))
    })
    .await
}

/// The monotonic clock's reading: only differences between readings mean anything.
pub fn now() -> Duration {
    Duration::from_nanos(monotonic_clock::now())
}

/// The wall clock, in milliseconds since the Unix epoch: for leases, deadlines and signatures.
pub fn wall_ms() -> u64 {
    let t = wall_clock::now();
    t.seconds.saturating_mul(1000).saturating_add(u64::from(t.nanoseconds / 1_000_000))
}

/// A random number from the host, for retry jitter.
pub fn random_u64() -> u64 {
    wasi::random::random::get_random_u64()
}
