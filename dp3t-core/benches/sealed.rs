//! How fast the key server opens sealed uploads (PROTOCOL.md §16; BENCHMARKS.md): one
//! `open_upload` per envelope — X25519, the HPKE key schedule, ChaCha20-Poly1305 over the
//! scheme's padded size, the plaintext checks — with two keys held, as during a rotation
//! overlap. Single-threaded, so the figure is per core.
//!
//! `cargo bench -p dp3t-core --bench sealed`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use dp3t_core::engine::Scheme;
use dp3t_core::hybrid::WindowMinutes;
use dp3t_core::sealed::{open_upload, padded_len, seal_upload, OpeningKey, SealedRoute};
use dp3t_core::time::UnixTime;

fn open(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(0x5ea1);
    let keys = [
        OpeningKey::generate(UnixTime(2_000_000_000), &mut rng),
        OpeningKey::generate(UnixTime(2_000_600_000), &mut rng),
    ];
    let token = "t".repeat(600);
    let mut g = c.benchmark_group("sealed_open");
    g.throughput(Throughput::Elements(1));
    g.sample_size(30);
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
        let env = seal_upload(keys[1].sealing_key(), route, &token, &body, n, &mut rng)
            .unwrap_or_default();
        g.bench_function(name, |b| {
            b.iter(|| black_box(open_upload(&keys, black_box(&env)).map(|o| o.body.len())))
        });
    }
    g.finish();
}

criterion_group!(benches, open);
criterion_main!(benches);
