//! Leases: one active worker per projection across processes, bounded in time and fenced.
//!
//! A worker takes a projection's lease for a time-to-live and renews it in the background
//! every third of it. Taking a lease raises its **epoch** (a fencing token). A holder that
//! stops renewing (killed, frozen, cut off from the database) loses the lease when the
//! time-to-live runs out, and a standby takes it with a higher epoch. The deposed holder can
//! then change nothing: every commit of a live batch checks its epoch, and a handler with
//! side effects gets the [`LeaseToken`] to fence what it sends (see
//! [`LeaseToken::is_live`] and, on PostgreSQL, the `projection_fence` SQL function).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinHandle;

use crate::error::Result;
use crate::target::Target;

/// How long a lease lasts without renewal, and how often it is renewed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseOptions {
    /// A holder that has not renewed for this long loses the lease.
    pub ttl: Duration,
    /// How often the holder renews (keep it well below `ttl`).
    pub renew_every: Duration,
}

impl LeaseOptions {
    /// A lease of `ttl`, renewed every third of it.
    pub fn with_ttl(ttl: Duration) -> Self {
        Self {
            ttl,
            renew_every: ttl / 3,
        }
    }
}

impl Default for LeaseOptions {
    /// 10 seconds, renewed every 3⅓.
    fn default() -> Self {
        Self::with_ttl(Duration::from_secs(10))
    }
}

/// Who holds a projection's lease, for status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LeaseInfo {
    /// The holder: `pid@host`.
    pub holder: String,
    /// The epoch it took the lease with.
    pub epoch: u64,
    /// Whether it is still within its time-to-live.
    pub live: bool,
}

/// Proof of holding a projection's lease, as a side-effecting handler sees it: the epoch to
/// fence effects with, and whether the holder still believes it holds the lease.
#[derive(Clone, Debug)]
pub struct LeaseToken {
    projection: String,
    epoch: u64,
    valid_until: Arc<Mutex<Instant>>,
}

impl LeaseToken {
    /// A token for `epoch` of `projection`'s lease, valid for `ttl` from now. Only a lease
    /// that was taken makes one.
    pub(crate) fn new(projection: &str, epoch: u64, ttl: Duration) -> Self {
        Self {
            projection: projection.to_owned(),
            epoch,
            valid_until: Arc::new(Mutex::new(Instant::now() + ttl)),
        }
    }

    /// The projection whose lease this is.
    pub fn projection(&self) -> &str {
        &self.projection
    }

    /// The epoch (fencing token): higher for every new holder.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether the lease was renewed within its time-to-live, by this process's clock. A
    /// handler checks it right before an effect; a holder that was frozen finds it `false`
    /// on waking. (Between the check and the effect a holder can still be frozen: the
    /// receiving side must check the epoch to close that gap, e.g. with `projection_fence`.)
    pub fn is_live(&self) -> bool {
        Instant::now()
            < *self
                .valid_until
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
    }

    /// The epoch, if the lease is still live; otherwise a transient failure, so that the
    /// handler sends nothing and the event goes to the next holder. The check a
    /// side-effecting handler makes right before an effect:
    ///
    /// ```
    /// use projections::{ApplyError, Documents, LeaseToken};
    ///
    /// /// The epoch to send with an effect, or no effect at all from a deposed worker.
    /// fn epoch_to_send(docs: &dyn Documents) -> Result<Option<u64>, ApplyError> {
    ///     docs.lease().map(LeaseToken::ensure_live).transpose()
    /// }
    /// ```
    pub fn ensure_live(&self) -> Result<u64, crate::ApplyError> {
        if self.is_live() {
            Ok(self.epoch)
        } else {
            Err(crate::ApplyError::transient(format!(
                "the lease of {} (epoch {}) ran out",
                self.projection, self.epoch
            )))
        }
    }

    fn extend_to(&self, until: Instant) {
        *self
            .valid_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = until;
    }

    fn expire(&self) {
        self.extend_to(Instant::now());
    }
}

/// A held lease: its token, and the task that renews it. Dropping it stops the renewals (the
/// lease then runs out); [`Lease::release`] gives it up at once.
///
/// Runners take their leases themselves; other single-active workers (a broker consumer, a
/// tool) take one under a name of their own through any [`Target`].
#[derive(Debug)]
pub struct Lease {
    token: LeaseToken,
    renewer: JoinHandle<()>,
}

impl Lease {
    /// Takes `name`'s lease for `options.ttl` if it is free, and renews it in the background
    /// every `options.renew_every`; `None` while another holder's lease runs.
    pub async fn acquire<T: Target>(
        target: &T,
        name: &str,
        options: LeaseOptions,
    ) -> Result<Option<Self>> {
        let asked_at = Instant::now();
        let Some(epoch) = target.acquire_lease(name, &holder(), options.ttl).await? else {
            return Ok(None);
        };
        let token = LeaseToken::new(name, epoch, options.ttl);
        token.extend_to(asked_at + options.ttl);
        let renewer = tokio::spawn(renew(target.clone(), token.clone(), options));
        Ok(Some(Self { token, renewer }))
    }

    /// The token: epoch and liveness.
    pub fn token(&self) -> &LeaseToken {
        &self.token
    }

    /// Gives the lease up, so that a standby can take it without waiting for it to run out.
    pub async fn release<T: Target>(self, target: &T) {
        self.renewer.abort();
        self.token.expire();
        if let Err(error) = target
            .release_lease(&self.token.projection, self.token.epoch)
            .await
        {
            tracing::warn!(projection = %self.token.projection, %error, "cannot release the lease; it runs out instead");
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewer.abort();
        self.token.expire();
    }
}

/// Renews every `renew_every`. A renewal counts from the moment it was sent (the server's
/// lease lasts at least that long); one that fails or hangs leaves the lease to run out, and
/// one that finds another holder ends it at once.
async fn renew<T: Target>(target: T, token: LeaseToken, options: LeaseOptions) {
    loop {
        tokio::time::sleep(options.renew_every).await;
        let sent = Instant::now();
        let renewed = tokio::time::timeout(
            options.renew_every,
            target.renew_lease(&token.projection, token.epoch, options.ttl),
        )
        .await;
        match renewed {
            Ok(Ok(true)) => token.extend_to(sent + options.ttl),
            Ok(Ok(false)) => {
                tracing::warn!(projection = %token.projection, epoch = token.epoch, "the lease was taken over");
                token.expire();
                return;
            }
            Ok(Err(error)) => {
                tracing::warn!(projection = %token.projection, %error, "cannot renew the lease")
            }
            Err(_) => {
                tracing::warn!(projection = %token.projection, "renewing the lease timed out")
            }
        }
    }
}

/// This process, as a lease holder: `pid@host`.
fn holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_owned());
    format!("{}@{host}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_runs_out_unless_extended() {
        let token = LeaseToken::new("p", 3, Duration::from_millis(30));
        assert!(token.is_live());
        assert_eq!(token.epoch(), 3);
        assert_eq!(token.ensure_live().ok(), Some(3));
        std::thread::sleep(Duration::from_millis(40));
        assert!(!token.is_live());
        assert!(matches!(
            token.ensure_live(),
            Err(crate::ApplyError::Transient(_))
        ));
        token.extend_to(Instant::now() + Duration::from_secs(1));
        assert!(token.is_live());
        token.expire();
        assert!(!token.is_live());
    }
}
