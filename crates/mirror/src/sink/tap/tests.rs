use super::*;
use crate::conversation::ConversationOptions;
use crate::sink::test_support::{frames, in_netns, ip, skip_unless_root, Capture};
use std::net::{IpAddr, Ipv4Addr};

fn endpoints() -> crate::Endpoints {
    crate::Endpoints {
        client_mac: [2, 0, 0, 0, 0, 0xa],
        server_mac: [2, 0, 0, 0, 0, 0xb],
        client_ip: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)),
        client_port: 34567,
        server_ip: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2)),
        server_port: 443,
    }
}

#[test]
fn missing_tap_is_an_error_not_a_new_device() {
    let err = TapSink::open("gw-no-such-tap").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
}

#[test]
fn tap_frames_arrive_and_a_deleted_tap_is_counted_then_reattached() {
    if skip_unless_root("TAP sink test") {
        return;
    }
    in_netns(|| {
        ip(&["tuntap", "add", "dev", "gwmtap0", "mode", "tap"]);
        ip(&["link", "set", "gwmtap0", "up"]);
        let mut sink = TapSink::open("gwmtap0").unwrap();
        let cap = Capture::open("gwmtap0");
        let want = frames(endpoints(), &ConversationOptions::default());
        for (ts, f) in &want {
            sink.write(*ts, f).unwrap();
        }
        let got = cap.collect(Duration::from_millis(200));
        for (_, f) in &want {
            assert!(got.contains(f), "a written frame did not appear on the TAP");
        }
        assert_eq!(sink.counters().frames, want.len() as u64);

        // The TAP disappears mid-run: writes fail, are counted, nothing panics.
        ip(&["link", "del", "gwmtap0"]);
        for (ts, f) in &want {
            let _ = sink.write(*ts, f);
        }
        let c = sink.counters();
        assert!(c.errors >= 1, "{c:?}");
        assert_eq!(c.errors + c.dropped, want.len() as u64, "{c:?}");
        assert!(!sink.is_attached());

        // It comes back: after the backoff the sink reattaches by itself.
        ip(&["tuntap", "add", "dev", "gwmtap0", "mode", "tap"]);
        ip(&["link", "set", "gwmtap0", "up"]);
        let deadline = Instant::now() + Duration::from_secs(3);
        while sink.write(want[0].0, &want[0].1).is_err() {
            assert!(
                Instant::now() < deadline,
                "never reattached: {:?}",
                sink.counters()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(sink.counters().reopens, 2);
        drop(sink);
        ip(&["link", "del", "gwmtap0"]);
    });
}
