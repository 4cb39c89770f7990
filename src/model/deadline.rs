//! Call deadlines: parsing the `grpc-timeout` header value and the internal deadline
//! that long reports check between queries, so they end with DEADLINE_EXCEEDED in time.

use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Error, Result};

/// Smallest margin kept between the internal deadline and the client's deadline.
const MIN_MARGIN: Duration = Duration::from_millis(50);

/// Parses a `grpc-timeout` header value: 1 to 8 ASCII digits followed by a unit
/// (`H`ours, `M`inutes, `S`econds, `m`illiseconds, `u` microseconds, `n`anoseconds).
/// `None` when malformed.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let unit = value.chars().last()?;
    let digits = value.get(..value.len() - unit.len_utf8())?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(n.checked_mul(3600)?),
        'M' => Duration::from_secs(n.checked_mul(60)?),
        'S' => Duration::from_secs(n),
        'm' => Duration::from_millis(n),
        'u' => Duration::from_micros(n),
        'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The point after which a report stops starting new queries.
///
/// tonic's server drops the handler at the client's deadline (answering CANCELLED),
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

    /// The internal deadline of a call with these request headers, arriving now.
    pub fn of_call(metadata: &tonic::metadata::MetadataMap) -> Self {
        metadata
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
            .map_or(Deadline::none(), |t| {
                Deadline::for_timeout(Instant::now(), t)
            })
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
    fn parses_every_unit() {
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("10S"), Some(Duration::from_secs(10)));
        assert_eq!(parse_grpc_timeout("1m"), Some(Duration::from_millis(1)));
        assert_eq!(parse_grpc_timeout("250u"), Some(Duration::from_micros(250)));
        assert_eq!(
            parse_grpc_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in [
            "",
            "m",
            "10",
            "10x",
            "-1m",
            "1.5S",
            "123456789S",
            " 1S",
            "1 S",
            "1é",
        ] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

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
