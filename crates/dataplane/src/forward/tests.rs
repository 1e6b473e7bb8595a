use super::*;
use crate::session::{SessionEventKind, Volume};
use classify::policy::PolicySpec;
use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};

const CURL_HELLO: &[u8] = include_bytes!("../../../classify/testdata/curl.bin"); // SNI test.example
const SERVER_HELLO_TLS12: &[u8] =
    include_bytes!("../../../classify/testdata/server_hello/openssl_tls12_http11.bin");
const PY_HELLO: &[u8] = include_bytes!("../../../classify/testdata/python_ssl.bin"); // SNI py.example
const CLIENT_ISN: u32 = 1000;
const SERVER_ISN: u32 = 7000;

fn policy(toml_text: &str) -> Arc<Policy> {
    let spec: PolicySpec = toml::from_str(toml_text).unwrap();
    Arc::new(Policy::compile(&spec, std::path::Path::new("."), &|_| unreachable!()).unwrap())
}

fn block_py() -> Arc<Policy> {
    policy("[[rule]]\nsni = \"py.example\"\naction = \"block\"\n")
}

/// A segment of the flow 10.0.0.1:40000 (client, behind A) <-> 10.0.0.2:443.
fn seg(from_client: bool, seq: u32, ack: Option<u32>, flags: &str, payload: &[u8]) -> Vec<u8> {
    let (cm, sm) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let b = if from_client {
        PacketBuilder::ethernet2(cm, sm)
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(40000, 443, seq, 64000)
    } else {
        PacketBuilder::ethernet2(sm, cm)
            .ipv4([10, 0, 0, 2], [10, 0, 0, 1], 64)
            .tcp(443, 40000, seq, 64000)
    };
    let mut b = b;
    if let Some(a) = ack {
        b = b.ack(a);
    }
    if flags.contains('S') {
        b = b.syn();
    }
    if flags.contains('F') {
        b = b.fin();
    }
    if flags.contains('R') {
        b = b.rst();
    }
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

struct Rig {
    fwd: Forwarder<u32>,
    stats: Arc<WorkerStats>,
    now: Instant,
    next_handle: u32,
}

impl Rig {
    fn new(cfg: FlowConfig, policy: Arc<Policy>) -> Self {
        let stats = Arc::new(WorkerStats::default());
        Self {
            fwd: Forwarder::new(cfg, policy, stats.clone()),
            stats,
            now: Instant::now(),
            next_handle: 0,
        }
    }

    /// Feeds a frame; returns (its handle, the action, the outputs it produced).
    fn feed(&mut self, from: Port, frame: &[u8]) -> (u32, Action, Vec<Output<u32>>) {
        self.next_handle += 1;
        let h = self.next_handle;
        let action = self.fwd.on_frame(from, frame, h, self.now);
        (h, action, self.fwd.outputs().collect())
    }

    /// SYN, SYN/ACK, ACK: all forwarded, nothing else.
    fn handshake(&mut self) {
        for (from, f) in [
            (Port::A, seg(true, CLIENT_ISN, None, "S", b"")),
            (Port::B, seg(false, SERVER_ISN, Some(CLIENT_ISN + 1), "S", b"")),
            (Port::A, seg(true, CLIENT_ISN + 1, Some(SERVER_ISN + 1), "", b"")),
        ] {
            let (_, action, outs) = self.feed(from, &f);
            assert_eq!(action, Action::Forward);
            assert!(outs.iter().all(|o| matches!(o, Output::Session(_))));
        }
    }

    /// The SYN/ACK and ACK of a new connection whose SYN (client ISN `client_isn`) was
    /// fed already: both forwarded.
    fn finish_handshake(&mut self, client_isn: u32, server_isn: u32) {
        for (from, f) in [
            (Port::B, seg(false, server_isn, Some(client_isn + 1), "S", b"")),
            (Port::A, seg(true, client_isn + 1, Some(server_isn + 1), "", b"")),
        ] {
            assert_eq!(self.feed(from, &f).1, Action::Forward);
        }
    }

    fn client_data(&mut self, offset: u32, payload: &[u8]) -> (u32, Action, Vec<Output<u32>>) {
        let f = seg(true, CLIENT_ISN + 1 + offset, Some(SERVER_ISN + 1), "", payload);
        self.feed(Port::A, &f)
    }

    /// The server's bytes from `offset` of its stream, acknowledging the client's SYN only.
    fn server_data(&mut self, offset: u32, payload: &[u8]) -> (u32, Action, Vec<Output<u32>>) {
        let f = seg(false, SERVER_ISN + 1 + offset, Some(CLIENT_ISN + 1), "", payload);
        self.feed(Port::B, &f)
    }
}

fn transmitted(outs: &[Output<u32>]) -> Vec<u32> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Transmit { to, frame } => {
                assert_eq!(*to, Port::B, "held client frames go to the server side");
                Some(*frame)
            }
            _ => None,
        })
        .collect()
}

