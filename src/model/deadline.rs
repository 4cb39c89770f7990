//! Call deadlines: the internal deadline that long reports check between queries, so they
//! end with DEADLINE_EXCEEDED in time (the transport reads the client's timeout).

use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Error, Result};

/// Smallest margin kept between the internal deadline and the client's deadline.
const MIN_MARGIN: Duration = Duration::from_millis(50);

/// The point after which a report stops starting new queries.
///
/// The gRPC server drops the handler at the client's deadline (answering CANCELLED),
/// which would also drop a query mid-flight. The internal deadline comes earlier, by a
/// fifth of the timeout but at least 50 ms, so the handler itself answers
/// DEADLINE_EXCEEDED between two short queries and no query is left running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deadline(Option<Instant>);

impl Deadline {
    /// No deadline.
    pub fn none() -> Self {
        Deadline(None)
    }

    /// `work`, or DEADLINE_EXCEEDED once the deadline passes first (`what` says what was
    /// under way). Dropping `work` must be safe: its effects, if any, stay whole.
    pub async fn bound<T>(
        &self,
        what: &str,
        work: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        match self.0 {
            None => work.await,
            Some(at) => tokio::time::timeout_at(at, work).await.unwrap_or_else(|_| {
                Err(Error::DeadlineExceeded(format!(
                    "the call's deadline passed while {what}"
                )))
            }),
        }
    }

    /// The internal deadline of a call that arrived at `arrival` with `timeout`.
    pub fn for_timeout(arrival: Instant, timeout: Duration) -> Self {
        let margin = (timeout / 5).max(MIN_MARGIN);
        Deadline(Some(arrival + timeout.saturating_sub(margin)))
    }

    /// DEADLINE_EXCEEDED when the deadline has passed; `what` says what was about to start.
    pub fn check(&self, what: &str) -> Result<()> {
        match self.0 {
            Some(at) if Instant::now() >= at => Err(Error::DeadlineExceeded(format!(
                "the call's deadline leaves no time for {what}"
            ))),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn internal_deadline_keeps_a_margin() {
        let now = Instant::now();
        assert_eq!(
            Deadline::for_timeout(now, Duration::from_secs(10)),
            Deadline(Some(now + Duration::from_secs(8)))
        );
        // Short timeouts leave no time at all: the first check fails, deterministically.
        let d = Deadline::for_timeout(now, Duration::from_millis(20));
        assert_eq!(d, Deadline(Some(now)));
        assert!(d.check("the first page").is_err());
        assert!(Deadline::none().check("anything").is_ok());
    }
}
