//! Evicts flows from the kernel's verdict map once they are closed or idle.
//!
//! A bypassed or blocked flow is handled in the kernel from its verdict on, so userspace
//! never sees its end: the XDP program notes FIN/RST and the time of its last frame in
//! the flow's entry, and this thread walks the map and removes what is over. The map is
//! also an LRU, so a full map never refuses a verdict; sweeping keeps the LRU from having
//! to push out live flows to make room for dead ones.

use crate::session::{EventSink, KernelSession, SessionEvent, SessionEventKind};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use telemetry::counter_set;
use wire::{Direction, FlowKey};
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
    /// A session's volume is recorded once per interval (and at its end).
    pub volume_interval: Duration,
    /// How long an entry whose session has not been handed over yet by its worker is kept
    /// beyond its own timeout (workers hand sessions over a few seconds after the verdict).
    pub handoff_grace: Duration,
}

impl Default for SweepConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(300),
            closed_linger: Duration::from_secs(2),
            block_linger: Duration::from_secs(10),
            volume_interval: Duration::from_secs(60),
            handoff_grace: Duration::from_secs(10),
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
        /// sessions in the kernel whose end the sweeper will record (gauge)
        sessions_tracked,
        /// sessions whose kernel entry vanished (pushed out of the full LRU map) before they ended
        sessions_lost_map_full,
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

/// A session in the kernel, as the sweeper follows it.
#[derive(Debug)]
pub struct Followed {
    session: KernelSession,
    /// Kernel counts already added, `[packets c2s, packets s2c, bytes c2s, bytes s2c]`.
    kernel_seen: [u64; 4],
}

/// Sessions handed over by the workers, by flow.
pub type SessionBook = HashMap<FlowKey, Followed>;

pub fn follow(book: &mut SessionBook, session: KernelSession) {
    book.insert(
        session.key,
        Followed {
            session,
            kernel_seen: [0; 4],
        },
    );
}

/// The kernel's per-direction counts of `state`, oriented client to server first.
fn oriented(state: &FlowState, client_dir: Direction) -> [u64; 4] {
    let (c, s) = match client_dir {
        Direction::LoToHi => (0, 1),
        Direction::HiToLo => (1, 0),
    };
    let p = |i: usize| state.packets.get(i).copied().unwrap_or(0);
    let b = |i: usize| state.bytes.get(i).copied().unwrap_or(0);
    [p(c), p(s), b(c), b(s)]
}

/// One walk's decisions, without I/O: which entries to remove (and why), and the session
/// events that are due. `now_ns` is the kernel's clock, `now` the same moment as an
/// `Instant` for the events. `awaiting_handoffs`: sessions are being recorded, so a
/// bypassed entry is kept until its worker has handed it over.
pub fn plan_sweep(
    entries: &[(FlowKey, FlowState)],
    now_ns: u64,
    now: Instant,
    cfg: &SweepConfig,
    book: &mut SessionBook,
    awaiting_handoffs: bool,
) -> (Vec<(FlowKey, Eviction)>, Vec<SessionEvent>) {
    let mut evict = Vec::new();
    let mut events = Vec::new();
    end_reopened(book, now, &mut events);
    let mut seen: HashSet<FlowKey> = HashSet::with_capacity(book.len());
    for (key, state) in entries {
        let why = expired(state, now_ns, cfg);
        let Some(f) = book.get_mut(key) else {
            // Not handed over (yet): blocked flows never are; a bypassed one will be soon.
            let quiet = Duration::from_nanos(now_ns.saturating_sub(state.last_seen_ns));
            // Workers hand a session over a few seconds after its verdict; an entry that
            // expires sooner (closed, or idle under a short timeout) waits for it.
            let handed_over_long_ago = !awaiting_handoffs || quiet >= cfg.closed_linger + cfg.handoff_grace;
            if let Some(why) = why.filter(|w| *w == Eviction::Blocked || handed_over_long_ago) {
                evict.push((*key, why));
            }
            continue;
        };
        seen.insert(*key);
        if state.session != f.session.info.id {
            // The entry is a newer connection's (it reused the ports and has its own
            // verdict): the followed session ended before it, as far as it was counted.
            push_end(&mut events, f, now, SessionEventKind::EndNormal, None);
            book.remove(key);
            continue;
        }
        absorb_kernel_counts(f, state);
        match why {
            Some(why) => {
                let (kind, reason) = match why {
                    Eviction::Closed => how_it_closed(state),
                    Eviction::Idle => (SessionEventKind::EndIdle, None),
                    Eviction::Blocked => (SessionEventKind::EndAbnormal, Some("blocked")),
                };
                push_end(&mut events, f, now, kind, reason);
                evict.push((*key, why));
            }
            None if now.saturating_duration_since(f.session.counts.interval_start) >= cfg.volume_interval => {
                let volume = f.session.counts.take_interval(now);
                events.push(SessionEvent {
                    at: now,
                    kind: SessionEventKind::Volume,
                    session: f.session.info.clone(),
                    volume: Some(volume),
                    reason: None,
                });
            }
            None => {}
        }
    }
    for (key, _) in &evict {
        book.remove(key);
    }
    if seen.len() < book.len() {
        // Followed sessions whose entry is gone: the LRU map pushed them out to make room.
        let gone: Vec<FlowKey> = book.keys().filter(|k| !seen.contains(k)).copied().collect();
        for key in gone {
            if let Some(mut f) = book.remove(&key) {
                let totals = f.session.counts.totals(now);
                events.push(SessionEvent {
                    at: now,
                    kind: SessionEventKind::EndAbnormal,
                    session: f.session.info.clone(),
                    volume: Some(totals),
                    reason: Some("kernel_map_full"),
                });
                f.session.counts.take_interval(now);
            }
        }
    }
    (evict, events)
}

