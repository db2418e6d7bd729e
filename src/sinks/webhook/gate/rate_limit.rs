//! `request.rate_limit_num` requests per `request.rate_limit_duration_secs`, as a smooth
//! token bucket without burst: one request every `duration / num`, never two closer.
//!
//! The bucket is governor's GCRA (a well-kept crate, lock-free). Its waiting is not used:
//! governor's `until_ready` sleeps on `futures-timer`'s own timer thread and its clock, so
//! the limiter reads tokio's clock here ([`TokioClock`]) and the waiting is a tokio sleep.
//! That keeps one timer for the whole sink, and makes the bucket follow tokio's paused
//! time in tests.

use std::num::NonZeroU32;
use std::ops::Add;
use std::time::Duration;

use governor::clock::{Clock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::Instant;

/// tokio's clock, for governor.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

/// A reading of [`TokioClock`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TokioInstant(Instant);

impl Add<Nanos> for TokioInstant {
    type Output = TokioInstant;

    fn add(self, nanos: Nanos) -> TokioInstant {
        TokioInstant(self.0 + Duration::from(nanos))
    }
}

impl Reference for TokioInstant {
    fn duration_since(&self, earlier: Self) -> Nanos {
        self.0.saturating_duration_since(earlier.0).into()
    }

    fn saturating_sub(&self, duration: Nanos) -> Self {
        self.0.checked_sub(duration.into()).map(TokioInstant).unwrap_or(*self)
    }
}

impl Clock for TokioClock {
    type Instant = TokioInstant;

    fn now(&self) -> TokioInstant {
        TokioInstant(Instant::now())
    }
}

/// A sink's request rate limit.
pub struct RateLimit {
    limiter: RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<TokioInstant>>,
    interval: Duration,
}

impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit").field("interval", &self.interval).finish_non_exhaustive()
    }
}

impl RateLimit {
    /// At most `num` requests per `per`, evenly spaced (`per / num` apart; at least a
    /// nanosecond, which is no limit in practice). `num = 0` is taken as 1 (the config's
    /// check refuses it).
    pub fn new(num: u64, per: Duration) -> RateLimit {
        let nanos = per.as_nanos() / u128::from(num.max(1));
        let interval = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX).max(1));
        // Burst 1: a request may go only once the previous one is `interval` behind it.
        let quota = Quota::with_period(interval)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::MIN);
        RateLimit { limiter: RateLimiter::direct_with_clock(quota, TokioClock), interval }
    }

    /// Takes the next request's token, waiting until there is one. The gate lets one
    /// waiter at a time call this, so the waiters do not all wake at each token.
    pub async fn ready(&self) {
        loop {
            match self.limiter.check() {
                Ok(()) => return,
                Err(not_until) => tokio::time::sleep(not_until.wait_time_from(TokioClock.now())).await,
            }
        }
    }
}
