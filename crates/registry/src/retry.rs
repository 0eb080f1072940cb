//! Retry policy: exponential backoff with full jitter, and `Retry-After`. Throttling (429, S3's
//! `SlowDown`) has a policy of its own: it is waiting, not failing, so it is retried for as long as the
//! run's time allows, not a fixed number of times.

use std::time::{Duration, SystemTime};

use rand::Rng as _;

/// How transient failures (network errors, 429, 5xx) are retried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts of one operation, the first included (1 = no retries).
    pub max_attempts: u32,
    /// Backoff ceiling of the first retry; it doubles with each further attempt.
    pub base_delay: Duration,
    /// Upper bound of any single delay, `Retry-After` included.
    pub max_delay: Duration,
    /// Throttled requests: backoff ceiling of the first retry, doubling with each further one.
    pub throttle_base_delay: Duration,
    /// Throttled requests: upper bound of one delay (a `Retry-After` above it is honoured up to
    /// `max_delay`).
    pub throttle_max_delay: Duration,
    /// Throttled requests: how long one operation keeps retrying when the client has no deadline of
    /// its own ([`crate::Client::with_deadline`]).
    pub throttle_budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            // ECR's PutImage quota refills 10 a second: a few seconds of spread-out waiting clears a
            // burst, and a cap of 2 s keeps a throttled client from idling long after it cleared (a
            // throttled request costs the quota nothing).
            throttle_base_delay: Duration::from_millis(500),
            throttle_max_delay: Duration::from_secs(2),
            throttle_budget: Duration::from_secs(15 * 60),
        }
    }
}

impl RetryPolicy {
    /// The ceiling of the delay after failed attempt number `attempt` (1-based):
    /// `min(max_delay, base_delay * 2^(attempt-1))`.
    pub fn backoff_ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.saturating_sub(1).min(31)).unwrap_or(u32::MAX);
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// The delay before the next attempt after failed attempt number `attempt`: uniformly random in
    /// `[0, backoff_ceiling(attempt)]` ("full jitter", so that many clients hit by the same outage do
    /// not retry in lockstep), or the server's `Retry-After` capped at `max_delay`.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(wait) = retry_after {
            return wait.min(self.max_delay);
        }
        let ceiling = self.backoff_ceiling(attempt);
        if ceiling.is_zero() {
            return ceiling;
        }
        let nanos = rand::rng().random_range(0..=ceiling.as_nanos().min(u64::MAX as u128) as u64);
        Duration::from_nanos(nanos)
    }
}

impl RetryPolicy {
    /// The delay before retry number `retry` (1-based) of a throttled request: full jitter under
    /// `min(throttle_max_delay, throttle_base_delay × 2^(retry-1))`, after the server's `Retry-After`
    /// (capped at `max_delay`) when it sent one: clients told the same second then come back spread over
    /// a window that widens as they keep being throttled, not all in that second.
    pub fn throttle_delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let factor = 1u32.checked_shl(retry.saturating_sub(1).min(31)).unwrap_or(u32::MAX);
        let ceiling = self.throttle_base_delay.saturating_mul(factor).min(self.throttle_max_delay);
        let nanos = ceiling.as_nanos().min(u64::MAX as u128) as u64;
        let jitter = Duration::from_nanos(if nanos == 0 { 0 } else { rand::rng().random_range(0..=nanos) });
        retry_after.map_or(Duration::ZERO, |wait| wait.min(self.max_delay)) + jitter
    }
}

/// Parses `Retry-After`: delay-seconds, or an HTTP date (a date in the past means now).
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = parse_http_date(value)?;
    Some(at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
}

/// IMF-fixdate only (`Sun, 06 Nov 1994 08:49:37 GMT`), the form servers must send.
fn parse_http_date(value: &str) -> Option<SystemTime> {
    let parts: Vec<&str> = value.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else { return None };
    let day: u64 = day.parse().ok()?;
    let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        .iter()
        .position(|m| m == month)? as u64
        + 1;
    let year: u64 = year.parse().ok()?;
    let hms: Vec<u64> = time.split(':').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let [h, m, s] = hms.as_slice() else { return None };
    if year < 1970 || !(1..=31).contains(&day) {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm), valid for the Gregorian calendar.
    let (y, mo) = if month <= 2 { (year - 1, month + 9) } else { (year, month - 3) };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * mo + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    let secs = days * 86_400 + h * 3600 + m * 60 + s;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_within_exponential_ceiling() {
        let policy = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            ..RetryPolicy::default()
        };
        assert_eq!(policy.backoff_ceiling(1), Duration::from_millis(100));
        assert_eq!(policy.backoff_ceiling(2), Duration::from_millis(200));
        assert_eq!(policy.backoff_ceiling(4), Duration::from_millis(800));
        assert_eq!(policy.backoff_ceiling(5), Duration::from_secs(1));
        assert_eq!(policy.backoff_ceiling(1000), Duration::from_secs(1));
        for attempt in 1..12 {
            for _ in 0..200 {
                assert!(policy.delay(attempt, None) <= policy.backoff_ceiling(attempt));
            }
        }
        // Full jitter really spreads: 200 draws are not all in the top half.
        assert!((0..200).any(|_| policy.delay(3, None) < Duration::from_millis(200)));
    }

    #[test]
    fn retry_after_is_honoured_and_capped() {
        let policy = RetryPolicy { max_delay: Duration::from_secs(5), ..RetryPolicy::default() };
        assert_eq!(policy.delay(1, Some(Duration::from_secs(2))), Duration::from_secs(2));
        assert_eq!(policy.delay(1, Some(Duration::from_secs(60))), Duration::from_secs(5));
        let zero = RetryPolicy { base_delay: Duration::ZERO, ..policy };
        assert_eq!(zero.delay(3, None), Duration::ZERO);
    }

    #[test]
    fn throttled_delays_spread_under_their_ceiling_and_jitter_retry_after() {
        let policy = RetryPolicy::default();
        for retry in 1..20 {
            let ceiling =
                (policy.throttle_base_delay * 2u32.pow((retry - 1).min(20))).min(policy.throttle_max_delay);
            assert!((0..50).all(|_| policy.throttle_delay(retry, None) <= ceiling), "retry {retry}");
        }
        let told = Duration::from_secs(1);
        let delays: Vec<Duration> = (0..200).map(|_| policy.throttle_delay(1, Some(told))).collect();
        assert!(delays.iter().all(|d| *d >= told && *d <= told + policy.throttle_base_delay));
        assert!(delays.iter().any(|d| *d > told + policy.throttle_base_delay / 2), "jitter spreads");
        assert!(delays.iter().any(|d| *d < told + policy.throttle_base_delay / 2), "both ways");
        let third: Vec<Duration> = (0..200).map(|_| policy.throttle_delay(3, Some(told))).collect();
        assert!(third.iter().all(|d| *d >= told && *d <= told + policy.throttle_base_delay * 4));
        assert!(third.iter().any(|d| *d > told + policy.throttle_base_delay * 2), "the window widens");
    }

    #[test]
    fn retry_after_parsing() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"), Some(Duration::ZERO));
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777))
        );
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(SystemTime::UNIX_EPOCH));
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }
}