/// Sessions whose ports a new connection took end with the kernel's last counts for them
/// (read by their worker before the new connection's verdict reset the entry).
fn end_reopened(book: &mut SessionBook, now: Instant, events: &mut Vec<SessionEvent>) {
    let done: Vec<FlowKey> = book
        .iter()
        .filter(|(_, f)| f.session.reopened.is_some())
        .map(|(k, _)| *k)
        .collect();
    for key in done {
        let Some(mut f) = book.remove(&key) else {
            continue;
        };
        let state = f.session.reopened.unwrap_or_default();
        absorb_kernel_counts(&mut f, &state);
        let (kind, reason) = how_it_closed(&state);
        push_end(events, &mut f, now, kind, reason);
    }
}

/// A followed session's last volume (since its previous record) and its end, with its
/// totals.
fn push_end(
    events: &mut Vec<SessionEvent>,
    f: &mut Followed,
    now: Instant,
    kind: SessionEventKind,
    reason: Option<&'static str>,
) {
    let last = f.session.counts.take_interval(now);
    let totals = f.session.counts.totals(now);
    for (kind, volume, reason) in [(SessionEventKind::Volume, last, None), (kind, totals, reason)] {
        events.push(SessionEvent {
            at: now,
            kind,
            session: f.session.info.clone(),
            volume: Some(volume),
            reason,
        });
    }
}

/// The end of a session whose entry says it closed.
fn how_it_closed(state: &FlowState) -> (SessionEventKind, Option<&'static str>) {
    if state.tcp_flags & FlowState::RST != 0 {
        (SessionEventKind::EndAbnormal, Some("rst"))
    } else if state.tcp_flags & FlowState::AFTER_CLOSE != 0 {
        (SessionEventKind::EndAbnormal, Some("after_close"))
    } else {
        (SessionEventKind::EndNormal, None)
    }
}

/// Adds what the kernel counted for `f` since the last look.
fn absorb_kernel_counts(f: &mut Followed, state: &FlowState) {
    let current = oriented(state, f.session.client_dir);
    let mut delta = [0u64; 4];
    for ((d, c), s) in delta.iter_mut().zip(current).zip(f.kernel_seen) {
        *d = c.saturating_sub(s);
    }
    f.kernel_seen = current;
    f.session.counts.add_all(delta);
}

