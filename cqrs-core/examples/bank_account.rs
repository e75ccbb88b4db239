//! Run with: cargo run -p cqrs-core --example bank_account
//!
//! An aggregate, its commands and events, handled through a `Repository` on the in-memory
//! store; then the global log as a projection would read it.

use std::sync::Arc;

use cqrs_core::{
    Aggregate, CommandError, DomainEvent, EventFilter, EventStore, InMemoryEventStore, Metadata,
    Position, Repository, SnapshotPolicy, Upcasters,
};
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Account {
    opened: bool,
    balance: u64,
}

#[derive(Clone)]
enum AccountCommand {
    Open,
    Deposit(u64),
    Withdraw(u64),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum AccountEvent {
    AccountOpened,
    MoneyDeposited { amount: u64 },
    MoneyWithdrawn { amount: u64 },
}

impl DomainEvent for AccountEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::AccountOpened => "AccountOpened",
            Self::MoneyDeposited { .. } => "MoneyDeposited",
            Self::MoneyWithdrawn { .. } => "MoneyWithdrawn",
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum AccountError {
    #[error("the account is not open")]
    NotOpen,
    #[error("insufficient funds: the balance is {balance}, {asked} was asked")]
    InsufficientFunds { balance: u64, asked: u64 },
}

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    type Id = str;
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;
    type Services = ();

    fn handle(
        &self,
        _id: &str,
        command: AccountCommand,
        _: &(),
    ) -> Result<Vec<AccountEvent>, AccountError> {
        match command {
            AccountCommand::Open if self.opened => Ok(vec![]),
            AccountCommand::Open => Ok(vec![AccountEvent::AccountOpened]),
            _ if !self.opened => Err(AccountError::NotOpen),
            AccountCommand::Deposit(amount) => Ok(vec![AccountEvent::MoneyDeposited { amount }]),
            AccountCommand::Withdraw(asked) if asked > self.balance => {
                Err(AccountError::InsufficientFunds {
                    balance: self.balance,
                    asked,
                })
            }
            AccountCommand::Withdraw(amount) => Ok(vec![AccountEvent::MoneyWithdrawn { amount }]),
        }
    }

    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::AccountOpened => self.opened = true,
            AccountEvent::MoneyDeposited { amount } => self.balance += amount,
            AccountEvent::MoneyWithdrawn { amount } => self.balance -= amount,
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = Arc::new(InMemoryEventStore::new());
    let accounts = Repository::<Account>::new(store.clone(), ())
        .with_snapshots(SnapshotPolicy::EveryNEvents(10))
        .with_conflict_retries(3);

    let request = Metadata::new_request().with_actor("alice");
    accounts
        .execute("alice", AccountCommand::Open, &request)
        .await?;
    accounts
        .execute("alice", AccountCommand::Deposit(120), &request)
        .await?;
    accounts
        .execute("alice", AccountCommand::Withdraw(20), &request)
        .await?;

    match accounts
        .execute("alice", AccountCommand::Withdraw(500), &request)
        .await
    {
        Err(CommandError::Rejected(reason)) => println!("refused, as expected: {reason}"),
        other => println!("unexpected: {other:?}"),
    }
    let alice = accounts.load("alice").await?;
    println!(
        "alice's balance: {} at version {}",
        alice.state.balance, alice.version
    );

    let page = store
        .read_all(Position::START, 100, &EventFilter::all())
        .await?;
    for recorded in &page.events {
        let envelope = recorded.decode::<AccountEvent>(&Upcasters::new())?;
        println!(
            "{} {} v{}: {:?}",
            envelope.position, envelope.stream_id, envelope.stream_version, envelope.event
        );
    }
    Ok(())
}