/// Frames the forwarder built itself (resets), with the port each leaves on.
fn emitted(outs: &[Output<u32>]) -> Vec<(Port, Vec<u8>)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Emit { to, frame } => Some((*to, frame.as_bytes().to_vec())),
            _ => None,
        })
        .collect()
}

fn freed(outs: &[Output<u32>]) -> Vec<u32> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Free(h) => Some(*h),
            _ => None,
        })
        .collect()
}

fn events(outs: &[Output<u32>]) -> Vec<(SessionEventKind, Option<&'static str>)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Session(e) => Some((e.kind, e.reason)),
            _ => None,
        })
        .collect()
}

fn verdicts(outs: &[Output<u32>]) -> Vec<Verdict> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Verdict { verdict, key, .. } => {
                assert_eq!((key.port_lo, key.port_hi), (40000, 443));
                Some(*verdict)
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_bypassed_hello_split_over_two_segments_is_held_then_released_in_order() {
    let mut rig = Rig::new(FlowConfig::default(), block_py());
    rig.handshake();
    let (h1, a1, o1) = rig.client_data(0, &CURL_HELLO[..300]);
    assert_eq!(a1, Action::Hold);
    assert!(o1.is_empty(), "nothing released before the hello is whole");
    assert_eq!(rig.stats.flows.frames_held.get(), 1);
    let (h2, a2, o2) = rig.client_data(300, &CURL_HELLO[300..]);
    assert_eq!(a2, Action::Hold);
    assert_eq!(transmitted(&o2), vec![h1, h2]);
    assert!(
        verdicts(&o2).is_empty(),
        "the kernel takes over after the ServerHello"
    );
    assert_eq!(rig.stats.flows.tls_hellos.get(), 1);
    assert_eq!(rig.stats.flows.decided_bypass.get(), 1);
    assert_eq!(rig.stats.flows.frames_held.get(), 0);
    // The server's first payload: its ServerHello is read, then the verdict is written.
    let (_, a3, o3) = rig.server_data(0, SERVER_HELLO_TLS12);
    assert_eq!(a3, Action::Forward);
    assert_eq!(verdicts(&o3), vec![Verdict::Bypass]);
    assert_eq!(rig.stats.flows.server_hellos.get(), 1);
    // Frames still on their way to userspace after the verdict pass straight through.
    let (_, a4, o4) = rig.server_data(648, b"srv");
    assert_eq!(a4, Action::Forward);
    assert!(o4.is_empty());
}

#[test]
fn a_blocked_sni_frees_the_hello_resets_both_ends_and_drops_the_rest() {
    let mut rig = Rig::new(FlowConfig::default(), block_py());
    rig.handshake();
    let (h, action, outs) = rig.client_data(0, PY_HELLO);
    assert_eq!(action, Action::Hold);
    assert!(freed(&outs).contains(&h), "the hello never reaches the server");
    assert!(transmitted(&outs).is_empty());
    assert_eq!(verdicts(&outs), vec![Verdict::Block]);
    let resets = emitted(&outs);
    assert_eq!(resets.len(), 2);
    for (to, bytes) in &resets {
        let p = SlicedPacket::from_ethernet(bytes).unwrap();
        let (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Tcp(tcp))) = (p.net, p.transport) else {
            panic!("not TCP/IPv4")
        };
        assert!(tcp.rst());
        match to {
            Port::A => {
                // From the server's address, at the server's next sequence number.
                assert_eq!(ip.header().source(), [10, 0, 0, 2]);
                assert_eq!(tcp.sequence_number(), SERVER_ISN + 1);
                assert_eq!(
                    tcp.acknowledgment_number(),
                    CLIENT_ISN + 1 + PY_HELLO.len() as u32
                );
            }
            Port::B => {
                // From the client's address, at the first byte the server never got.
                assert_eq!(ip.header().source(), [10, 0, 0, 1]);
                assert_eq!(tcp.sequence_number(), CLIENT_ISN + 1);
            }
        }
    }
    assert_eq!(rig.stats.flows.decided_block.get(), 1);
    assert_eq!(rig.stats.flows.resets_sent.get(), 2);
    let (_, later, _) = rig.client_data(0, PY_HELLO);
    assert_eq!(later, Action::Drop);
    assert_eq!(rig.stats.flows.dropped_blocked.get(), 1);
}