/// The bridge is stopping: every followed session ends now with its last volume,
/// counted up to this last look at the map: as it closed if its entry says it did (the
/// linger had not run out yet), else `end_abnormal` `bridge_stopped`.
pub fn plan_stop(
    entries: &[(FlowKey, FlowState)],
    now: Instant,
    book: &mut SessionBook,
) -> Vec<SessionEvent> {
    let mut events = Vec::with_capacity(book.len() * 2);
    end_reopened(book, now, &mut events);
    let mut closed: HashMap<FlowKey, (SessionEventKind, Option<&'static str>)> = HashMap::new();
    for (key, state) in entries {
        if let Some(f) = book.get_mut(key).filter(|f| f.session.info.id == state.session) {
            absorb_kernel_counts(f, state);
            if state.closed() {
                closed.insert(*key, how_it_closed(state));
            }
        }
    }
    for (key, mut f) in book.drain() {
        let (kind, reason) = closed
            .get(&key)
            .copied()
            .unwrap_or((SessionEventKind::EndAbnormal, Some("bridge_stopped")));
        push_end(&mut events, &mut f, now, kind, reason);
    }
    events
}

/// The last look at the map when the bridge stops: sessions handed over by then get
/// their end records.
fn finish(map: &VerdictMap, stats: &SweepStats, book: &mut SessionBook, sessions: &SweeperSessions) {
    while let Ok(session) = sessions.handoffs.try_recv() {
        follow(book, session);
    }
    let mut entries: Vec<(FlowKey, FlowState)> = Vec::new();
    if let Err(e) = map.for_each(|key, state| entries.push((key, state))) {
        stats.sweep_errors.incr();
        tracing::warn!(error = %e, "reading the kernel flow map at stop failed; open sessions end with the counts seen last");
    }
    for event in plan_stop(&entries, Instant::now(), book) {
        (sessions.events.0)(event);
    }
    stats.sessions_tracked.set(0);
}

/// Where the sweeper's session events go, and the handoffs it follows.
#[derive(Debug)]
pub struct SweeperSessions {
    pub handoffs: Receiver<KernelSession>,
    pub events: SessionEventsSink,
}

/// An [`EventSink`] with a Debug impl.
#[derive(Clone)]
pub struct SessionEventsSink(pub EventSink);

impl std::fmt::Debug for SessionEventsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionEventsSink")
    }
}

/// One walk of the map: removes what is over, records session events, updates gauges.
pub fn sweep(
    map: &VerdictMap,
    cfg: &SweepConfig,
    stats: &SweepStats,
    book: &mut SessionBook,
    sessions: Option<&SweeperSessions>,
) -> std::io::Result<()> {
    if let Some(s) = sessions {
        while let Ok(session) = s.handoffs.try_recv() {
            follow(book, session);
        }
    }
    let now_ns = monotonic_ns();
    let now = Instant::now();
    let mut entries: Vec<(FlowKey, FlowState)> = Vec::new();
    map.for_each(|key, state| entries.push((key, state)))?;
    let (bypassed, blocked) = entries
        .iter()
        .fold((0u64, 0u64), |(p, b), (_, st)| match st.verdict {
            v if v == Verdict::Bypass as u32 => (p + 1, b),
            v if v == Verdict::Block as u32 => (p, b + 1),
            _ => (p, b),
        });
    let (evict, events) = plan_sweep(&entries, now_ns, now, cfg, book, sessions.is_some());
    let mut total = entries.len() as u64;
    for (key, why) in &evict {
        if map.remove(key)? {
            match why {
                Eviction::Closed => stats.evicted_closed.incr(),
                Eviction::Idle => stats.evicted_idle.incr(),
                Eviction::Blocked => stats.evicted_blocked.incr(),
            }
            total -= 1;
        }
    }
    for event in events {
        if event.reason == Some("kernel_map_full") {
            stats.sessions_lost_map_full.incr();
        }
        if let Some(s) = sessions {
            (s.events.0)(event);
        }
    }
    stats.kernel_flows.set(total);
    stats.kernel_bypassed.set(bypassed);
    stats.kernel_blocked.set(blocked);
    stats.sessions_tracked.set(book.len() as u64);
    stats.sweeps.incr();
    Ok(())
}

