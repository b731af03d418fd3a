//! Waiting between attempts, the same way for model calls and for remote agents:
//! exponential backoff with jitter, and a peer's own `Retry-After` when it names one.

use std::{cell::Cell, future::Future, time::Duration};

use reqwest::header::{HeaderMap, RETRY_AFTER};

/// The longest `Retry-After` honoured; a peer asking for more fails the call at once.
pub(crate) const LONGEST_RETRY_AFTER: Duration = Duration::from_secs(60);

/// The delay before retry number `attempt` (0-based): exponential from `base`, capped at
/// `max`, with "equal jitter" (half fixed, half random) so that many runners do not retry
/// in step.
pub(crate) fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(2u32.saturating_pow(attempt)).min(max);
    let half = exp / 2;
    half + half.mul_f64(rand::random::<f64>())
}

tokio::task_local! {
    /// The retries made for the turn this task is taking (see [`counted`]).
    static RETRIES: Cell<u32>;
}

/// Notes one more attempt made for the turn being taken, if its retries are counted: model
/// calls, remote agents' requests and tool servers' connections all say so.
pub(crate) fn noted() {
    let _ = RETRIES.try_with(|count| count.set(count.get() + 1));
}

/// Runs `work` (a turn), and says how many retries were made within it.
pub(crate) async fn counted<F: Future>(work: F) -> (F::Output, u32) {
    RETRIES
        .scope(Cell::new(0), async move {
            let output = work.await;
            (output, RETRIES.with(Cell::get))
        })
        .await
}

/// `Retry-After` as seconds or as an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        // `inf`, `1e400` and negative values parse as floats too; none is a usable pause.
        return Duration::try_from_secs_f64(seconds).ok();
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .ok()
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn backoff_grows_is_jittered_and_capped() {
        let (base, max) = (Duration::from_millis(100), Duration::from_millis(1000));
        for attempt in 0..8 {
            let exp = Duration::from_millis(100 * 2u64.pow(attempt)).min(max);
            let d = backoff(base, max, attempt);
            assert!(
                d >= exp / 2 && d <= exp,
                "attempt {attempt}: {d:?} outside [{:?}, {exp:?}]",
                exp / 2
            );
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        let later = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        headers.insert(RETRY_AFTER, HeaderValue::from_str(&later).unwrap());
        let wait = retry_after(&headers).unwrap();
        assert!(
            wait > Duration::from_secs(25) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        for nonsense in ["soon", "inf", "1e400", "-3", "NaN"] {
            headers.insert(RETRY_AFTER, HeaderValue::from_static(nonsense));
            assert_eq!(retry_after(&headers), None, "{nonsense}");
        }
    }
}
