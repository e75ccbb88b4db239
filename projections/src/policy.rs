//! What a runner does when a projection cannot apply an event, and how it waits between
//! retries of transient failures.

use std::time::Duration;

/// What happens to an event a projection cannot handle (an [`ApplyError::Poison`](crate::ApplyError::Poison)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ErrorPolicy {
    /// Stop the projection, marked failed with the event's position, id and the error. The
    /// checkpoint stays before the event; the events before it in the batch are kept.
    #[default]
    Stop,
    /// Record the event in the dead-letter table, in the same transaction that moves the
    /// checkpoint past it, and go on.
    DeadLetter,
}

/// Exponential backoff for transient failures: 100 ms, doubling, at most `max`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(max: Duration) -> Self {
        Self {
            next: Duration::from_millis(100),
            max,
        }
    }

    /// The wait before the next attempt.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    pub(crate) fn reset(&mut self) {
        self.next = Duration::from_millis(100);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let mut backoff = Backoff::new(Duration::from_millis(500));
        let delays: Vec<u128> = (0..5).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }
}
