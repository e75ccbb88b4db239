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
    /// When it was voided, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voided_at: Option<DateTime<Utc>>,
}

/// One line of the ledger file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum LedgerLine {
    /// An answer.
    Answer(LedgerEntry),
    /// A void of a key.
    Void {
        /// The key.
        key: String,
        /// When.
        at: DateTime<Utc>,
    },
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
    /// Keys voided before anything was authorised under them.
    voided: HashMap<String, DateTime<Utc>>,
}

impl Ledger {
    /// Applies a void of `key` at `at`; whether an approval was released.
    fn void(&mut self, key: &str, at: DateTime<Utc>) -> bool {
        match self.by_key.get(key) {
            Some(&i) => {
                let entry = &mut self.entries[i];
                let approved = matches!(entry.answer, Authorization::Approved { .. });
                let released = approved && entry.voided_at.is_none();
                entry.voided_at.get_or_insert(at);
                released
            }
            None => {
                self.voided.entry(key.to_owned()).or_insert(at);
                false
            }
        }
    }
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
                let line: LedgerLine = read_line(&line).map_err(|e| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{}:{}: not a ledger line: {e}", path.display(), n + 1),
                    )
                })?;
                match line {
                    LedgerLine::Answer(entry) => {
                        ledger
                            .by_key
                            .insert(entry.key.clone(), ledger.entries.len());
                        ledger.entries.push(entry);
                    }
                    LedgerLine::Void { key, at } => {
                        ledger.void(&key, at);
                    }
                }
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
            return if &entry.request != request {
                Err(GatewayError::Refused(format!(
                    "key {key} was used for another request"
                )))
            } else if entry.voided_at.is_some() {
                // Asked again after the void: what it authorised holds nothing any more.
                Ok(Authorization::Declined {
                    reason: "voided".into(),
                })
            } else {
                Ok(entry.answer.clone())
            };
        }
        let call = {
            let n = ledger.calls.entry(key.to_owned()).or_insert(0);
            *n += 1;
            *n
        };
        if ledger.voided.contains_key(key) {
            // Voided before it was asked: nothing may be authorised under it any more.
            let answer = Authorization::Declined {
                reason: "voided".into(),
            };
            return self.record(&mut ledger, key, request, answer);
        }
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
        self.record(&mut ledger, key, request, answer)
    }

    /// Keeps `answer` for `key` (in the file first, if there is one) and gives it.
    fn record(
        &self,
        ledger: &mut Ledger,
        key: &str,
        request: &AuthorizationRequest,
        answer: Authorization,
    ) -> Result<Authorization, GatewayError> {
        let entry = LedgerEntry {
            key: key.to_owned(),
            request: request.clone(),
            answer: answer.clone(),
            at: Utc::now(),
            voided_at: None,
        };
        self.keep(&LedgerLine::Answer(entry.clone()))?;
        let index = ledger.entries.len();
        ledger.entries.push(entry);
        ledger.by_key.insert(key.to_owned(), index);
        Ok(answer)
    }

    /// Voids `key` (see [`PaymentGateway::void`]).
    pub fn void_key(&self, key: &str) -> Result<bool, GatewayError> {
        if key.is_empty() {
            return Err(GatewayError::Refused(
                "an idempotency key is required".into(),
            ));
        }
        let mut ledger = self.lock();
        let at = Utc::now();
        self.keep(&LedgerLine::Void {
            key: key.to_owned(),
            at,
        })?;
        Ok(ledger.void(key, at))
    }

    /// Appends `line` to the ledger file, if there is one, and syncs it.
    fn keep(&self, line: &LedgerLine) -> Result<(), GatewayError> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        append_line(file, line)
            .map_err(|e| GatewayError::Unavailable(format!("the ledger failed: {e}")))
    }
}

/// A line of the ledger file; a line written before voids existed (a bare answer, with no
/// `kind`) reads as an answer.
fn read_line(line: &str) -> serde_json::Result<LedgerLine> {
    serde_json::from_str(line).or_else(|tagged| {
        serde_json::from_str::<LedgerEntry>(line)
            .map(LedgerLine::Answer)
            .map_err(|_| tagged)
    })
}

/// Appends `line` to the ledger file and syncs it.
fn append_line(file: &Mutex<std::fs::File>, line: &LedgerLine) -> std::io::Result<()> {
    use std::io::Write;
    let mut bytes = serde_json::to_vec(line)?;
    bytes.push(b'\n');
    let mut file = file.lock().unwrap_or_else(PoisonError::into_inner);
    file.write_all(&bytes)?;
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

    async fn void(&self, key: &str) -> Result<bool, GatewayError> {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        self.void_key(key)
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
        // A line from before voids existed still reads.
        let legacy = LedgerEntry {
            key: "k0".into(),
            request: request(CARD_APPROVE),
            answer: Authorization::Declined {
                reason: "unknown card".into(),
            },
            at: Utc::now(),
            voided_at: None,
        };
        std::fs::write(
            &path,
            format!("{}\n", serde_json::to_string(&legacy).expect("json")),
        )
        .expect("write");
        let first = SimulatedGateway::with_ledger_file(&path, Duration::ZERO).expect("open");
        let answer = first.decide("k1", &request(CARD_APPROVE)).expect("approve");
        assert_eq!(first.void_key("k2"), Ok(false));
        drop(first);
        let again = SimulatedGateway::with_ledger_file(&path, Duration::ZERO).expect("reopen");
        assert_eq!(again.decide("k1", &request(CARD_APPROVE)), Ok(answer));
        assert!(matches!(
            again.decide("k2", &request(CARD_APPROVE)),
            Ok(Authorization::Declined { .. })
        ));
        assert_eq!(
            again.ledger().len(),
            3,
            "k0 read back, nothing authorised twice, k2 declined"
        );
        std::fs::remove_file(&path).expect("remove");
    }

    #[test]
    fn a_void_releases_an_approval_and_declines_what_comes_after() {
        let gateway = SimulatedGateway::new();
        assert!(matches!(
            gateway.decide("k1", &request(CARD_APPROVE)),
            Ok(Authorization::Approved { .. })
        ));
        assert_eq!(gateway.void_key("k1"), Ok(true));
        assert_eq!(
            gateway.void_key("k1"),
            Ok(false),
            "voiding again changes nothing"
        );
        assert!(gateway.ledger()[0].voided_at.is_some());
        assert_eq!(
            gateway.decide("k1", &request(CARD_APPROVE)),
            Ok(Authorization::Declined {
                reason: "voided".into()
            }),
            "asked again after the void"
        );
        // Voided before it was asked (the call's answer was lost, or it comes late).
        assert_eq!(gateway.void_key("k2"), Ok(false));
        assert_eq!(
            gateway.decide("k2", &request(CARD_APPROVE)),
            Ok(Authorization::Declined {
                reason: "voided".into()
            })
        );
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
