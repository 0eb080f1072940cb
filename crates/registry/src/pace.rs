//! Pacing writes to a registry host: one adaptive limiter per host and kind of write, shared by every
//! clone of a client (every image of a `sync`), that halves its rate when the registry throttles and
//! grows it back by about one request per second each second it does not (AIMD). Background work
//! (`sync`, the reconcile) can be held under a fixed ceiling as well, so that a backfill leaves the
//! account's quota (ECR's `PutImage`: 10 a second by default) to the pushes of CI pipelines.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// The slowest a throttled pacer goes: one write a second. Below it, a process with a few writes to
/// make (one image's) would wait on its own pacer after the registry had room again; the retries'
/// backoff spreads the rest.
const MIN_RATE: f64 = 1.0;
/// The first cut of an unpaced pacer goes no lower: a client that made one write in the last second
/// was throttled for the account's other clients' writes, not its own pace.
const FIRST_CUT_FLOOR: f64 = 2.0;
/// Past this rate, a pacer without a ceiling stops pacing (the registry has stopped throttling).
const UNPACED_ABOVE: f64 = 1000.0;

/// Which writes share a limiter (each has its own quota in ECR).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum WriteKind {
    /// Manifest `PUT`s (ECR's `PutImage`).
    Manifest,
    /// Upload sessions started (ECR's `InitiateLayerUpload`).
    UploadStart,
}

/// One limiter: `rate` writes a second, or unpaced until the registry first throttles.
#[derive(Debug)]
pub(crate) struct Pacer {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Writes a second now; `None`: unpaced.
    rate: Option<f64>,
    /// The most writes a second, whatever the registry allows.
    ceiling: Option<f64>,
    /// When the next write may go.
    next: Instant,
    /// Writes of the last second (to know the rate an unpaced pacer was going at when throttled).
    recent: VecDeque<Instant>,
    /// When the rate was last cut: throttled answers to writes sent before it do not cut it again.
    last_cut: Option<Instant>,
}

impl Pacer {
    /// A pacer held under `ceiling` writes a second (`None`: unpaced until throttled).
    pub(crate) fn new(ceiling: Option<f64>) -> Pacer {
        let ceiling = ceiling.filter(|c| c.is_finite() && *c > 0.0);
        let state =
            State { rate: ceiling, ceiling, next: Instant::now(), recent: VecDeque::new(), last_cut: None };
        Pacer { state: Mutex::new(state) }
    }

    /// Waits for this write's turn, or until `deadline` if that comes first (the write then goes,
    /// and its answer decides).
    pub(crate) async fn wait_turn(&self, deadline: Option<Instant>) {
        let slot = {
            let mut state = self.lock();
            let now = Instant::now();
            while state.recent.front().is_some_and(|t| now.duration_since(*t) > Duration::from_secs(1)) {
                state.recent.pop_front();
            }
            let slot = match state.rate {
                None => now,
                Some(rate) => {
                    let slot = state.next.max(now);
                    state.next = slot + Duration::from_secs_f64(1.0 / rate);
                    slot
                }
            };
            state.recent.push_back(slot);
            slot
        };
        tokio::time::sleep_until(deadline.map_or(slot, |d| slot.min(d))).await;
    }

    /// The registry throttled a write: halve the rate (once per burst).
    pub(crate) fn throttled(&self) {
        let mut state = self.lock();
        let now = Instant::now();
        let current = match state.rate {
            Some(rate) => rate,
            None => (state.recent.len() as f64).max(2.0 * FIRST_CUT_FLOOR),
        };
        if state.last_cut.is_some_and(|cut| now.duration_since(cut).as_secs_f64() < 1.0 / current) {
            return;
        }
        state.rate = Some((current / 2.0).max(MIN_RATE));
        state.last_cut = Some(now);
    }

    /// A write went through: grow the rate by about one a second per second.
    pub(crate) fn succeeded(&self) {
        let mut state = self.lock();
        let Some(rate) = state.rate else { return };
        let grown = rate + 1.0 / rate.max(1.0);
        state.rate = match state.ceiling {
            Some(ceiling) => Some(grown.min(ceiling)),
            None if grown > UNPACED_ABOVE => None,
            None => Some(grown),
        };
    }

    /// Writes a second now (`None`: unpaced).
    #[cfg(test)]
    pub(crate) fn rate(&self) -> Option<f64> {
        self.lock().rate
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A request the registry throttled, as told to [`ThrottleObserver`]s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThrottleEvent {
    /// The registry host.
    pub registry: String,
    /// The HTTP status (429, or 503 `SlowDown`).
    pub status: u16,
    /// How long the client waits before trying again.
    pub retry_in: Duration,
    /// Throttled answers to this operation so far.
    pub times: u32,
}

/// Called for every throttled request before the client waits (the CLI prints it, the Lambda logs it).
#[derive(Clone)]
pub struct ThrottleObserver(pub Arc<dyn Fn(&ThrottleEvent) + Send + Sync>);

impl fmt::Debug for ThrottleObserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ThrottleObserver")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_ceiling_spaces_writes_and_throttling_halves_the_rate_once_per_burst() {
        let pacer = Pacer::new(Some(4.0));
        let start = Instant::now();
        for _ in 0..9 {
            pacer.wait_turn(None).await;
        }
        assert_eq!(start.elapsed(), Duration::from_secs(2), "9 writes at 4 a second: 8 gaps of 250 ms");
        pacer.throttled();
        pacer.throttled(); // the same burst
        assert_eq!(pacer.rate(), Some(2.0));
        for _ in 0..20 {
            pacer.succeeded();
        }
        assert_eq!(pacer.rate(), Some(4.0), "grows back, never past the ceiling");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unpaced_pacer_learns_its_rate_from_the_first_throttle() {
        let pacer = Pacer::new(None);
        for _ in 0..10 {
            pacer.wait_turn(None).await;
        }
        assert_eq!(pacer.rate(), None);
        pacer.throttled();
        assert_eq!(pacer.rate(), Some(5.0), "half of the 10 writes of the last second");
        tokio::time::advance(Duration::from_secs(1)).await;
        pacer.throttled();
        assert_eq!(pacer.rate(), Some(2.5));
        tokio::time::advance(Duration::from_secs(1)).await;
        pacer.throttled();
        tokio::time::advance(Duration::from_secs(1)).await;
        pacer.throttled();
        assert_eq!(pacer.rate(), Some(MIN_RATE), "never below one a second");
        let lone = Pacer::new(None);
        lone.wait_turn(None).await;
        lone.throttled();
        assert_eq!(lone.rate(), Some(FIRST_CUT_FLOOR), "one write of its own: throttled for others' writes");
        for _ in 0..600_000 {
            pacer.succeeded();
        }
        assert_eq!(pacer.rate(), None, "without a ceiling, unpaced again once the registry keeps up");
    }
}