#[test]
fn a_new_connection_on_a_blocked_flows_ports_is_classified_anew() {
    let mut rig = Rig::new(FlowConfig::default(), block_py());
    rig.handshake();
    let (_, _, outs) = rig.client_data(0, PY_HELLO);
    assert_eq!(verdicts(&outs), vec![Verdict::Block]);
    // The client reuses its port (the kernel sent the SYN here rather than drop it under
    // the old verdict), this time for a name the policy lets through.
    let (c2, s2) = (50_000u32, 90_000u32);
    let (_, action, _) = rig.feed(Port::A, &seg(true, c2, None, "S", b""));
    assert_eq!(
        action,
        Action::Forward,
        "the SYN is not dropped as the old flow's"
    );
    assert_eq!(rig.stats.flows.reopened.get(), 1);
    rig.finish_handshake(c2, s2);
    let (h, action, outs) = rig.feed(Port::A, &seg(true, c2 + 1, Some(s2 + 1), "", CURL_HELLO));
    assert_eq!(action, Action::Hold);
    assert_eq!(transmitted(&outs), vec![h], "the new hello reaches the server");
    assert!(emitted(&outs).is_empty(), "no reset");
    assert_eq!(rig.stats.flows.decided_block.get(), 1, "the old block only");
    assert_eq!(rig.stats.flows.dropped_blocked.get(), 0);
}

