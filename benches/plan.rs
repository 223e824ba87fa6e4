//! Benchmark: planning time for large runs (config parse + plan build), to show it is linear.
//!
//! `cargo bench --bench plan` (release profile). For 1,000, 5,000 and 10,000 checks it times
//! `plan::build` on a config file of `[[check]]` tables and on the same number of ad-hoc targets,
//! DTCPROBE_BENCH_ITERS runs each (default 15), and prints median and min-max plus the time per
//! check: a linear planner keeps the per-check time flat as the count grows.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use dtcprobe::exit::FailOn;
use dtcprobe::plan::{self, PlanInput};
use dtcprobe::report::outputs::OutputRequest;
use dtcprobe::report::Format;

fn input(targets: Vec<String>, config: Option<PathBuf>) -> PlanInput {
    PlanInput {
        targets,
        config,
        only: Vec::new(),
        timeout: None,
        concurrency: None,
        list_endpoints: false,
        trace: true,
        hold: None,
        cert_warn_days: None,
        output: OutputRequest {
            format: Format::Json,
            color: false,
            quiet: false,
            outputs: Vec::new(),
            textfile_dir: None,
            firewall_requests: Vec::new(),
            textfile_name: dtcprobe::report::outputs::TEXTFILE_NAME.into(),
            fail_on: FailOn::Failure,
            baseline: None,
        },
    }
}

fn time(iters: usize, input: &PlanInput, expect: usize) -> (Duration, Duration, Duration) {
    let mut v: Vec<Duration> = (0..iters)
        .map(|_| {
            let started = Instant::now();
            let plan = plan::build(input).expect("plan builds");
            let took = started.elapsed();
            assert_eq!(plan.checks.len(), expect);
            took
        })
        .collect();
    v.sort();
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() {
    // `cargo bench` passes --bench; under `cargo test --all-targets` run a small smoke test.
    let benching = std::env::args().any(|a| a == "--bench");
    let iters: usize = std::env::var("DTCPROBE_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15)
        .clamp(1, 1000);
    let (iters, sizes): (usize, &[usize]) = if benching {
        (iters, &[1_000, 5_000, 10_000])
    } else {
        (1, &[100])
    };
    let dir = tempfile::tempdir().unwrap();
    println!(
        "planning (config parse + plan build), {iters} runs each: median (min-max), per check"
    );
    for &n in sizes {
        let urls: Vec<String> = (0..n)
            .map(|i| format!("tcp://127.0.0.{}:{}", 1 + i / 50_000, 10_000 + i % 50_000))
            .collect();
        let mut toml = String::from("[defaults]\ntimeout = \"1s\"\n");
        for i in 0..n {
            toml.push_str(&format!(
                "\n[[check]]\nname = \"c{i}\"\nkind = \"tcp\"\nhost = \"127.0.0.{}\"\nport = {}\n",
                1 + i / 50_000,
                10_000 + i % 50_000
            ));
        }
        let cfg = dir.path().join(format!("plan{n}.toml"));
        std::fs::write(&cfg, toml).unwrap();
        for (label, input) in [
            ("config", input(Vec::new(), Some(cfg))),
            ("ad-hoc", input(urls, None)),
        ] {
            let (median, min, max) = time(iters, &input, n);
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            println!(
                "{label:<7} {n:>6} checks: {:>8.2} ms ({:.2}-{:.2})  {:>6.2} us/check",
                ms(median),
                ms(min),
                ms(max),
                ms(median) * 1e3 / n as f64
            );
        }
    }
}
