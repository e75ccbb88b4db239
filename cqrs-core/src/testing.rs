//! Given / when / then: test an aggregate's decisions with no store at all.
//!
//! ```
//! # use cqrs_core::{Aggregate, DomainEvent};
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Default, Serialize, Deserialize)] struct Light { on: bool }
//! # #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)] enum Switched { On, Off }
//! # impl DomainEvent for Switched { fn event_type(&self) -> &'static str { match self { Self::On => "On", Self::Off => "Off" } } }
//! # #[derive(Debug, PartialEq, thiserror::Error)] #[error("already on")] struct AlreadyOn;
//! # impl Aggregate for Light {
//! #     const TYPE: &'static str = "light";
//! #     type Id = str;
//! #     type Command = ();
//! #     type Event = Switched;
//! #     type Error = AlreadyOn;
//! #     type Services = ();
//! #     fn handle(&self, _: &str, _: (), _: &()) -> Result<Vec<Switched>, AlreadyOn> {
//! #         if self.on { Err(AlreadyOn) } else { Ok(vec![Switched::On]) }
//! #     }
//! #     fn apply(&mut self, e: &Switched) { self.on = *e == Switched::On; }
//! # }
//! use cqrs_core::testing::AggregateTest;
//!
//! AggregateTest::<Light>::default()
//!     .given([Switched::Off])
//!     .when(())
//!     .then_expect([Switched::On]);
//!
//! AggregateTest::<Light>::default()
//!     .given([Switched::On])
//!     .when(())
//!     .then_expect_error(AlreadyOn);
//! ```

use std::fmt::Debug;

use crate::aggregate::Aggregate;

/// A test of one aggregate: its history (`given`) and the services its decisions use.
pub struct AggregateTest<A: Aggregate> {
    state: A,
    services: A::Services,
}

impl<A: Aggregate> Default for AggregateTest<A>
where
    A::Services: Default,
{
    fn default() -> Self {
        Self::with_services(A::Services::default())
    }
}

impl<A: Aggregate> AggregateTest<A> {
    /// A test whose `handle` gets these services.
    pub fn with_services(services: A::Services) -> Self {
        Self {
            state: A::default(),
            services,
        }
    }

    /// The aggregate's history: these events are applied, in order, before the command.
    pub fn given(mut self, events: impl IntoIterator<Item = A::Event>) -> Self {
        for event in events {
            self.state.apply(&event);
        }
        self
    }

    /// The aggregate `id` handles `command`.
    pub fn when_on(self, id: &A::Id, command: A::Command) -> AggregateOutcome<A> {
        let result = self.state.handle(id, command, &self.services);
        AggregateOutcome {
            state: self.state,
            result,
        }
    }
}

impl<A: Aggregate<Id = str>> AggregateTest<A> {
    /// The aggregate handles `command`, as the aggregate `"test"` (for aggregates with plain
    /// string ids; [`when_on`](AggregateTest::when_on) names the id).
    pub fn when(self, command: A::Command) -> AggregateOutcome<A> {
        self.when_on("test", command)
    }
}

/// What the aggregate decided in a test; assert on it with the `then_*` methods.
pub struct AggregateOutcome<A: Aggregate> {
    state: A,
    result: Result<Vec<A::Event>, A::Error>,
}

impl<A: Aggregate> AggregateOutcome<A> {
    /// Asserts that the command was accepted with exactly these events.
    #[track_caller]
    pub fn then_expect(self, expected: impl IntoIterator<Item = A::Event>) -> A
    where
        A::Event: PartialEq,
        A::Error: Debug,
    {
        let expected: Vec<_> = expected.into_iter().collect();
        let Self { mut state, result } = self;
        match result {
            Ok(events) => {
                assert_eq!(events, expected, "the command produced other events");
                for event in &events {
                    state.apply(event);
                }
                state
            }
            Err(error) => panic!("expected events {expected:?}, but the command failed: {error:?}"),
        }
    }

    /// Asserts that the command was refused with exactly this error.
    #[track_caller]
    pub fn then_expect_error(self, expected: A::Error)
    where
        A::Error: PartialEq + Debug,
    {
        match self.result {
            Ok(events) => {
                panic!("expected error {expected:?}, but the command produced {events:?}")
            }
            Err(error) => assert_eq!(error, expected, "the command failed with another error"),
        }
    }

    /// Asserts that the command was refused with an error that satisfies `check`.
    #[track_caller]
    pub fn then_expect_error_matching(self, check: impl FnOnce(&A::Error) -> bool)
    where
        A::Error: Debug,
    {
        match self.result {
            Ok(events) => panic!("expected an error, but the command produced {events:?}"),
            Err(error) => assert!(check(&error), "unexpected error: {error:?}"),
        }
    }

    /// The raw result, for assertions the helpers do not cover.
    pub fn into_result(self) -> Result<Vec<A::Event>, A::Error> {
        self.result
    }
}
