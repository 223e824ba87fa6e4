//! Benchmark: the cost of the agent channel's Noise handshake (issue 13 item 1), in process, with
//! no network: a near side and an agent over an in-memory pipe, each round the whole exchange a
//! `peer` run makes before its `login` hop passes (hello, `psk, e`, `e, ee`, an encrypted request,
//! an encrypted `accepted`). Both sides' CPU, one thread (current-thread runtime).
//!
//! `cargo bench --bench agent_handshake` (release profile), or in the dev profile (the crypto
//! crates are optimised there too, the JSON codec is not) with
//! `cargo test --bench agent_handshake`. DTCPROBE_BENCH_ITERS rounds (default 2000); prints the
//! median and p99 of per-round time and the handshakes per second of one core.

use std::time::{Duration, Instant};

use dtcprobe::agent::protocol::{Key, Message, SecureChannel};

fn main() {
    let iters: usize = std::env::var("DTCPROBE_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let key = Key::from_bytes(
        dtcprobe::agent::protocol::example_key_text("bench").as_bytes(),
        "bench",
    )
    .expect("key");
    let identity = dtcprobe::agent::protocol::AgentIdentity::generate().expect("identity");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let limit = Duration::from_secs(5);
    let mut rounds: Vec<Duration> = Vec::with_capacity(iters);
    let started = Instant::now();
    rt.block_on(async {
        for _ in 0..iters {
            let (near, far) = tokio::io::duplex(1 << 16);
            let round = Instant::now();
            let agent = async {
                let mut ch = SecureChannel::accept(far, &key, &identity, limit)
                    .await
                    .map_err(|(e, _)| e)
                    .expect("agent handshake");
                ch.recv(limit).await.expect("request");
                ch.send(&Message::Accepted, limit).await.expect("accepted");
            };
            let peer = async {
                let mut ch = SecureChannel::connect(near, &key, limit)
                    .await
                    .expect("near handshake");
                let body = r#"{"op":"peer","callback":{"port":40000}}"#.to_string();
                ch.send(&Message::Request { body }, limit)
                    .await
                    .expect("send");
                assert_eq!(ch.recv(limit).await.expect("accepted"), Message::Accepted);
            };
            tokio::join!(agent, peer);
            rounds.push(round.elapsed());
        }
    });
    let total = started.elapsed();
    rounds.sort();
    let pct = |p: usize| rounds[((rounds.len() * p).div_ceil(100)).saturating_sub(1)];
    println!(
        "agent channel handshake + request/accepted, both sides, one core: {iters} rounds, \
         median {:?}, p99 {:?}, {:.0} per second",
        pct(50),
        pct(99),
        iters as f64 / total.as_secs_f64()
    );
}
