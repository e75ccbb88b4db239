//! [`SimulatedGateway`]: deterministic test cards and a ledger of authorisations per key.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    Authorization, AuthorizationRequest, GatewayError, PaymentGateway, CARD_APPROVE, CARD_DECLINE,
    CARD_FLAKY, CARD_INVALID, CARD_UNAVAILABLE,
};

/// One authorisation the gateway decided (an approval or a decline), under its key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// The idempotency key.
    pub key: String,
    /// The request.
    pub request: AuthorizationRequest,
    /// The answer.
    pub answer: Authorization,
    /// When.
    pub at: DateTime<Utc>,
}

/// A gateway for demos and tests (see the test cards of [`crate::gateway`]), keeping every
/// answer by key so that a key asked again gets the same answer and authorises nothing more.
#[derive(Debug, Default)]
pub struct SimulatedGateway {
    latency: Duration,
    inner: Mutex<Ledger>,
    /// Where the ledger is kept, one JSON line per answer, if anywhere.
    file: Option<Mutex<std::fs::File>>,
}

#[derive(Debug, Default)]
struct Ledger {
    entries: Vec<LedgerEntry>,
    by_key: HashMap<String, usize>,
    calls: HashMap<String, u64>,
}

impl SimulatedGateway {
    /// A gateway that answers at once.
    pub fn new() -> Self {
        Self::default()
    }

    /// A gateway that takes `latency` to answer, like a provider across a network.
    pub fn with_latency(latency: Duration) -> Self {
        Self {
            latency,
            ..Self::default()
        }
    }

    /// A gateway whose ledger is kept in `path` (JSON lines, appended and synced before an
    /// answer is given), so that a key asked again after a restart gets the same answer and
    /// authorises nothing more, like a real provider's.
    pub fn with_ledger_file(path: &std::path::Path, latency: Duration) -> std::io::Result<Self> {
        use std::io::BufRead;
        let mut ledger = Ledger::default();
        if path.exists() {
            let reader = std::io::BufReader::new(std::fs::File::open(path)?);
            for (n, line) in reader.lines().enumerate() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                let entry: LedgerEntry = serde_json::from_str(&line).map_err(|e| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{}:{}: not a ledger entry: {e}", path.display(), n + 1),
                    )
                })?;
                ledger
                    .by_key
                    .insert(entry.key.clone(), ledger.entries.len());
                ledger.entries.push(entry);
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self {
            latency,
            inner: Mutex::new(ledger),
            file: Some(Mutex::new(file)),
        })
    }

    /// How long it takes to answer.
    pub fn latency(&self) -> Duration {
        self.latency
    }

    /// Every answer given, oldest first.
    pub fn ledger(&self) -> Vec<LedgerEntry> {
        self.lock().entries.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The answer to `request` under `key`, recorded in the ledger.
    pub fn decide(
        &self,
        key: &str,
        request: &AuthorizationRequest,
    ) -> Result<Authorization, GatewayError> {
        if key.is_empty() {
            return Err(GatewayError::Refused(
                "an idempotency key is required".into(),
            ));
        }
        if request.amount_cents == 0 {
            return Err(GatewayError::Refused(
                "the amount must be above zero".into(),
            ));
        }
        let mut ledger = self.lock();
        if let Some(&i) = ledger.by_key.get(key) {
            let entry = &ledger.entries[i];
            return if &entry.request == request {
                Ok(entry.answer.clone())
            } else {
                Err(GatewayError::Refused(format!(
                    "key {key} was used for another request"
                )))
            };
        }
        let call = {
            let n = ledger.calls.entry(key.to_owned()).or_insert(0);
            *n += 1;
            *n
        };
        let approved = || Authorization::Approved {
            authorization: format!(
                "auth-{}",
                Uuid::new_v5(&Uuid::NAMESPACE_OID, key.as_bytes()).simple()
            ),
        };
        let answer = match request.card.as_str() {
            CARD_APPROVE => approved(),
            CARD_FLAKY if call == 1 => {
                return Err(GatewayError::Unavailable("timed out".into()));
            }
            CARD_FLAKY => approved(),
            CARD_UNAVAILABLE => return Err(GatewayError::Unavailable("timed out".into())),
            CARD_INVALID => {
                return Err(GatewayError::Refused("the card token is malformed".into()));
            }
            CARD_DECLINE => Authorization::Declined {
                reason: "insufficient funds".into(),
            },
            _ => Authorization::Declined {
                reason: "unknown card".into(),
            },
        };
        let entry = LedgerEntry {
            key: key.to_owned(),
            request: request.clone(),
            answer: answer.clone(),
            at: Utc::now(),
        };
        if let Some(file) = &self.file {
            keep(file, &entry)
                .map_err(|e| GatewayError::Unavailable(format!("the ledger failed: {e}")))?;
        }
        let index = ledger.entries.len();
        ledger.entries.push(entry);
        ledger.by_key.insert(key.to_owned(), index);
        Ok(answer)
    }
}