#[test]
fn plain_http_is_passed_and_bypassed_at_its_first_payload() {
    let mut rig = Rig::new(FlowConfig::default(), block_py());
    rig.handshake();
    let (h, action, outs) = rig.client_data(0, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(action, Action::Hold);
    assert_eq!(transmitted(&outs), vec![h]);
    assert_eq!(verdicts(&outs), vec![Verdict::Bypass]);
    assert_eq!(rig.stats.flows.not_tls.get(), 1);
}

#[test]
fn a_server_that_speaks_first_is_not_tls() {
    let mut rig = Rig::new(FlowConfig::default(), block_py());
    rig.handshake();
    let (_, action, outs) = rig.server_data(0, b"220 smtp\r\n");
    assert_eq!(action, Action::Forward);
    assert_eq!(verdicts(&outs), vec![Verdict::Bypass]);
    assert_eq!(rig.stats.flows.not_tls.get(), 1);
}

#[test]
fn a_flow_seen_mid_stream_is_classified_from_its_first_payload() {
    let mut rig = Rig::new(FlowConfig::default(), block_py());
    let (_, action, outs) = rig.client_data(0, PY_HELLO);
    assert_eq!(action, Action::Hold);
    assert_eq!(verdicts(&outs), vec![Verdict::Block]);
    assert_eq!(rig.stats.flows.midstream.get(), 1);
    assert_eq!(rig.stats.flows.started.get(), 0);
}

#[test]
fn without_the_fast_path_no_bypass_verdict_is_written_but_blocks_still_apply() {
    let cfg = FlowConfig {
        fast_path: false,
        ..FlowConfig::default()
    };
    let mut rig = Rig::new(cfg, block_py());
    rig.handshake();
    let (h, _, outs) = rig.client_data(0, CURL_HELLO);
    assert_eq!(transmitted(&outs), vec![h]);
    assert!(verdicts(&outs).is_empty());
    let (_, later, _) = rig.client_data(CURL_HELLO.len() as u32, b"more");
    assert_eq!(later, Action::Forward);
}

#[test]
fn a_reset_while_holding_frees_the_held_frames_and_forgets_the_flow() {
    let mut rig = Rig::new(FlowConfig::default(), block_py());
    rig.handshake();
    let (h, _, _) = rig.client_data(0, &CURL_HELLO[..100]);
    let (_, action, outs) = rig.feed(Port::B, &seg(false, SERVER_ISN + 1, None, "R", b""));
    assert_eq!(action, Action::Forward);
    assert_eq!(freed(&outs), vec![h]);
    assert_eq!(
        events(&outs),
        vec![
            (SessionEventKind::Volume, None),
            (SessionEventKind::EndAbnormal, Some("rst_from_server"))
        ]
    );
    assert_eq!(rig.fwd.flow_count(), 0);
    assert_eq!(rig.stats.flows.frames_held.get(), 0);
}

#[test]
fn an_unfinished_hello_times_out_and_takes_the_unclassified_action() {
    let mut rig = Rig::new(FlowConfig::default(), block_py());
    rig.handshake();
    let first = seg(true, CLIENT_ISN + 1, Some(SERVER_ISN + 1), "", &CURL_HELLO[..100]);
    let (h, _, _) = rig.feed(Port::A, &first);
    rig.fwd.poll(rig.now + Duration::from_secs(1), |_| &first[..]);
    assert!(rig.fwd.outputs().next().is_none(), "still within the time budget");
    rig.fwd.poll(rig.now + Duration::from_secs(6), |_| &first[..]);
    let outs: Vec<_> = rig.fwd.outputs().collect();
    assert_eq!(transmitted(&outs), vec![h], "fail open: released unchanged");
    assert_eq!(rig.stats.flows.unclassified.get(), 1);

    // With `unclassified = "block"` the same flow is reset instead, built from a held frame.
    let mut rig = Rig::new(FlowConfig::default(), policy("unclassified = \"block\"\n"));
    rig.handshake();
    let (h, _, _) = rig.feed(Port::A, &first);
    rig.fwd.poll(rig.now + Duration::from_secs(6), |_| &first[..]);
    let outs: Vec<_> = rig.fwd.outputs().collect();
    assert!(freed(&outs).contains(&h));
    assert_eq!(verdicts(&outs), vec![Verdict::Block]);
    assert_eq!(rig.stats.flows.resets_sent.get(), 2);
}

#[test]
fn too_many_held_frames_give_up_and_release() {
    let cfg = FlowConfig {
        max_held_per_flow: 4,
        ..FlowConfig::default()
    };
    let mut rig = Rig::new(cfg, block_py());
    rig.handshake();
    let mut handles = Vec::new();
    // A hello trickled one byte at a time never completes within 4 frames.
    for i in 0..5u32 {
        let (h, _, outs) = rig.client_data(i, &CURL_HELLO[i as usize..i as usize + 1]);
        handles.push(h);
        if i < 4 {
            assert!(outs.is_empty());
        } else {
            assert_eq!(transmitted(&outs), handles);
        }
    }
    assert_eq!(rig.stats.flows.held_limit.get(), 1);
    assert_eq!(rig.stats.flows.unclassified.get(), 1);
}

#[test]
fn a_syn_flood_of_a_million_flows_stays_within_the_table_and_is_counted() {
    let cfg = FlowConfig {
        capacity: 4096,
        ..FlowConfig::default()
    };
    let mut rig = Rig::new(cfg, block_py());
    let table_capacity = rig.fwd.flows.capacity();
    let mut frame = seg(true, 1, None, "S", b"");
    for i in 0..1_000_000u32 {
        // Vary the source port and the low address bytes; the checksum is not checked here.
        frame[26 + 2] = (i >> 16) as u8;
        frame[26 + 3] = (i >> 8) as u8;
        frame[34..36].copy_from_slice(&(i as u16).to_be_bytes());
        assert_eq!(rig.fwd.on_frame(Port::A, &frame, i, rig.now), Action::Forward);
    }
    assert_eq!(rig.fwd.flow_count(), 4096);
    assert_eq!(rig.fwd.flows.capacity(), table_capacity, "the table never grew");
    assert_eq!(rig.stats.flows.started.get(), 4096);
    assert_eq!(rig.stats.flows.flow_table_full.get(), 1_000_000 - 4096);
    // Half-open flows leave after the handshake timeout, making room again.
    rig.fwd.poll(rig.now + Duration::from_secs(31), |_| &[][..]);
    assert_eq!(rig.fwd.flow_count(), 0);
    assert_eq!(rig.stats.flows.evicted_idle.get(), 4096);
}

#[test]
fn closed_flows_leave_the_table_after_the_linger() {
    let cfg = FlowConfig {
        fast_path: false,
        ..FlowConfig::default()
    };
    let mut rig = Rig::new(cfg, block_py());
    rig.handshake();
    rig.client_data(0, b"GET /");
    let fin_c = seg(true, CLIENT_ISN + 6, Some(SERVER_ISN + 1), "F", b"");
    let fin_s = seg(false, SERVER_ISN + 1, Some(CLIENT_ISN + 7), "F", b"");
    assert_eq!(rig.feed(Port::A, &fin_c).1, Action::Forward);
    assert_eq!(rig.feed(Port::B, &fin_s).1, Action::Forward);
    rig.fwd.poll(rig.now + Duration::from_secs(1), |_| &[][..]);
    assert_eq!(rig.fwd.flow_count(), 1);
    rig.fwd.poll(rig.now + Duration::from_secs(3), |_| &[][..]);
    assert_eq!(rig.fwd.flow_count(), 0);
    assert_eq!(rig.stats.flows.evicted_closed.get(), 1);
}

#[test]
fn malformed_frames_are_dropped_and_counted_by_reason() {
    let mut rig = Rig::new(FlowConfig::default(), block_py());
    assert_eq!(rig.feed(Port::B, &[0u8; 8]).1, Action::Drop);
    let mut bad = seg(true, 1, None, "", b"x");
    bad[14] = 0x42; // IHL 2
    assert_eq!(rig.feed(Port::B, &bad).1, Action::Drop);
    let stats = &rig.stats;
    assert_eq!(stats.ports[1].drop_malformed.get(), 2);
    assert_eq!(stats.parse_drops[1][wire::ParseError::Runt.index()].get(), 1);
    assert_eq!(
        stats.parse_drops[1][wire::ParseError::BadIpHeader.index()].get(),
        1
    );
    let snap = stats.snapshot(&["a".into(), "b".into()]);
    assert_eq!(snap["ports"]["b"]["parse_drops"]["runt"], 1);
}

#[test]
fn non_ip_is_forwarded() {
    let mut rig = Rig::new(FlowConfig::default(), block_py());
    let mut arp = vec![0xff; 12];
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0; 28]);
    assert_eq!(rig.feed(Port::A, &arp).1, Action::Forward);
}

