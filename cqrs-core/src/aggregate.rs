//! The [`Aggregate`]: the consistency boundary that decides (`handle`) and evolves (`apply`).

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::event::DomainEvent;
use crate::upcast::Upcasters;

/// A consistency boundary of the domain: it accepts or refuses commands, and its state is
/// the fold of its own events.
///
/// - [`handle`](Aggregate::handle) *decides*: it reads the state and the command and returns
///   the events to store, or a domain error. It never mutates state and does no I/O of its
///   own; anything it needs from outside comes through [`Aggregate::Services`].
/// - [`apply`](Aggregate::apply) *evolves*: it folds one event into the state and never fails
///   (an event is a fact that already happened).
///
/// ```
/// use cqrs_core::{Aggregate, DomainEvent, InMemoryEventStore, Metadata, Repository};
/// use serde::{Deserialize, Serialize};
/// use std::sync::Arc;
///
/// #[derive(Default, Serialize, Deserialize)]
/// struct Account { opened: bool, balance: u64 }
///
/// #[derive(Clone)]
/// enum AccountCommand { Open, Deposit(u64), Withdraw(u64) }
///
/// #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// enum AccountEvent {
///     #[serde(rename = "AccountOpened")]
///     Opened,
///     #[serde(rename = "MoneyDeposited")]
///     Deposited { amount: u64 },
///     #[serde(rename = "MoneyWithdrawn")]
///     Withdrew { amount: u64 },
/// }
///
/// impl DomainEvent for AccountEvent {
///     fn event_type(&self) -> &'static str {
///         match self {
///             Self::Opened => "AccountOpened",
///             Self::Deposited { .. } => "MoneyDeposited",
///             Self::Withdrew { .. } => "MoneyWithdrawn",
///         }
///     }
/// }
///
/// #[derive(Debug, PartialEq, thiserror::Error)]
/// enum AccountError {
///     #[error("the account is not open")]
///     NotOpen,
///     #[error("insufficient funds: balance {balance}, asked {asked}")]
///     InsufficientFunds { balance: u64, asked: u64 },
/// }
///
/// impl Aggregate for Account {
///     const TYPE: &'static str = "account";
///     type Id = str;
///     type Command = AccountCommand;
///     type Event = AccountEvent;
///     type Error = AccountError;
///     type Services = ();
///
///     fn handle(&self, _id: &str, command: AccountCommand, _: &()) -> Result<Vec<AccountEvent>, AccountError> {
///         match command {
///             AccountCommand::Open if self.opened => Ok(vec![]),
///             AccountCommand::Open => Ok(vec![AccountEvent::Opened]),
///             _ if !self.opened => Err(AccountError::NotOpen),
///             AccountCommand::Deposit(amount) => Ok(vec![AccountEvent::Deposited { amount }]),
///             AccountCommand::Withdraw(asked) if asked > self.balance => {
///                 Err(AccountError::InsufficientFunds { balance: self.balance, asked })
///             }
///             AccountCommand::Withdraw(amount) => Ok(vec![AccountEvent::Withdrew { amount }]),
///         }
///     }
///
///     fn apply(&mut self, event: &AccountEvent) {
///         match event {
///             AccountEvent::Opened => self.opened = true,
///             AccountEvent::Deposited { amount } => self.balance += amount,
///             AccountEvent::Withdrew { amount } => self.balance -= amount,
///         }
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let accounts = Repository::<Account>::new(Arc::new(InMemoryEventStore::new()), ());
/// let request = Metadata::new_request();
/// accounts.execute("alice", AccountCommand::Open, &request).await.unwrap();
/// accounts.execute("alice", AccountCommand::Deposit(100), &request).await.unwrap();
/// let refused = accounts.execute("alice", AccountCommand::Withdraw(500), &request).await;
/// assert!(refused.is_err());
/// assert_eq!(accounts.load("alice").await.unwrap().state.balance, 100);
/// # });
/// ```
pub trait Aggregate: Default + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The aggregate type's name: the category of its streams (`"{TYPE}-{id}"`). Must not
    /// contain `-`.
    const TYPE: &'static str;

    /// The shape of the serialised state for snapshots; bump it when the state's shape
    /// changes and old snapshots are ignored.
    const SNAPSHOT_VERSION: u32 = 1;

    /// Its identity: what names one instance (and, after [`TYPE`](Aggregate::TYPE), its
    /// stream: `"{TYPE}-{id}"`). `str` for plain string ids; a newtype such as an `OrderId`
    /// otherwise. [`handle`](Aggregate::handle) is given it, so commands need not carry it.
    type Id: ?Sized + std::fmt::Display + Send + Sync + 'static;

    /// What callers ask of it, named in the imperative (`PlaceOrder`). `Clone` so that a
    /// command that lost a race can be handled again on the fresh state.
    type Command: Clone + Send;
    /// What it records, named in the past tense (`OrderPlaced`).
    type Event: DomainEvent;
    /// Why it refuses a command.
    type Error: std::error::Error + Send + Sync + 'static;
    /// Outside capabilities the decision needs (a pricing table, a payment gateway); `()` if none.
    type Services: Send + Sync + 'static;

    /// Decides what happens to the aggregate `id`: the events to record, or why not. Never
    /// mutates `self`.
    fn handle(
        &self,
        id: &Self::Id,
        command: Self::Command,
        services: &Self::Services,
    ) -> Result<Vec<Self::Event>, Self::Error>;

    /// Folds one event into the state. Never fails.
    fn apply(&mut self, event: &Self::Event);

    /// The steps that bring its events stored in older shapes to the current one. The
    /// [`Repository`](crate::Repository) and typed projections both decode with them, so an
    /// upcast event reads the same on the write side and in every read model.
    fn upcasters() -> Upcasters {
        Upcasters::new()
    }
}