/// Appends `entry` to the ledger file and syncs it.
fn keep(file: &Mutex<std::fs::File>, entry: &LedgerEntry) -> std::io::Result<()> {
    use std::io::Write;
    let mut line = serde_json::to_vec(entry)?;
    line.push(b'\n');
    let mut file = file.lock().unwrap_or_else(PoisonError::into_inner);
    file.write_all(&line)?;
    file.sync_data()
}

#[async_trait]
impl PaymentGateway for SimulatedGateway {
    async fn authorize(
        &self,
        key: &str,
        request: &AuthorizationRequest,
    ) -> Result<Authorization, GatewayError> {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        self.decide(key, request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(card: &str) -> AuthorizationRequest {
        AuthorizationRequest {
            reference: "order-1".into(),
            card: card.into(),
            amount_cents: 900,
        }
    }

    #[test]
    fn one_key_authorises_once_and_answers_alike() {
        let gateway = SimulatedGateway::new();
        let first = gateway.decide("k1", &request(CARD_APPROVE));
        assert!(
            matches!(first, Ok(Authorization::Approved { .. })),
            "{first:?}"
        );
        assert_eq!(gateway.decide("k1", &request(CARD_APPROVE)), first);
        assert_eq!(gateway.ledger().len(), 1);
        let other = gateway.decide("k1", &request(CARD_DECLINE));
        assert!(matches!(other, Err(GatewayError::Refused(_))), "{other:?}");
        assert!(matches!(
            gateway.decide("", &request(CARD_APPROVE)),
            Err(GatewayError::Refused(_))
        ));
    }

    #[test]
    fn a_ledger_file_outlives_the_gateway() {
        let path = std::env::temp_dir().join(format!("ledger-{}.jsonl", Uuid::new_v4()));
        let first = SimulatedGateway::with_ledger_file(&path, Duration::ZERO).expect("open");
        let answer = first.decide("k1", &request(CARD_APPROVE)).expect("approve");
        drop(first);
        let again = SimulatedGateway::with_ledger_file(&path, Duration::ZERO).expect("reopen");
        assert_eq!(again.decide("k1", &request(CARD_APPROVE)), Ok(answer));
        assert_eq!(again.ledger().len(), 1, "nothing authorised twice");
        std::fs::remove_file(&path).expect("remove");
    }

    #[test]
    fn test_cards_answer_as_documented() {
        let gateway = SimulatedGateway::new();
        assert_eq!(
            gateway.decide("d", &request(CARD_DECLINE)),
            Ok(Authorization::Declined {
                reason: "insufficient funds".into()
            })
        );
        assert!(matches!(
            gateway.decide("f", &request(CARD_FLAKY)),
            Err(GatewayError::Unavailable(_))
        ));
        assert!(matches!(
            gateway.decide("f", &request(CARD_FLAKY)),
            Ok(Authorization::Approved { .. })
        ));
        for _ in 0..3 {
            assert!(matches!(
                gateway.decide("u", &request(CARD_UNAVAILABLE)),
                Err(GatewayError::Unavailable(_))
            ));
        }
        assert_eq!(gateway.ledger().len(), 2, "failed calls authorise nothing");
    }
}