/// Every session event of a run, in order, with the totals of the end.
fn session_log(outs: &[Output<u32>]) -> Vec<(SessionEventKind, Option<&'static str>, Option<Volume>)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Session(e) => Some((e.kind, e.reason, e.volume)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_session_seen_to_its_end_in_userspace_records_start_volume_and_a_normal_end() {
    let cfg = FlowConfig {
        fast_path: false,
        volume_interval: Duration::from_secs(60),
        ..FlowConfig::default()
    };
    let mut rig = Rig::new(cfg, block_py());
    let mut all = Vec::new();
    let mut wire_bytes = [0u64; 2];
    let mut feed = |rig: &mut Rig, from: Port, f: Vec<u8>, all: &mut Vec<Output<u32>>| {
        wire_bytes[usize::from(from == Port::B)] += f.len() as u64;
        let (_, _, outs) = rig.feed(from, &f);
        all.extend(outs);
    };
    feed(&mut rig, Port::A, seg(true, CLIENT_ISN, None, "S", b""), &mut all);
    feed(
        &mut rig,
        Port::B,
        seg(false, SERVER_ISN, Some(CLIENT_ISN + 1), "S", b""),
        &mut all,
    );
    assert!(events(&all).is_empty(), "no start before the handshake is whole");
    feed(
        &mut rig,
        Port::A,
        seg(true, CLIENT_ISN + 1, Some(SERVER_ISN + 1), "", b""),
        &mut all,
    );
    assert_eq!(events(&all), vec![(SessionEventKind::Start, None)]);
    feed(
        &mut rig,
        Port::A,
        seg(true, CLIENT_ISN + 1, Some(SERVER_ISN + 1), "", b"GET /"),
        &mut all,
    );
    feed(
        &mut rig,
        Port::B,
        seg(false, SERVER_ISN + 1, Some(CLIENT_ISN + 6), "", &[7u8; 1000]),
        &mut all,
    );
    rig.fwd.poll(rig.now + Duration::from_secs(61), |_| &[][..]);
    all.extend(rig.fwd.outputs());
    feed(
        &mut rig,
        Port::A,
        seg(true, CLIENT_ISN + 6, Some(SERVER_ISN + 1001), "F", b""),
        &mut all,
    );
    feed(
        &mut rig,
        Port::B,
        seg(false, SERVER_ISN + 1001, Some(CLIENT_ISN + 7), "F", b""),
        &mut all,
    );
    rig.fwd.poll(rig.now + Duration::from_secs(64), |_| &[][..]);
    all.extend(rig.fwd.outputs());
    let log = session_log(&all);
    let kinds: Vec<_> = log.iter().map(|(k, _, _)| *k).collect();
    assert_eq!(
        kinds,
        vec![
            SessionEventKind::Start,
            SessionEventKind::Volume,
            SessionEventKind::Volume,
            SessionEventKind::EndNormal
        ]
    );
    let first = log[1].2.unwrap();
    assert_eq!(first.packets, [3, 2]);
    let total = log[3].2.unwrap();
    assert_eq!(total.packets, [4, 3]);
    assert_eq!(
        total.bytes, wire_bytes,
        "the end's byte counts are the frames' lengths, per direction"
    );
    let Output::Session(end) = all
        .iter()
        .rev()
        .find(|o| matches!(o, Output::Session(_)))
        .unwrap()
    else {
        unreachable!()
    };
    assert_eq!(end.session.verdict, Some("pass"));
    assert_eq!(end.session.rule.as_deref(), Some("not_tls"));
    assert_eq!(end.session.client, "10.0.0.1:40000".parse().unwrap());
}

#[test]
fn a_bypassed_session_is_handed_to_the_kernel_with_its_counts() {
    let mut rig = Rig::new(FlowConfig::default(), block_py());
    rig.handshake();
    let (_, _, outs) = rig.client_data(0, CURL_HELLO);
    assert!(events(&outs).is_empty());
    rig.fwd.poll(rig.now + Duration::from_secs(6), |_| &[][..]);
    let outs: Vec<_> = rig.fwd.outputs().collect();
    let handoffs: Vec<&KernelSession> = outs
        .iter()
        .filter_map(|o| match o {
            Output::Handoff(k) => Some(k),
            _ => None,
        })
        .collect();
    assert_eq!(handoffs.len(), 1);
    let k = handoffs[0];
    assert_eq!(k.counts.total[0], 3, "SYN, ACK and the hello from the client");
    assert_eq!(k.counts.total[1], 1, "the SYN/ACK");
    assert_eq!(k.info.verdict, Some("bypass"));
    assert_eq!(
        k.info.hello.as_ref().and_then(|h| h.sni.as_deref()),
        Some("test.example")
    );
    assert!(
        events(&outs).is_empty(),
        "the sweeper records its end, not the worker"
    );
}

