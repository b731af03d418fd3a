//! Request rate limits per account (GCRA, from `governor`).
//!
//! Each account has a bucket of `burst` requests, refilled at `per_minute`, that all its keys
//! draw on: a new key brings no new budget. Every authenticated response says where the
//! account stands: `X-RateLimit-Limit` (the bucket size),
//! `X-RateLimit-Remaining`, and `X-RateLimit-Reset` (seconds until the bucket is full again).
//! Over the limit, the request is answered 429 with `Retry-After` before any handler runs.

use std::{net::IpAddr, num::NonZeroU32, time::Duration};

use axum::{
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use governor::{
    NotUntil, Quota, RateLimiter,
    clock::{Clock, DefaultClock, QuantaInstant},
    middleware::{StateInformationMiddleware, StateSnapshot},
    state::keyed::DefaultKeyedStateStore,
};
use uuid::Uuid;

use crate::{config::RateLimitSettings, error::Problem};

pub struct RateLimits {
    limiter:
        RateLimiter<Uuid, DefaultKeyedStateStore<Uuid>, DefaultClock, StateInformationMiddleware>,
    quota: Quota,
}

/// Where a key stands after a request was let through.
pub struct Allowance {
    limit: u32,
    remaining: u32,
    reset: Duration,
}

/// A request over the limit.
pub struct Limited {
    limit: u32,
    retry_after: Duration,
    per_minute: u32,
}

impl RateLimits {
    pub fn new(settings: &RateLimitSettings) -> Self {
        let per_minute = NonZeroU32::new(settings.per_minute.max(1)).expect("at least 1");
        let burst = NonZeroU32::new(settings.burst.max(1)).expect("at least 1");
        let quota = Quota::per_minute(per_minute).allow_burst(burst);
        Self {
            limiter: RateLimiter::dashmap(quota).with_middleware::<StateInformationMiddleware>(),
            quota,
        }
    }

    /// Takes one request from the account's bucket.
    pub fn check(&self, account: Uuid) -> Result<Allowance, Limited> {
        match self.limiter.check_key(&account) {
            Ok(snapshot) => Ok(self.allowance(&snapshot)),
            Err(not_until) => {
                crate::telemetry::rate_limited();
                Err(self.limited(&not_until))
            }
        }
    }

    fn allowance(&self, snapshot: &StateSnapshot) -> Allowance {
        let limit = self.quota.burst_size().get();
        let remaining = snapshot.remaining_burst_capacity();
        Allowance {
            limit,
            remaining,
            reset: self.quota.replenish_interval() * (limit - remaining.min(limit)),
        }
    }

    fn limited(&self, not_until: &NotUntil<QuantaInstant>) -> Limited {
        Limited {
            limit: self.quota.burst_size().get(),
            retry_after: not_until.wait_time_from(self.limiter.clock().now()),
            per_minute: per_minute(&self.quota),
        }
    }
}

fn per_minute(quota: &Quota) -> u32 {
    let nanos = quota.replenish_interval().as_nanos().max(1);
    (Duration::from_secs(60).as_nanos() / nanos) as u32
}

/// Whole seconds, rounded up: a client that waits this long is let through.
fn ceil_secs(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

fn put(headers: &mut HeaderMap, name: &'static str, value: u64) {
    headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
}

impl Allowance {
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        put(headers, "x-ratelimit-limit", self.limit.into());
        put(headers, "x-ratelimit-remaining", self.remaining.into());
        put(headers, "x-ratelimit-reset", ceil_secs(self.reset));
    }
}

impl IntoResponse for Limited {
    fn into_response(self) -> Response {
        let wait = ceil_secs(self.retry_after).max(1);
        let mut response = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "this account is over its rate limit of {} requests per minute (bursts of {}); \
                 retry after {wait} s",
                self.per_minute, self.limit
            ),
        )
        .into_response();
        let headers = response.headers_mut();
        headers.insert(header::RETRY_AFTER, HeaderValue::from(wait));
        put(headers, "x-ratelimit-limit", self.limit.into());
        put(headers, "x-ratelimit-remaining", 0);
        put(headers, "x-ratelimit-reset", wait);
        response
    }
}

/// Failed authentications (an unknown or revoked key, a bad ticket) per client address.
///
/// A failure costs the server a read; a flood of them from one address would cost many. An
/// address past `per_minute` failures is refused with 429 for a while, before any lookup,
/// unless its key is one this server has just found valid (a client with a good key behind
/// the same address carries on). The limit is per connecting address: behind a proxy that
/// is the proxy's, so give it room.
pub struct AuthFailures {
    limiter: RateLimiter<
        IpAddr,
        DefaultKeyedStateStore<IpAddr>,
        DefaultClock,
        StateInformationMiddleware,
    >,
    quota: Quota,
    /// Addresses refused until then.
    blocked: dashmap::DashMap<IpAddr, std::time::Instant>,
    per_minute: u32,
}

impl AuthFailures {
    pub fn new(per_minute: u32) -> Self {
        let per_minute = per_minute.max(1);
        let quota = Quota::per_minute(NonZeroU32::new(per_minute).expect("at least 1"));
        Self {
            limiter: RateLimiter::dashmap(quota).with_middleware::<StateInformationMiddleware>(),
            quota,
            blocked: dashmap::DashMap::new(),
            per_minute,
        }
    }

    /// 429 while `address` is refused for failing too often.
    pub fn check(&self, address: IpAddr) -> Result<(), Box<Response>> {
        let Some(until) = self.blocked.get(&address).map(|until| *until) else {
            return Ok(());
        };
        let now = std::time::Instant::now();
        if until <= now {
            self.blocked.remove_if(&address, |_, until| *until <= now);
            return Ok(());
        }
        crate::telemetry::rate_limited();
        let wait = ceil_secs(until - now).max(1);
        let mut response = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many failed authentications from this address (over {} a minute); \
                 retry after {wait} s",
                self.per_minute
            ),
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait));
        Err(Box::new(response))
    }

    /// Counts a failed authentication from `address`; the one that spends its last
    /// allowance has it refused until the allowance grows back.
    pub fn failed(&self, address: IpAddr) {
        let wait = match self.limiter.check_key(&address) {
            Ok(left) if left.remaining_burst_capacity() > 0 => return,
            Ok(_) => self.quota.replenish_interval(),
            Err(not_until) => not_until.wait_time_from(self.limiter.clock().now()),
        };
        self.blocked
            .insert(address, std::time::Instant::now() + wait);
    }

    /// Forgets addresses that have not failed lately: the maps stay as small as the
    /// addresses failing now.
    pub fn forget_old(&self) {
        self.limiter.retain_recent();
        let now = std::time::Instant::now();
        self.blocked.retain(|_, until| *until > now);
    }
}
