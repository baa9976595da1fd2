//! Times `Router::route` on generated telemetry: `cargo run --release --example route_speed`.
//! A profiling aid for the writer's per-message cost; the benchmark (`scripts/bench`) is
//! where throughput is measured.
use std::time::Instant;

fn main() {
    let mut g = kbackup::sample::TelemetryGen::new(7, 100_000, 1_580_500_000_000, 1_580_600_000_000);
    let events: Vec<String> = (0..100_000).map(|i| g.next_event(i).1).collect();
    let cfg = kbackup::config::Config::parse(
        "[kafka]\nbrokers='x'\ngroup_id='g'\n[storage]\nurl='file:///tmp/x'\n[[topic]]\nname='t'\npath='p'\noutput_timezone='Asia/Kolkata'\n",
        "example",
    )
    .expect("config");
    let router = kbackup::routing::Router::new(&cfg.topics[0], 0).expect("router");
    let bytes: usize = events.iter().map(String::len).sum();
    for round in 0..3 {
        let t = Instant::now();
        let mut n = 0;
        for e in &events {
            n += router.route(Some(e.as_bytes()), Some(0), 0).date.len();
        }
        let s = t.elapsed().as_secs_f64();
        println!("route: {:.0} ns/event, {:.2} GB/s (round {round}, {n})", s * 1e9 / events.len() as f64, bytes as f64 / s / 1e9);
    }
}
