//! Delivers webhooks from the outbox.
//!
//! The store writes a delivery in the same transaction as the change it tells of, so this
//! worker only has to send what is there: it claims what is due, POSTs it signed the
//! Standard Webhooks way under the account's secret (the `webhook-id` is the delivery's id,
//! the same on every attempt), and records how it went. A failed attempt is tried again
//! after a jittered, doubling delay, for `give_up_after` (24 hours) from the event; a
//! restart loses nothing, since everything it needs is in the store. Every URL goes through
//! the outbound guard.

//!
//! Receivers are kept apart: every attempt runs on its own, under one of [`CONCURRENCY`]
//! places, and no receiver (a host and port) holds more than [`PER_RECEIVER`] of them, so one that
//! hangs holds its own deliveries up and nobody else's. An attempt (the address check
//! included) is bounded by `attempt_timeout`, well inside its claim, so it cannot outlive
//! the claim and be made twice at once.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use dashmap::DashMap;
use reqwest::Method;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::{
    config::WebhookDeliverySettings,
    domain::webhook::{AttemptOutcome, DueDelivery, NextStep},
    outbound::Outbound,
    signing,
    store::Store,
    tasks::Tasks,
    telemetry,
};

/// Attempts under way at once.
pub const CONCURRENCY: usize = 16;
/// Attempts under way at once to one receiver (a host and port).
pub const PER_RECEIVER: usize = 2;

pub struct Deliverer {
    pub store: Arc<dyn Store>,
    pub outbound: Outbound,
    pub settings: WebhookDeliverySettings,
}

