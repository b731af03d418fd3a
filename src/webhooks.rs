//! Delivers webhooks from the outbox.
//!
//! The store writes a delivery in the same transaction as the change it tells of, so this
//! worker only has to send what is there: it claims what is due, POSTs it signed the
//! Standard Webhooks way under the account's secret (the `webhook-id` is the delivery's id,
//! the same on every attempt), and records how it went. A failed attempt is tried again
//! after a jittered, doubling delay, for `give_up_after` (24 hours) from the event; a
//! restart loses nothing, since everything it needs is in the store. Every URL goes through
//! the outbound guard.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use futures::StreamExt;
use reqwest::Method;
use tokio_util::sync::CancellationToken;

use crate::{
    config::WebhookDeliverySettings,
    domain::webhook::{AttemptOutcome, DueDelivery, NextStep},
    outbound::Outbound,
    signing,
    store::Store,
    telemetry,
};

/// Deliveries attempted at once.
const CONCURRENCY: usize = 8;

pub struct Deliverer {
    pub store: Arc<dyn Store>,
    pub outbound: Outbound,
    pub settings: WebhookDeliverySettings,
}

impl Deliverer {
    /// Delivers what is due every `poll_interval` until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let mut every = tokio::time::interval(self.settings.poll_interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            // An attempt in progress is let finish: its outcome is then recorded, not lost.
            self.deliver_due(&stop).await;
        }
    }

    async fn deliver_due(&self, stop: &CancellationToken) {
        let now = Utc::now();
        // Only as many as are sent at once, each claimed for longer than an attempt takes,
        // so no claim lapses while its attempt runs.
        let claim = self.settings.attempt_timeout * 2;
        let due = match self
            .store
            .claim_webhooks(now, now + claim, CONCURRENCY as u32)
            .await
        {
            Ok(due) => due,
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "reading the webhook outbox failed"
                );
                return;
            }
        };
        futures::stream::iter(due)
            .for_each_concurrent(CONCURRENCY, |delivery| async move {
                // Stopping: the claim lapses and the next process sends it.
                if !stop.is_cancelled() {
                    self.deliver(delivery).await;
                }
            })
            .await;
    }

    async fn deliver(&self, delivery: DueDelivery) {
        let result = self.attempt(&delivery).await;
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

    /// One POST: the receiver's success status, or its status (if it answered) and what went
    /// wrong.
    async fn attempt(&self, delivery: &DueDelivery) -> Result<u16, (Option<u16>, Option<String>)> {
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
            .timeout(self.settings.attempt_timeout)
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
