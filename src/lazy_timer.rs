//! One tokio timer for a state machine's life, re-armed only when its next
//! deadline is earlier than the armed one. A media session's deadline moves
//! later with nearly every packet, and re-registering a tokio timer per
//! packet costs more than an occasional early wake-up, which the state
//! machine handles as a timeout with nothing due.

use std::pin::Pin;
use std::time::{Duration, Instant};

use tokio::time::Sleep;

pub(crate) struct LazyTimer {
    sleep: Pin<Box<Sleep>>,
    armed: Option<Instant>,
}

impl Default for LazyTimer {
    fn default() -> Self {
        LazyTimer {
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            armed: None,
        }
    }
}

impl LazyTimer {
    /// Makes sure the timer fires no later than `at`.
    pub(crate) fn arm(&mut self, at: Instant) {
        if self.armed.is_none_or(|armed| at < armed) {
            self.sleep
                .as_mut()
                .reset(tokio::time::Instant::from_std(at));
            self.armed = Some(at);
        }
    }

    #[cfg(test)]
    pub(crate) fn is_armed(&self) -> bool {
        self.armed.is_some()
    }

    /// Waits for the armed deadline and disarms. Pending forever when not
    /// armed; cancel-safe (the deadline stays armed if the wait is dropped).
    pub(crate) async fn fired(&mut self) {
        if self.armed.is_none() {
            return std::future::pending().await;
        }
        self.sleep.as_mut().await;
        self.armed = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_rearms_a_later_one_does_not() {
        // Paused tokio time: read the clock from tokio, not std.
        let t0 = tokio::time::Instant::now().into_std();
        let mut timer = LazyTimer::default();
        assert!(!timer.is_armed());
        timer.arm(t0 + Duration::from_millis(100));
        timer.arm(t0 + Duration::from_millis(300)); // later: kept at 100
        timer.fired().await;
        assert_eq!(
            tokio::time::Instant::now().into_std() - t0,
            Duration::from_millis(100)
        );
        assert!(!timer.is_armed());
        timer.arm(t0 + Duration::from_millis(300));
        timer.arm(t0 + Duration::from_millis(200)); // earlier: re-armed
        timer.fired().await;
        assert_eq!(
            tokio::time::Instant::now().into_std() - t0,
            Duration::from_millis(200)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_unarmed_timer_never_fires() {
        let mut timer = LazyTimer::default();
        let r = tokio::time::timeout(Duration::from_secs(3600), timer.fired()).await;
        assert!(r.is_err());
    }
}
