//! A bank-account service in one page; `docs/getting-started.md` walks through it.
use axum::{extract::Path, extract::State, http::StatusCode, routing::post, Json, Router};
use cqrs_core::{Aggregate, CommandError, DomainEvent, Error, Metadata, Repository};
use projections::{ApplyError, EventOf, Fold, ProjectionHost};
use {serde::Deserialize, serde::Serialize, AccountCommand::*, AccountEvent::*};

/// The aggregate: what its rules need to know, nothing more.
#[derive(Default, Serialize, Deserialize)]
pub struct Account(u64);

/// What callers ask of an account: `{"Deposit": 5}` or `{"Withdraw": 5}`.
#[derive(Clone, Debug, Deserialize)]
#[allow(missing_docs)]
pub enum AccountCommand {
    Deposit(u64),
    Withdraw(u64),
}

/// What an account records; the variant names are the stored event types.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum AccountEvent {
    Deposited { amount: u64 },
    Withdrew { amount: u64 },
}
impl DomainEvent for AccountEvent {}

/// Why an account refuses a command.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} refused: the balance is {1}")]
pub struct Refused(AccountCommand, u64);

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    type Id = str;
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = Refused;
    type Services = ();

    fn handle(&self, _: &str, cmd: AccountCommand, _: &()) -> Result<Vec<AccountEvent>, Refused> {
        match cmd {
            Deposit(n) if self.0.checked_add(n).is_some() => Ok(vec![Deposited { amount: n }]),
            Withdraw(n) if n <= self.0 => Ok(vec![Withdrew { amount: n }]),
            refused => Err(Refused(refused, self.0)),
        }
    }

    fn apply(&mut self, event: &AccountEvent) {
        match *event {
            Deposited { amount } => self.0 = self.0.saturating_add(amount),
            Withdrew { amount } => self.0 = self.0.saturating_sub(amount),
        }
    }
}

/// The read model: each account's balance, one document per account.
pub struct Balances;
impl Fold for Balances {
    type Aggregate = Account;
    type Doc = u64;
    const NAME: &'static str = "balances";

    fn evolve(&self, doc: Option<u64>, e: &EventOf<Account>) -> Result<Option<u64>, ApplyError> {
        let mut account = Account(doc.unwrap_or(0));
        account.apply(&e.event); // saturates: never panics, even after a skipped event
        Ok(Some(account.0))
    }
}

/// The HTTP API and the host of its read model, on PostgreSQL at `database_url` or in memory.
pub async fn open(database_url: Option<&str>) -> projections::Result<(Router, ProjectionHost)> {
    let host = ProjectionHost::open(database_url).await?.with_typed(Balances);
    let app = (Repository::new(host.store().clone(), ()).with_conflict_retries(5), host.clone());
    Ok((Router::new().route("/accounts/{id}", post(execute).get(balance)).with_state(app), host))
}

type App = State<(Repository<Account>, ProjectionHost)>;
type Reply = Result<Json<u64>, (StatusCode, String)>;

/// `POST /accounts/{id}`: runs a command; answers the balance once the read model has it.
async fn execute(State(app): App, id: Path<String>, cmd: Json<AccountCommand>) -> Reply {
    let done = app.0.execute(&id, cmd.0, &Metadata::new_request()).await.map_err(|e| match e {
        CommandError::Rejected(e) => (StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
        CommandError::Store(e @ Error::InvalidInput(_)) => (StatusCode::BAD_REQUEST, e.to_string()),
        e => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    })?;
    let at = done.last().map(|e| e.position).unwrap_or_default();
    match app.1.wait_for(Balances::NAME, at, std::time::Duration::from_secs(5)).await {
        Ok(waited) if waited.is_reached() => balance(State(app), id).await,
        waited => Err((StatusCode::ACCEPTED, format!("stored; read model behind: {waited:?}"))),
    }
}

async fn balance(State(app): App, Path(id): Path<String>) -> Reply {
    let doc = app.1.document::<Balances>(&id).await;
    let doc = doc.map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    doc.map(Json).ok_or((StatusCode::NOT_FOUND, format!("no account {id}")))
}
