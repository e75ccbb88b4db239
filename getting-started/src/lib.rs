//! A bank-account service in one page; `docs/getting-started.md` walks through it.
use std::time::Duration;

use axum::extract::{Path, State};
use axum::{http::StatusCode, routing::post, Json, Router};
use cqrs_core::{Aggregate, CommandError, DomainEvent, Metadata, Repository};
use projections::{ApplyError, EventOf, Fold, ProjectionHost};
use serde::{Deserialize, Serialize};

/// The aggregate: what its rules need to know, nothing more.
#[derive(Default, Serialize, Deserialize)]
pub struct Account {
    balance: u64,
}

/// What callers ask of an account: `{"deposit": {"amount": 5}}`.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum AccountCommand {
    Deposit { amount: u64 },
    Withdraw { amount: u64 },
}

/// What an account records: the variant names are the stored event types.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum AccountEvent {
    Deposited { amount: u64 },
    Withdrew { amount: u64 },
}

impl DomainEvent for AccountEvent {}

/// Why an account refuses a command.
#[derive(Debug, thiserror::Error)]
#[error("insufficient funds: the balance is {0}")]
pub struct InsufficientFunds(u64);

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    type Id = str;
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = InsufficientFunds;
    type Services = ();

    fn handle(
        &self,
        _: &str,
        command: AccountCommand,
        _: &(),
    ) -> Result<Vec<AccountEvent>, Self::Error> {
        match command {
            AccountCommand::Deposit { amount } => Ok(vec![AccountEvent::Deposited { amount }]),
            AccountCommand::Withdraw { amount } if amount > self.balance => {
                Err(InsufficientFunds(self.balance))
            }
            AccountCommand::Withdraw { amount } => Ok(vec![AccountEvent::Withdrew { amount }]),
        }
    }

    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Deposited { amount } => self.balance += amount,
            AccountEvent::Withdrew { amount } => self.balance -= amount,
        }
    }
}

/// The read model: each account's balance.
pub struct Balances;

impl Fold for Balances {
    type Aggregate = Account;
    type Doc = u64;
    const NAME: &'static str = "balances";

    fn evolve(&self, doc: Option<u64>, e: &EventOf<Account>) -> Result<Option<u64>, ApplyError> {
        let balance = match e.event {
            AccountEvent::Deposited { amount } => doc.unwrap_or(0).checked_add(amount),
            AccountEvent::Withdrew { amount } => doc.unwrap_or(0).checked_sub(amount),
        };
        balance.map(Some).ok_or_else(|| ApplyError::poison("the balance would leave u64"))
    }
}

/// The service on PostgreSQL at `database_url` (migrated), in memory without one: its HTTP
/// API, and the host that runs its read model (`host.run(shutdown)`).
pub async fn open(database_url: Option<&str>) -> projections::Result<(Router, ProjectionHost)> {
    let host = ProjectionHost::open(database_url).await?.with_typed(Balances);
    let accounts = Repository::new(host.store().clone(), ()).with_conflict_retries(5);
    let routes = Router::new().route("/accounts/{id}", post(execute).get(balance));
    Ok((routes.with_state(App(accounts, host.clone())), host))
}

/// What the routes share: commands go through the repository, queries through the host.
#[derive(Clone)]
struct App(Repository<Account>, ProjectionHost);

type Reply = Result<Json<u64>, (StatusCode, String)>;

/// `POST /accounts/{id}`: carries out a command, answers the new balance.
async fn execute(State(app): State<App>, id: Path<String>, cmd: Json<AccountCommand>) -> Reply {
    let events =
        app.0.execute(&id, cmd.0, &Metadata::new_request()).await.map_err(|e| match e {
            CommandError::Rejected(e) => (StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
            e => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        })?;
    // Read your own write: answer once the read model holds the new events.
    let at = events.last().map(|e| e.position).unwrap_or_default();
    let waited = app.1.wait_for(Balances::NAME, at, Duration::from_secs(5)).await;
    if !waited.as_ref().is_ok_and(|w| w.is_reached()) {
        return Err((StatusCode::SERVICE_UNAVAILABLE, format!("read model behind: {waited:?}")));
    }
    balance(State(app), id).await
}

/// `GET /accounts/{id}`: the balance, as the read model has it.
async fn balance(State(app): State<App>, Path(id): Path<String>) -> Reply {
    match app.1.document::<Balances>(&id).await {
        Ok(Some(balance)) => Ok(Json(balance)),
        Ok(None) => Err((StatusCode::NOT_FOUND, format!("no account {id}"))),
        Err(e) => Err((StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    }
}