impl Deliverer {
    /// Delivers what is due every `poll_interval` until `stop`, each attempt a task of a
    /// group of `tasks`. On `stop`, attempts under way are let finish, so that their
    /// outcome is recorded rather than lost.
    pub async fn run(self, tasks: Tasks, stop: CancellationToken) {
        let this = Arc::new(self);
        let attempts = tasks.group();
        let places = Arc::new(Semaphore::new(CONCURRENCY));
        let busy: Arc<DashMap<String, usize>> = Arc::default();
        let mut every = tokio::time::interval(this.settings.poll_interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = every.tick() => {}
            }
            let free = places.available_permits();
            if free == 0 {
                continue;
            }
            for delivery in this.claim(free).await {
                let receiver = receiver_of(&delivery.url);
                let mut count = busy.entry(receiver.clone()).or_default();
                if *count >= PER_RECEIVER {
                    drop(count);
                    this.put_back(&delivery).await;
                    continue;
                }
                *count += 1;
                drop(count);
                let place = places
                    .clone()
                    .try_acquire_owned()
                    .expect("no more claimed than places free");
                let (this, busy) = (this.clone(), busy.clone());
                attempts.spawn("webhook attempt", async move {
                    this.deliver(delivery).await;
                    busy.remove_if_mut(&receiver, |_, count| {
                        *count -= 1;
                        *count == 0
                    });
                    drop(place);
                });
            }
        }
        attempts.wait().await;
    }

    /// Up to `limit` deliveries that are due, each claimed for longer than an attempt takes.
    async fn claim(&self, limit: usize) -> Vec<DueDelivery> {
        let now = Utc::now();
        let claim = self.settings.attempt_timeout * 2 + Duration::from_secs(5);
        match self
            .store
            .claim_webhooks(now, now + claim, limit as u32)
            .await
        {
            Ok(due) => due,
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "reading the webhook outbox failed"
                );
                Vec::new()
            }
        }
    }

    /// A delivery whose receiver has its attempts under way: due again at the next look.
    async fn put_back(&self, delivery: &DueDelivery) {
        let again = Utc::now()
            + chrono::Duration::from_std(self.settings.poll_interval).unwrap_or_default();
        if let Err(error) = self
            .store
            .unclaim_webhook(delivery.id, delivery.claimed_until, again)
            .await
        {
            tracing::warn!(
                error = format!("{error:#}"),
                "putting a webhook back failed"
            );
        }
    }

    async fn deliver(&self, delivery: DueDelivery) {
        // An attempt is a span of the trace the webhook was written in.
        let span = tracing::info_span!(
            "webhook",
            otel.name = "POST webhook",
            otel.kind = "client",
            http.request.method = "POST",
            skein.webhook.id = %delivery.id,
        );
        if let Some(traceparent) = &delivery.traceparent
            && let Ok(value) = http::HeaderValue::from_str(traceparent)
        {
            let mut headers = http::HeaderMap::new();
            headers.insert("traceparent", value);
            crate::traces::continue_from(&span, &headers);
        }
        let result = tracing::Instrument::instrument(self.attempt(&delivery), span).await;
        let at = Utc::now();
        let next = match &result {
            Ok(_) => NextStep::Delivered,
            // The receiver says the URL is gone for good.
            Err((Some(410), _)) => NextStep::GiveUp,
            Err(_) if at - delivery.created_at >= self.give_up_after() => NextStep::GiveUp,
            Err(_) => NextStep::RetryAt(at + self.backoff(delivery.attempts)),
        };
        telemetry::webhook_attempt(match next {
            NextStep::Delivered => "delivered",
            NextStep::RetryAt(_) => "retrying",
            NextStep::GiveUp => "gave_up",
        });
        let (status, error) = match result {
            Ok(status) => (Some(status), None),
            Err(failure) => failure,
        };
        let outcome = AttemptOutcome {
            at,
            status,
            error,
            next,
        };
        if let Err(error) = self
            .store
            .record_webhook_attempt(delivery.id, delivery.claimed_until, &outcome)
            .await
        {
            // The claim runs out and the attempt is made again: a receiver may see it twice,
            // with the same webhook-id, as at-least-once delivery allows.
            tracing::warn!(
                error = format!("{error:#}"),
                "recording a webhook attempt failed"
            );
        }
    }

    /// One POST, bounded whole by the attempt timeout: the receiver's success status, or its
    /// status (if it answered) and what went wrong.
    async fn attempt(&self, delivery: &DueDelivery) -> Result<u16, (Option<u16>, Option<String>)> {
        let limit = self.settings.attempt_timeout;
        tokio::time::timeout(limit, self.post(delivery))
            .await
            .unwrap_or_else(|_| {
                Err((
                    None,
                    Some(format!("no answer within {} s", limit.as_secs_f32())),
                ))
            })
    }

    async fn post(&self, delivery: &DueDelivery) -> Result<u16, (Option<u16>, Option<String>)> {
        let url = self
            .outbound
            .check(&delivery.url)
            .await
            .map_err(|e| (None, Some(format!("the URL {e}"))))?;
        let body = delivery.payload.clone().into_bytes();
        let mut request = self
            .outbound
            .request(Method::POST, url)
            .map_err(|e| (None, Some(format!("the URL {e}"))))?
            .header("content-type", "application/json");
        for (name, value) in
            signing::headers(delivery.secret.expose(), &delivery.id.to_string(), &body)
        {
            request = request.header(name, value);
        }
        match request.body(body).send().await {
            Ok(response) if response.status().is_success() => Ok(response.status().as_u16()),
            Ok(response) => Err((
                Some(response.status().as_u16()),
                Some(format!("the receiver answered {}", response.status())),
            )),
            Err(error) => Err((None, Some(format!("not delivered: {error}")))),
        }
    }

    fn backoff(&self, attempts_before: u32) -> chrono::Duration {
        let base = self.settings.retry_base;
        let exp = base
            .saturating_mul(2u32.saturating_pow(attempts_before))
            .min(self.settings.retry_max);
        let half = exp / 2;
        let wait: Duration = half + half.mul_f64(rand::random::<f64>());
        chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::hours(1))
    }

    fn give_up_after(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.settings.give_up_after).unwrap_or(chrono::Duration::days(1))
    }
}

/// The receiving service a delivery goes to, by host and port: attempts to it share its
/// places.
fn receiver_of(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|url| {
            let host = url.host_str()?.to_ascii_lowercase();
            Some(format!("{host}:{}", url.port_or_known_default()?))
        })
        .unwrap_or_default()
}