#[test]
fn resets_blocks_and_mid_stream_starts_are_recorded_as_abnormal() {
    let mut rig = Rig::new(FlowConfig::default(), block_py());
    rig.handshake();
    let (_, _, outs) = rig.client_data(0, PY_HELLO);
    assert_eq!(
        events(&outs),
        vec![
            (SessionEventKind::Volume, None),
            (SessionEventKind::EndAbnormal, Some("blocked"))
        ]
    );

    let mut rig = Rig::new(FlowConfig::default(), block_py());
    let (_, _, outs) = rig.client_data(0, b"midway");
    assert_eq!(
        events(&outs),
        vec![(SessionEventKind::StartAbnormal, Some("midstream"))]
    );

    // A SYN nobody answers is not a session: it leaves no record when it times out.
    let mut rig = Rig::new(FlowConfig::default(), block_py());
    rig.feed(Port::A, &seg(true, 1, None, "S", b""));
    rig.fwd.poll(rig.now + Duration::from_secs(31), |_| &[][..]);
    assert!(events(&rig.fwd.outputs().collect::<Vec<_>>()).is_empty());
}

#[test]
fn at_shutdown_open_sessions_end_or_go_to_the_sweeper_and_held_frames_are_freed() {
    // A session being classified (half a hello held): its frame is freed and it ends
    // here, as `bridge_stopped`, with its last volume.
    let mut rig = Rig::new(FlowConfig::default(), block_py());
    rig.handshake();
    let (held, action, _) = rig.client_data(0, &CURL_HELLO[..40]);
    assert_eq!(action, Action::Hold);
    rig.fwd.shutdown(rig.now + Duration::from_secs(1));
    let outs: Vec<_> = rig.fwd.outputs().collect();
    assert_eq!(freed(&outs), vec![held]);
    assert_eq!(
        events(&outs),
        vec![
            (SessionEventKind::Volume, None),
            (SessionEventKind::EndAbnormal, Some("bridge_stopped"))
        ]
    );
    assert_eq!((rig.fwd.flow_count(), rig.fwd.frames_held()), (0, 0));

    // A session the kernel carries: handed to the sweeper, which ends it with the
    // kernel's counts.
    let mut rig = Rig::new(FlowConfig::default(), block_py());
    rig.handshake();
    rig.client_data(0, CURL_HELLO);
    rig.server_data(0, SERVER_HELLO_TLS12);
    rig.fwd.shutdown(rig.now + Duration::from_secs(1));
    let outs: Vec<_> = rig.fwd.outputs().collect();
    assert!(events(&outs).is_empty());
    assert_eq!(outs.iter().filter(|o| matches!(o, Output::Handoff(_))).count(), 1);

    // A SYN nobody answered never started, so it has no end either.
    let mut rig = Rig::new(FlowConfig::default(), block_py());
    rig.feed(Port::A, &seg(true, CLIENT_ISN, None, "S", b""));
    rig.fwd.shutdown(rig.now);
    assert!(rig.fwd.outputs().next().is_none());
    assert_eq!(rig.fwd.flow_count(), 0);
}

#[test]
fn a_bypassed_tls_flow_waits_for_its_server_hello_at_most_three_seconds() {
    let mut rig = Rig::new(FlowConfig::default(), block_py());
    rig.handshake();
    let (_, _, outs) = rig.client_data(0, CURL_HELLO);
    assert!(verdicts(&outs).is_empty());
    rig.fwd.poll(rig.now + Duration::from_secs(2), |_| &[][..]);
    assert!(verdicts(&rig.fwd.outputs().collect::<Vec<_>>()).is_empty());
    rig.fwd.poll(rig.now + Duration::from_millis(3100), |_| &[][..]);
    let outs: Vec<_> = rig.fwd.outputs().collect();
    assert_eq!(verdicts(&outs), vec![Verdict::Bypass]);
    assert_eq!(rig.stats.flows.server_hello_timeouts.get(), 1);
    // A server payload that is no ServerHello (the wait is over anyway): nothing more.
    let (_, _, outs) = rig.server_data(0, b"HTTP/1.1 400");
    assert!(outs.is_empty());

    // A server whose first payload is not a ServerHello: counted, and the flow goes to
    // the kernel all the same.
    let mut rig = Rig::new(FlowConfig::default(), block_py());
    rig.handshake();
    rig.client_data(0, CURL_HELLO);
    let (_, _, outs) = rig.server_data(0, b"\x15\x03\x03\x00\x02\x02\x28");
    assert_eq!(verdicts(&outs), vec![Verdict::Bypass]);
    assert_eq!(rig.stats.flows.server_hello_unreadable.get(), 1);
}

