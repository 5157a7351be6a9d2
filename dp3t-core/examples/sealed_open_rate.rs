//! How many sealed uploads one core opens per second (BENCHMARKS.md, PROTOCOL.md §16).
//!
//! The criterion bench (`benches/sealed.rs`) measures wall time, which a busy machine
//! inflates; this counts the opening thread's own on-CPU time (Linux
//! `/proc/thread-self/schedstat`), so the figure is per core whatever else runs.
//!
//! `cargo run --release -p dp3t-core --example sealed_open_rate [seconds per scheme]`

use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use dp3t_core::engine::Scheme;
use dp3t_core::hybrid::WindowMinutes;
use dp3t_core::sealed::{open_upload, padded_len, seal_upload, OpeningKey, SealedRoute};
use dp3t_core::time::UnixTime;

/// Nanoseconds this thread has run on a CPU, if the kernel tells.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds: f64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(3.0);
    let mut rng = ChaCha20Rng::seed_from_u64(0x5ea1);
    // Two keys held, as during a rotation overlap; envelopes sealed to the newer one.
    let keys = [
        OpeningKey::generate(UnixTime(2_000_000_000), &mut rng),
        OpeningKey::generate(UnixTime(2_000_600_000), &mut rng),
    ];
    let token = "t".repeat(600);
    println!("scheme       envelope  opens/s per CPU-second  (wall: opens/s)");
    for (name, scheme, route, body_len) in [
        ("gaen", Scheme::Gaen, SealedRoute::GaenV2, 3_734),
        ("lowcost", Scheme::LowCost, SealedRoute::LowCost, 87),
        ("hybrid_120", Scheme::Hybrid, SealedRoute::Hybrid, 15_637),
        (
            "unlinkable",
            Scheme::Unlinkable,
            SealedRoute::Unlinkable,
            108_875,
        ),
    ] {
        let n = padded_len(scheme, WindowMinutes::DEFAULT);
        let body = vec![b'x'; body_len];
        let env = seal_upload(keys[1].sealing_key(), route, &token, &body, n, &mut rng)?;
        let (cpu0, wall0) = (thread_cpu_ns(), Instant::now());
        let mut opened = 0u64;
        while wall0.elapsed().as_secs_f64() < seconds {
            for _ in 0..100 {
                let o = open_upload(&keys, std::hint::black_box(&env))?;
                std::hint::black_box(o.body.len());
                opened += 1;
            }
        }
        let wall = wall0.elapsed().as_secs_f64();
        let cpu = match (cpu0, thread_cpu_ns()) {
            (Some(a), Some(b)) => format!("{:>10.0}", opened as f64 / ((b - a) as f64 / 1e9)),
            _ => "         ?".to_owned(),
        };
        println!(
            "{name:<12} {:>8}  {cpu}              ({:.0})",
            env.len(),
            opened as f64 / wall
        );
    }
    Ok(())
}
