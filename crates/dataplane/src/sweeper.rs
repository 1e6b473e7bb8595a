//! Evicts flows from the kernel's verdict map once they are closed or idle.
//!
//! A bypassed or blocked flow is handled in the kernel from its verdict on, so userspace
//! never sees its end: the XDP program notes FIN/RST and the time of its last frame in
//! the flow's entry, and this thread walks the map and removes what is over. The map is
//! also an LRU, so a full map never refuses a verdict; sweeping keeps the LRU from having
//! to push out live flows to make room for dead ones.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use telemetry::counter_set;
use wire::FlowKey;
use xdp::{monotonic_ns, FlowState, Verdict, VerdictMap};

#[derive(Debug, Clone)]
pub struct SweepConfig {
    /// Time between two walks of the map.
    pub interval: Duration,
    /// A bypassed flow with no frame for this long is removed.
    pub idle_timeout: Duration,
    /// A flow closed (FIN both ways, or RST) is removed this long after its last frame,
    /// so the last ACKs and retransmissions still take the fast path.
    pub closed_linger: Duration,
    /// A blocked flow is removed once its client has been quiet this long.
    pub block_linger: Duration,
}

impl Default for SweepConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(300),
            closed_linger: Duration::from_secs(2),
            block_linger: Duration::from_secs(10),
        }
    }
}

counter_set! {
    /// The kernel flow map, as the sweeper last saw it, and what it removed.
    pub struct SweepStats {
        /// entries in the kernel's flow map at the last sweep (gauge)
        kernel_flows,
        /// of those, bypassed flows (gauge)
        kernel_bypassed,
        /// of those, blocked flows (gauge)
        kernel_blocked,
        /// entries removed because their flow closed (FIN both ways or RST)
        evicted_closed,
        /// entries removed because their flow was idle past the timeout
        evicted_idle,
        /// entries of blocked flows removed after the block linger
        evicted_blocked,
        /// walks of the map that failed (the error is logged)
        sweep_errors,
        /// walks completed
        sweeps,
    }
}

/// Why an entry is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    Closed,
    Idle,
    Blocked,
}

/// Whether the entry `state` is over at monotonic time `now_ns`.
pub fn expired(state: &FlowState, now_ns: u64, cfg: &SweepConfig) -> Option<Eviction> {
    let quiet = Duration::from_nanos(now_ns.saturating_sub(state.last_seen_ns));
    if state.verdict == Verdict::Block as u32 {
        return (quiet >= cfg.block_linger).then_some(Eviction::Blocked);
    }
    if state.closed() && quiet >= cfg.closed_linger {
        return Some(Eviction::Closed);
    }
    (quiet >= cfg.idle_timeout).then_some(Eviction::Idle)
}

/// One walk of the map: removes what is over and updates the gauges.
pub fn sweep(map: &VerdictMap, cfg: &SweepConfig, stats: &SweepStats) -> std::io::Result<()> {
    let now = monotonic_ns();
    let mut over: Vec<(FlowKey, Eviction)> = Vec::new();
    let (mut total, mut bypassed, mut blocked) = (0u64, 0u64, 0u64);
    map.for_each(|key, state| {
        total += 1;
        match state.verdict {
            v if v == Verdict::Bypass as u32 => bypassed += 1,
            v if v == Verdict::Block as u32 => blocked += 1,
            _ => {}
        }
        if let Some(why) = expired(&state, now, cfg) {
            over.push((key, why));
        }
    })?;
    for (key, why) in &over {
        if map.remove(key)? {
            match why {
                Eviction::Closed => stats.evicted_closed.incr(),
                Eviction::Idle => stats.evicted_idle.incr(),
                Eviction::Blocked => stats.evicted_blocked.incr(),
            }
            total -= 1;
        }
    }
    stats.kernel_flows.set(total);
    stats.kernel_bypassed.set(bypassed);
    stats.kernel_blocked.set(blocked);
    stats.sweeps.incr();
    Ok(())
}

/// Sweeps every `cfg.interval` until `stop` is set.
pub fn spawn_sweeper(
    map: VerdictMap,
    cfg: SweepConfig,
    stats: Arc<SweepStats>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("flow-sweeper".into())
        .spawn(move || {
            let tick = Duration::from_millis(100).min(cfg.interval);
            let mut waited = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                waited += tick;
                if waited < cfg.interval {
                    continue;
                }
                waited = Duration::ZERO;
                if let Err(e) = sweep(&map, &cfg, &stats) {
                    stats.sweep_errors.incr();
                    tracing::warn!(error = %e, "sweeping the kernel flow map failed");
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn state(verdict: Verdict, flags: u32, last_seen_s: u64) -> FlowState {
        FlowState {
            verdict: verdict as u32,
            tcp_flags: flags,
            last_seen_ns: last_seen_s * S,
            ..FlowState::default()
        }
    }

    #[test]
    fn entries_leave_when_closed_idle_or_blocked_long_enough() {
        let cfg = SweepConfig::default();
        let now = 1000 * S;
        let open = state(Verdict::Bypass, 0, 999);
        assert_eq!(expired(&open, now, &cfg), None);
        let half_closed = state(Verdict::Bypass, FlowState::FIN_LO_HI, 990);
        assert_eq!(expired(&half_closed, now, &cfg), None, "one FIN is not a close");
        let closed = state(Verdict::Bypass, FlowState::FIN_LO_HI | FlowState::FIN_HI_LO, 997);
        assert_eq!(expired(&closed, now, &cfg), Some(Eviction::Closed));
        let just_closed = state(Verdict::Bypass, FlowState::RST, 999);
        assert_eq!(
            expired(&just_closed, now, &cfg),
            None,
            "the linger lets the last frames through"
        );
        let reset = state(Verdict::Bypass, FlowState::RST, 990);
        assert_eq!(expired(&reset, now, &cfg), Some(Eviction::Closed));
        let idle = state(Verdict::Bypass, 0, 600);
        assert_eq!(expired(&idle, now, &cfg), Some(Eviction::Idle));
        let blocked = state(Verdict::Block, 0, 980);
        assert_eq!(expired(&blocked, now, &cfg), Some(Eviction::Blocked));
        let blocked_recent = state(Verdict::Block, 0, 995);
        assert_eq!(expired(&blocked_recent, now, &cfg), None);
    }
}