#[test]
fn a_bypassed_tls_flow_closed_before_its_verdict_ends_in_userspace() {
    let mut rig = Rig::new(
        FlowConfig {
            closed_linger: Duration::from_secs(1),
            ..FlowConfig::default()
        },
        block_py(),
    );
    rig.handshake();
    rig.client_data(0, CURL_HELLO);
    let client_end = CLIENT_ISN + 1 + CURL_HELLO.len() as u32;
    rig.feed(Port::B, &seg(false, SERVER_ISN + 1, Some(client_end), "F", b""));
    rig.feed(Port::A, &seg(true, client_end, Some(SERVER_ISN + 2), "F", b""));
    rig.fwd.poll(rig.now + Duration::from_millis(1500), |_| &[][..]);
    let outs: Vec<_> = rig.fwd.outputs().collect();
    assert!(
        !outs.iter().any(|o| matches!(o, Output::Handoff(_))),
        "not in the kernel, so not the sweeper's"
    );
    assert_eq!(
        events(&outs),
        vec![
            (SessionEventKind::Volume, None),
            (SessionEventKind::EndNormal, None)
        ]
    );
}

/// The frames of a `MirrorCopies` output.
fn copies(outs: &[Output<u32>]) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    for o in outs {
        if let Output::MirrorCopies(buf) = o {
            let mut rest = &buf[..];
            while rest.len() >= 2 {
                let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                frames.push(rest[2..2 + len].to_vec());
                rest = &rest[2 + len..];
            }
            assert!(rest.is_empty(), "copies end on a frame boundary");
        }
    }
    frames
}

#[test]
fn a_mirrored_plaintext_flow_gives_the_mirror_every_frame_from_its_syn_and_stays_out_of_the_kernel() {
    let cfg = FlowConfig {
        mirror_plaintext: true,
        ..FlowConfig::default()
    };
    let mut rig = Rig::new(cfg, block_py());
    let handshake = [
        (Port::A, seg(true, CLIENT_ISN, None, "S", b"")),
        (Port::B, seg(false, SERVER_ISN, Some(CLIENT_ISN + 1), "S", b"")),
        (Port::A, seg(true, CLIENT_ISN + 1, Some(SERVER_ISN + 1), "", b"")),
    ];
    for (from, f) in &handshake {
        let (_, action, outs) = rig.feed(*from, f);
        assert_eq!(action, Action::Forward);
        assert!(
            copies(&outs).is_empty(),
            "nothing mirrored before the flow's fate is known"
        );
    }
    let request = seg(
        true,
        CLIENT_ISN + 1,
        Some(SERVER_ISN + 1),
        "",
        b"GET / HTTP/1.1\r\n\r\n",
    );
    let (h, action, outs) = rig.feed(Port::A, &request);
    assert_eq!(action, Action::Hold);
    assert_eq!(transmitted(&outs), vec![h]);
    assert!(
        verdicts(&outs).is_empty(),
        "a mirrored flow gets no kernel verdict"
    );
    let mut want: Vec<Vec<u8>> = handshake.iter().map(|(_, f)| f.clone()).collect();
    want.push(request.clone());
    assert_eq!(
        copies(&outs),
        want,
        "handshake and request, byte for byte, in order"
    );
    // From now on every frame is forwarded and mirrored.
    let reply = seg(
        false,
        SERVER_ISN + 1,
        Some(CLIENT_ISN + 19),
        "",
        b"HTTP/1.1 200 OK\r\n\r\n",
    );
    let (_, action, _) = rig.feed(Port::B, &reply);
    assert_eq!(action, Action::ForwardMirrored);
    // Quiet past the decided linger: still in userspace (not handed to the kernel).
    rig.fwd.poll(rig.now + Duration::from_secs(6), |_| &[][..]);
    let outs: Vec<_> = rig.fwd.outputs().collect();
    assert!(!outs.iter().any(|o| matches!(o, Output::Handoff(_))));
    assert_eq!(rig.fwd.flow_count(), 1);

    // A TLS flow is not mirrored and goes to the kernel as usual.
    let cfg = FlowConfig {
        mirror_plaintext: true,
        ..FlowConfig::default()
    };
    let mut rig = Rig::new(cfg, block_py());
    rig.handshake();
    let (_, _, outs) = rig.client_data(0, CURL_HELLO);
    assert!(copies(&outs).is_empty());
    let (_, action, outs) = rig.server_data(0, SERVER_HELLO_TLS12);
    assert_eq!(action, Action::Forward);
    assert_eq!(verdicts(&outs), vec![Verdict::Bypass]);
}

