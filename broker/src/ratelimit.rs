//! Rate limiting for log lines that can repeat in a loop (a refused heartbeat, an
//! unreachable controller, a replica fetch that keeps failing): one line per interval
//! per call site, and the next line that gets through says how many were suppressed.
//!
//! A [`LogLimiter`] is cheap and `const`-constructible, so a call site can keep one in a
//! `static`, or a task can own one per concern. Any task may call it.
//!
//! ```ignore
//! static REFUSED: LogLimiter = LogLimiter::new(Duration::from_secs(10));
//! if let Some(suppressed) = REFUSED.allow(Instant::now()) {
//!     warn!(suppressed, "heartbeat refused");
//! }
//! ```

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Lets one log line through per `interval` and counts the ones it holds back.
pub(crate) struct LogLimiter {
    interval: Duration,
    state: Mutex<State>,
}

struct State {
    /// When the last line was let through; `None` before the first one (or after a
    /// [`LogLimiter::reset`]), so the first line of an episode is never held back.
    last: Option<Instant>,
    /// Lines held back since the last one let through.
    suppressed: u64,
}

impl LogLimiter {
    pub(crate) const fn new(interval: Duration) -> LogLimiter {
        LogLimiter {
            interval,
            state: Mutex::new(State {
                last: None,
                suppressed: 0,
            }),
        }
    }

    /// `Some(n)` when a line may be logged at `now`, `n` being how many lines were held
    /// back since the previous one (log it with the line); `None` holds this line back
    /// and counts it.
    pub(crate) fn allow(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock();
        let due = s
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= self.interval);
        if due {
            s.last = Some(now);
            Some(std::mem::take(&mut s.suppressed))
        } else {
            s.suppressed += 1;
            None
        }
    }

    /// Ends an episode (the condition cleared): the next line gets through at once.
    /// Returns how many lines were held back since the last one let through.
    pub(crate) fn reset(&self) -> u64 {
        let mut s = self.state.lock();
        s.last = None;
        std::mem::take(&mut s.suppressed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_and_the_next_one_counts_the_rest() {
        let limiter = LogLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limiter.allow(t0), Some(0));
        for s in 1..=5 {
            assert_eq!(limiter.allow(t0 + Duration::from_secs(s)), None);
        }
        assert_eq!(limiter.allow(t0 + Duration::from_secs(10)), Some(5));
        assert_eq!(limiter.allow(t0 + Duration::from_secs(11)), None);
    }

    #[test]
    fn a_call_site_can_keep_one_in_a_static() {
        static LIMITER: LogLimiter = LogLimiter::new(Duration::from_secs(10));
        let now = Instant::now();
        assert_eq!(LIMITER.allow(now), Some(0));
        assert_eq!(LIMITER.allow(now), None);
    }

    #[test]
    fn a_reset_lets_the_next_line_through_and_reports_what_was_held() {
        let limiter = LogLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limiter.allow(t0), Some(0));
        assert_eq!(limiter.allow(t0), None);
        assert_eq!(limiter.reset(), 1);
        assert_eq!(limiter.allow(t0 + Duration::from_millis(1)), Some(0));
    }

    #[test]
    fn a_clock_that_goes_backwards_holds_lines_back_rather_than_panicking() {
        let limiter = LogLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now() + Duration::from_secs(60);
        assert_eq!(limiter.allow(t0), Some(0));
        assert_eq!(limiter.allow(t0 - Duration::from_secs(30)), None);
    }
}