/// Sweeps every `cfg.interval` until `stop` is set; then the sessions it follows (and
/// those handed over by then: set `stop` after the workers have stopped) end as
/// `bridge_stopped`.
pub fn spawn_sweeper(
    map: VerdictMap,
    cfg: SweepConfig,
    stats: Arc<SweepStats>,
    sessions: Option<SweeperSessions>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("flow-sweeper".into())
        .spawn(move || {
            let tick = Duration::from_millis(100).min(cfg.interval);
            let mut waited = Duration::ZERO;
            let mut book = SessionBook::new();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                waited += tick;
                if waited < cfg.interval {
                    continue;
                }
                waited = Duration::ZERO;
                if let Err(e) = sweep(&map, &cfg, &stats, &mut book, sessions.as_ref()) {
                    stats.sweep_errors.incr();
                    tracing::warn!(error = %e, "sweeping the kernel flow map failed");
                }
            }
            if let Some(s) = &sessions {
                finish(&map, &stats, &mut book, s);
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
            // The session `handed_over` makes.
            session: 7,
            ..FlowState::default()
        }
    }

    use crate::session::{Counts, SessionInfo};
    use crate::Port;

    fn handed_over(key: FlowKey, client_dir: Direction, at: Instant) -> KernelSession {
        KernelSession {
            key,
            client_dir,
            info: Arc::new(SessionInfo {
                id: 7,
                client: "10.0.0.1:40000".parse().unwrap(),
                server: "10.0.0.2:443".parse().unwrap(),
                opened_from: Port::A,
                verdict: Some("bypass"),
                rule: Some("default".into()),
                hello: None,
                server_hello: None,
                upstream_cert: None,
            }),
            reopened: None,
            counts: {
                let mut c = Counts::new(at);
                c.add(true, 74);
                c.add(false, 74);
                c.add(true, 66);
                c.add(true, 583);
                c
            },
        }
    }

    /// The key of 10.0.0.1:`client_port` -> 10.0.0.2:443 over TCP, and the client's
    /// direction in it.
    fn connection(client_port: u16) -> (FlowKey, Direction) {
        FlowKey::new(
            6,
            "10.0.0.1".parse().unwrap(),
            client_port,
            "10.0.0.2".parse().unwrap(),
            443,
        )
    }

    /// One sweep of `entries` with the default config at `now_s` (the kernel's clock,
    /// seconds) and `now`, while handoffs may still be on their way.
    fn sweep_at(
        entries: &[(FlowKey, FlowState)],
        now_s: u64,
        now: Instant,
        book: &mut SessionBook,
    ) -> (Vec<(FlowKey, Eviction)>, Vec<SessionEvent>) {
        plan_sweep(entries, now_s * S, now, &SweepConfig::default(), book, true)
    }

    #[test]
    fn a_followed_session_gets_volumes_then_an_end_with_kernel_and_userspace_counts() {
        let t0 = Instant::now();
        let (key, dir) = FlowKey::new(
            6,
            "10.0.0.2".parse().unwrap(),
            443,
            "10.0.0.1".parse().unwrap(),
            40000,
        );
        // The client (10.0.0.1:40000) is the lo end here: the server sent this frame.
        let client_dir = match dir {
            Direction::LoToHi => Direction::HiToLo,
            Direction::HiToLo => Direction::LoToHi,
        };
        let mut book = SessionBook::new();
        follow(&mut book, handed_over(key, client_dir, t0));
        let c = client_dir as usize;
        let mut st = state(Verdict::Bypass, 0, 10);
        st.packets[c] = 10;
        st.bytes[c] = 1000;
        st.packets[1 - c] = 20;
        st.bytes[1 - c] = 30000;
        // Within the interval: nothing to say.
        let (ev, events) = sweep_at(&[(key, st)], 11, t0 + Duration::from_secs(1), &mut book);
        assert!(ev.is_empty() && events.is_empty());
        // An interval later: one volume record with everything so far.
        let (_, events) = sweep_at(&[(key, st)], 12, t0 + Duration::from_secs(61), &mut book);
        assert_eq!(events.len(), 1);
        let v = events[0].volume.unwrap();
        assert_eq!((v.packets, v.bytes), ([13, 21], [1723, 30074]));
        // Both FINs, quiet past the linger: a last volume and a normal end with totals.
        st.packets[c] += 1;
        st.bytes[c] += 66;
        st.tcp_flags = FlowState::FIN_LO_HI | FlowState::FIN_HI_LO;
        st.last_seen_ns = 70 * S;
        let (ev, events) = sweep_at(&[(key, st)], 73, t0 + Duration::from_secs(63), &mut book);
        assert_eq!(ev, vec![(key, Eviction::Closed)]);
        let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, vec![SessionEventKind::Volume, SessionEventKind::EndNormal]);
        assert_eq!(events[0].volume.unwrap().packets, [1, 0]);
        let total = events[1].volume.unwrap();
        assert_eq!((total.packets, total.bytes), ([14, 21], [1789, 30074]));
        assert!(book.is_empty());
    }

    #[test]
    fn a_session_whose_ports_a_new_connection_took_ends_with_its_own_counts() {
        let t0 = Instant::now();
        let (key, client_dir) = connection(40000);
        let c = client_dir as usize;
        // Handed over at the new connection's SYN, with the entry as that SYN left it.
        let mut old = state(Verdict::Inspect, FlowState::FIN_LO_HI | FlowState::FIN_HI_LO, 10);
        old.packets = [5, 5];
        old.bytes = [500, 5000];
        let mut reopened = handed_over(key, client_dir, t0);
        reopened.reopened = Some(old);
        let mut book = SessionBook::new();
        follow(&mut book, reopened);
        // The entry is the new connection's by now (its own verdict and counts).
        let mut new = state(Verdict::Bypass, 0, 11);
        new.session = 8;
        new.packets = [3, 3];
        let (ev, events) = sweep_at(&[(key, new)], 11, t0 + Duration::from_secs(1), &mut book);
        assert!(ev.is_empty(), "the new connection's entry stays: {ev:?}");
        let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, vec![SessionEventKind::Volume, SessionEventKind::EndNormal]);
        let total = events[1].volume.unwrap();
        // The handed-over userspace counts plus the old entry's, none of the new one's.
        let handed = handed_over(key, client_dir, t0).counts.totals(t0);
        assert_eq!(total.packets[0], handed.packets[0] + old.packets[c]);
        assert_eq!(total.bytes[1], handed.bytes[1] + old.bytes[1 - c]);
        assert!(book.is_empty());

        // A followed session whose entry another session's verdict overwrote before any
        // reopen was seen ends too, without the newcomer's counts.
        follow(&mut book, handed_over(key, client_dir, t0));
        let (ev, events) = sweep_at(&[(key, new)], 12, t0 + Duration::from_secs(2), &mut book);
        assert!(ev.is_empty());
        let total = events[1].volume.unwrap();
        assert_eq!((total.packets, total.bytes), (handed.packets, handed.bytes));
        assert!(book.is_empty());
    }

    #[test]
    fn an_entry_waits_for_its_handoff_and_a_vanished_one_ends_abnormally() {
        let t0 = Instant::now();
        let (key, dir) = connection(40000);
        let closed = state(Verdict::Bypass, FlowState::RST, 100);
        let mut book = SessionBook::new();
        // Closed, but no handoff yet: kept for the grace period, then dropped silently.
        let (ev, _) = sweep_at(&[(key, closed)], 105, t0, &mut book);
        assert!(ev.is_empty());
        let (ev, _) = sweep_at(&[(key, closed)], 113, t0, &mut book);
        assert_eq!(ev, vec![(key, Eviction::Closed)]);
        // A followed session whose entry vanished from the map.
        follow(&mut book, handed_over(key, dir, t0));
        let (_, events) = sweep_at(&[], 114, t0, &mut book);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, SessionEventKind::EndAbnormal);
        assert_eq!(events[0].reason, Some("kernel_map_full"));
        assert!(book.is_empty());
    }

    #[test]
    fn data_after_both_fins_in_the_kernel_ends_abnormally() {
        let t0 = Instant::now();
        let (key, dir) = connection(40000);
        let mut book = SessionBook::new();
        follow(&mut book, handed_over(key, dir, t0));
        let flags = FlowState::FIN_LO_HI | FlowState::FIN_HI_LO | FlowState::AFTER_CLOSE;
        let (ev, events) = sweep_at(&[(key, state(Verdict::Bypass, flags, 100))], 103, t0, &mut book);
        assert_eq!(ev, vec![(key, Eviction::Closed)]);
        let ends: Vec<_> = events.iter().map(|e| (e.kind, e.reason)).collect();
        assert_eq!(
            ends,
            vec![
                (SessionEventKind::Volume, None),
                (SessionEventKind::EndAbnormal, Some("after_close"))
            ]
        );
    }

    #[test]
    fn at_stop_followed_sessions_end_with_the_last_kernel_counts() {
        let t0 = Instant::now();
        let (key, dir) = connection(40000);
        let mut book = SessionBook::new();
        follow(&mut book, handed_over(key, dir, t0));
        let mut st = state(Verdict::Bypass, 0, 100);
        st.packets[dir as usize] = 5;
        st.bytes[dir as usize] = 500;
        let mut closed_flow = handed_over(key, dir, t0);
        let (closed_key, _) = connection(40001);
        closed_flow.key = closed_key;
        Arc::make_mut(&mut closed_flow.info).client = "10.0.0.1:40001".parse().unwrap();
        follow(&mut book, closed_flow);
        let fins = state(Verdict::Bypass, FlowState::FIN_LO_HI | FlowState::FIN_HI_LO, 100);
        let mut events = plan_stop(
            &[(key, st), (closed_key, fins)],
            t0 + Duration::from_secs(2),
            &mut book,
        );
        // The one closed (its linger not over yet) ends normally.
        let closed_end: Vec<_> = events
            .iter()
            .filter(|e| e.session.client.port() == 40001)
            .map(|e| (e.kind, e.reason))
            .collect();
        assert_eq!(
            closed_end,
            vec![
                (SessionEventKind::Volume, None),
                (SessionEventKind::EndNormal, None)
            ]
        );
        events.retain(|e| e.session.client.port() == 40000);
        let ends: Vec<_> = events.iter().map(|e| (e.kind, e.reason)).collect();
        assert_eq!(
            ends,
            vec![
                (SessionEventKind::Volume, None),
                (SessionEventKind::EndAbnormal, Some("bridge_stopped"))
            ]
        );
        let total = events[1].volume.unwrap();
        assert_eq!((total.packets, total.bytes), ([8, 1], [1223, 74]));
        assert!(book.is_empty());
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