#[test]
fn an_ended_interception_resets_a_peer_still_sending_and_lets_its_ports_open_anew() {
    let cfg = FlowConfig {
        intercept: true,
        ..FlowConfig::default()
    };
    let mut rig = Rig::new(
        cfg,
        policy("[[rule]]\nsni = \"test.example\"\naction = \"intercept\"\n"),
    );
    rig.handshake();
    let (_, action, outs) = rig.client_data(0, CURL_HELLO);
    assert_eq!(action, Action::Hold);
    let key = outs
        .iter()
        .find_map(|o| match o {
            Output::Intercept { key, .. } => Some(*key),
            _ => None,
        })
        .expect("the flow is handed to an interception session");
    rig.fwd.intercept_ended(&key, rig.now, None);
    let _ = rig.fwd.outputs().count();

    // The server retransmits its last bytes and FIN, never acknowledged: dropped, and
    // answered with a reset from the client's address at the sequence number the server
    // expects.
    let late = seg(
        false,
        SERVER_ISN + 500,
        Some(CLIENT_ISN + 900),
        "F",
        b"close_notify",
    );
    let (_, action, outs) = rig.feed(Port::B, &late);
    assert_eq!(action, Action::Drop);
    let resets = emitted(&outs);
    assert_eq!(resets.len(), 1, "{outs:?}");
    let (to, bytes) = &resets[0];
    assert_eq!(*to, Port::B);
    let p = SlicedPacket::from_ethernet(bytes).unwrap();
    let (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Tcp(tcp))) = (p.net, p.transport) else {
        panic!("not TCP/IPv4")
    };
    assert!(tcp.rst());
    assert_eq!(ip.header().source(), [10, 0, 0, 1]);
    assert_eq!(tcp.sequence_number(), CLIENT_ISN + 900);
    assert_eq!(rig.stats.flows.intercept_late_frames.get(), 1);
    // A late reset or bare ACK gets no answer.
    for (from, late) in [
        (Port::B, seg(false, SERVER_ISN + 520, None, "R", b"")),
        (
            Port::A,
            seg(true, CLIENT_ISN + 900, Some(SERVER_ISN + 520), "", b""),
        ),
    ] {
        let (_, action, outs) = rig.feed(from, &late);
        assert_eq!(action, Action::Drop);
        assert!(!outs.iter().any(|o| matches!(o, Output::Emit { .. })), "{outs:?}");
    }

    // The client opens a new connection from the same port: a new flow, forwarded.
    let started = rig.stats.flows.started.get();
    let (_, action, _) = rig.feed(Port::A, &seg(true, CLIENT_ISN + 70_000, None, "S", b""));
    assert_eq!(action, Action::Forward);
    assert_eq!(rig.stats.flows.intercept_reopened.get(), 1);
    assert_eq!(rig.stats.flows.started.get(), started + 1);
}

#[test]
fn a_new_connection_on_the_ports_of_a_bypassed_one_is_classified_anew() {
    let mut rig = Rig::new(FlowConfig::default(), block_py());
    rig.handshake();
    let (h, _, outs) = rig.client_data(0, CURL_HELLO);
    assert!(transmitted(&outs).contains(&h), "test.example is let through");
    let hello_end = CLIENT_ISN + 1 + CURL_HELLO.len() as u32;
    let reply = seg(false, SERVER_ISN + 1, Some(hello_end), "", SERVER_HELLO_TLS12);
    let (_, _, outs) = rig.feed(Port::B, &reply);
    let session = outs
        .iter()
        .find_map(|o| match o {
            Output::Verdict {
                verdict: Verdict::Bypass,
                session,
                ..
            } => Some(*session),
            _ => None,
        })
        .expect("the bypass verdict, once the ServerHello is read");

    // The client reuses its port for a new connection, to a name the policy blocks. The
    // kernel sent its SYN here (and stopped applying the old verdict).
    let (c2, s2) = (50_000u32, 90_000u32);
    let (_, action, outs) = rig.feed(Port::A, &seg(true, c2, None, "S", b""));
    assert_eq!(action, Action::Forward);
    let handoff = outs
        .iter()
        .find_map(|o| match o {
            Output::Handoff(k) => Some(k),
            _ => None,
        })
        .expect("the old session goes to the sweeper to be ended");
    assert_eq!(handoff.info.id, session);
    assert!(
        handoff.reopened.is_some(),
        "marked for the worker to read its last counts"
    );
    assert_eq!(rig.stats.flows.reopened.get(), 1);
    rig.finish_handshake(c2, s2);
    let (_, action, outs) = rig.feed(Port::A, &seg(true, c2 + 1, Some(s2 + 1), "", PY_HELLO));
    assert_eq!(action, Action::Hold, "the new hello is read");
    assert_eq!(verdicts(&outs), vec![Verdict::Block], "and the new name blocked");
    let new_session = outs
        .iter()
        .find_map(|o| match o {
            Output::Verdict { session, .. } => Some(*session),
            _ => None,
        })
        .unwrap();
    assert_ne!(new_session, session, "a session of its own");
}
