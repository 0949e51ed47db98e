//! #28: the async readers (feature `tokio`) on the real kernel: a ring
//! buffer awaited until the traced command exits, every record in order;
//! per-CPU perf buffers awaited until every record came.

use std::time::Duration;

use sonde::maps::{AsyncPerfBuffer, AsyncRingBuf, PerfEventArray, PerfRecord, RingBuf};
use sonde::{AttachOptions, Object, Target};
use sonde_tests::*;

const SEQ: &str = "abcabcaadbbbcda";

#[test]
fn an_async_ring_buffer_reads_every_record_until_the_command_exits() {
    require_root();
    let cookies = [11, 22, 33, 44];
    let mut object = Object::load(PROBES).expect("load object");
    let script = format!("exec {} {SEQ} < /dev/null > /dev/null", target_app().display());
    let mut held = sonde::command::HeldCommand::spawn(["sh", "-c", &script]).expect("held command");
    let _attachment = object
        .uprobe("record_calls")
        .expect("program")
        .attach(&targets(&cookies), &AttachOptions::default().pid(held.pid()))
        .expect("attach");
    let mut ring = RingBuf::new(object.map("EVENTS").expect("EVENTS")).expect("ring");
    ring.until_exit(held.pid()).expect("watch the command");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let seen = runtime.block_on(async {
        let mut events = AsyncRingBuf::new(ring).expect("registered");
        held.release().expect("release");
        let read = async {
            let mut seen = Vec::new();
            while let Some(e) = events.next_as::<Event>().await {
                seen.push(e.expect("an Event").cookie);
            }
            seen
        };
        tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .expect("the stream ended with the command")
    });
    assert_eq!(held.wait(), 0);
    let want: Vec<u64> = SEQ
        .chars()
        .map(|c| cookies[FUNCTIONS.iter().position(|f| f.1 == c).expect("letter")])
        .collect();
    assert_eq!(seen, want, "every record, in order");
}

#[test]
fn async_perf_buffers_read_every_record() {
    require_root();
    let app = target_app();
    let mut object = Object::load(PROBES).expect("object");
    let perf = PerfEventArray::new(object.map("PERF_EVENTS").expect("map")).expect("view");
    let buffers = perf.open_all(4).expect("per-CPU buffers");
    let waiting = Waiting::spawn("abba").until_blocked();
    let _attachment = object
        .uprobe("perf_calls")
        .expect("program")
        .attach(
            &[
                Target::symbol(&app, "sonde_fn_a").cookie(1),
                Target::symbol(&app, "sonde_fn_b").cookie(2),
            ],
            &AttachOptions::default().pid(waiting.pid()),
        )
        .expect("attach");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut events: Vec<Event> = runtime.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for b in buffers {
            let mut b = AsyncPerfBuffer::new(b).expect("registered");
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Ok(record) = b.next().await {
                    let event = match &record {
                        PerfRecord::Sample(_) => record.sample_as::<Event>().expect("a whole Event"),
                        PerfRecord::Lost(n) => panic!("{n} records lost"),
                    };
                    if tx.send(event).is_err() {
                        return;
                    }
                }
            });
        }
        waiting.run();
        let mut got = Vec::new();
        while got.len() < 4 {
            let e = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await
                .expect("four records within 30 s")
                .expect("a record");
            got.push(e);
        }
        got
    });
    events.sort_by_key(|e| e.value);
    let got: Vec<(u64, u64)> = events.iter().map(|e| (e.cookie, e.value)).collect();
    // "abba": a(0) b(1) b(2) a(3).
    assert_eq!(got, [(1, 0), (2, 1), (2, 2), (1, 3)]);
}
