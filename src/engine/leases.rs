//! The lease keeper: this process's hold on the collaborations it runs.
//!
//! A runner runs under a lease ([`crate::store::Lease`]): the one writer of its channel,
//! across every process that serves the database. The keeper renews this process's leases
//! and claims expired ones (a process died: its collaborations resume here from their
//! stored messages), halts a runner whose lease was lost (the database refuses its writes
//! anyway), and starts a runner for a lease held with none (one that gave up on a store
//! outage). It runs on the engine's own tasks, so the engine's shutdown waits for it, and
//! no runner can be started after that wait has ended.

use std::time::Duration;

use tokio::time::Instant;

use super::Engine;
use crate::store::{Claim, Lease};

/// How many expired leases one scan takes: a process taking over from a dead one spreads
/// the work over scans instead of starting everything in one burst.
const CLAIM_BATCH: u32 = 50;

impl Engine {
    /// Takes up what needs a runner now, then keeps leases renewed and claims expired ones
    /// until shutdown. `take_all` also takes live leases: for a process that is the only one
    /// (SQLite), whose predecessor's leases would otherwise stall it until they expired.
    /// Returns how many collaborations were taken up at once.
    pub async fn recover(&self, take_all: bool) -> anyhow::Result<usize> {
        let which = if take_all {
            Claim::All
        } else {
            Claim::Expired { limit: CLAIM_BATCH }
        };
        let leases = self.claim(which).await?;
        let count = leases.len();
        leases
            .into_iter()
            .for_each(|lease| self.launch(lease, None));
        self.inner
            .tasks
            .spawn_essential("lease keeper", self.clone().keep_leases());
        Ok(count)
    }

    pub(super) async fn claim(&self, which: Claim) -> anyhow::Result<Vec<Lease>> {
        let inner = &self.inner;
        Ok(inner
            .store
            .claim_leases(inner.owner, inner.crew.settings.lease_ttl, which)
            .await?)
    }

    /// Renews this process's leases and claims expired ones until shutdown.
    async fn keep_leases(self) {
        let ttl = self.inner.crew.settings.lease_ttl;
        let mut renew = tokio::time::interval(ttl / 3);
        let mut scan = tokio::time::interval((ttl / 3).min(Duration::from_secs(1)));
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut renewed_at = Instant::now();
        loop {
            tokio::select! {
                _ = self.inner.crew.shutdown.cancelled() => return,
                _ = renew.tick() => {
                    let began = Instant::now();
                    match self.inner.store.renew_leases(self.inner.owner, ttl).await {
                        Ok(held) => {
                            renewed_at = began;
                            self.reconcile(&held, began);
                        }
                        Err(error) => {
                            tracing::warn!(error = format!("{error:#}"), "renewing leases failed");
                            if began.duration_since(renewed_at) >= ttl {
                                // They may have been claimed elsewhere by now.
                                self.inner.runners.iter().for_each(|runner| runner.halt.cancel());
                            }
                        }
                    }
                }
                _ = scan.tick() => match self.claim(Claim::Expired { limit: CLAIM_BATCH }).await {
                    Ok(leases) => {
                        if !leases.is_empty() {
                            tracing::info!(count = leases.len(), "took over collaborations");
                        }
                        leases.into_iter().for_each(|lease| self.launch(lease, None));
                    }
                    Err(error) => tracing::warn!(error = format!("{error:#}"), "claiming leases failed"),
                },
            }
        }
    }

    /// A runner whose lease was not renewed lost it: it is halted before it writes again. A
    /// runner claimed after the renewal began is left alone (its lease is newer than what
    /// the renewal saw).
    fn reconcile(&self, held: &[Lease], renewal_began: Instant) {
        for runner in self.inner.runners.iter() {
            let still_held = held.contains(&runner.lease);
            if !still_held && runner.claimed_at < renewal_began {
                tracing::warn!(collaboration = %runner.lease.collaboration_id, "lost the lease; halting the runner");
                runner.halt.cancel();
            }
        }
        for lease in held {
            if !self.inner.runners.contains_key(&lease.collaboration_id) {
                self.launch(*lease, None);
            }
        }
    }
}
