//! Criterion benchmarks of the core derivations and lookups (see BENCHMARKS.md).
//!
//! `cargo bench -p dp3t-core --bench core` runs them all; a filter such as `-- tek` runs one
//! group. `bench/core.sh` compares the TEK figure with the hardware bound of
//! `gaen-limit.sh`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use dp3t_core::cuckoo::FilterBuilder;
use dp3t_core::export::{
    read_verified_export, write_export_zip, ExportBatch, ExportKey, SignatureInfo,
};
use dp3t_core::gaen::{derive_rpis_into, derive_rpis_many, encrypt_padded, rpik_fast, Block, Tek};
use dp3t_core::hybrid::{WindowMinutes, WindowSeed};
use dp3t_core::lowcost::DayKey;
use dp3t_core::signing::SigningKey;
use dp3t_core::time::Enin;

fn rng() -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(0x0d93_7ace)
}

/// One TEK → its 144 RPIs: the hot path of GAEN matching.
/// What GAEN matching runs: the 144 RPIs of 64 TEKs, derived four at a time
/// (`derive_rpis_many`); criterion's throughput is in TEKs.
fn tek_many(c: &mut Criterion) {
    let mut g = c.benchmark_group("tek_many");
    g.throughput(Throughput::Elements(64));
    let mut r = rng();
    let keys: Vec<([u8; 16], u32)> = (0..64u32)
        .map(|i| (*Tek::generate(&mut r).as_bytes(), 2_642_976 + i * 144))
        .collect();
    let mut out = vec![[Block::default(); 144]; keys.len()];
    g.bench_function("derive_rpis_many_64", |b| {
        b.iter(|| {
            derive_rpis_many(black_box(&keys), &mut out);
            black_box(&out);
        })
    });
    g.finish();
}

fn tek(c: &mut Criterion) {
    let mut g = c.benchmark_group("tek");
    g.throughput(Throughput::Elements(1));
    let key = Tek::generate(&mut rng());
    let mut buf = [Block::default(); 144];
    g.bench_function("derive_rpis_into_144", |b| {
        b.iter(|| {
            let out = derive_rpis_into(black_box(key.as_bytes()), 2_642_976, 144, &mut buf);
            black_box(out.len());
        })
    });
    g.bench_function("rpik_rpis_144", |b| {
        b.iter(|| {
            let rpis = black_box(&key)
                .rpik()
                .rpis(Enin(2_642_976), 144)
                .unwrap_or_default();
            black_box(rpis)
        })
    });
    // The two halves of `derive_rpis_into`, to see where the time goes.
    g.bench_function("rpik_fast", |b| {
        b.iter(|| black_box(rpik_fast(black_box(key.as_bytes()))))
    });
    let rpik = rpik_fast(key.as_bytes());
    g.bench_function("encrypt_padded_144", |b| {
        b.iter(|| {
            encrypt_padded(black_box(&rpik), 2_642_976, &mut buf);
            black_box(&buf);
        })
    });
    g.finish();
}

/// DP-3T low-cost: one day key → its 96 EphIDs; hybrid: one window seed → its EphIDs.
fn ephids(c: &mut Criterion) {
    let mut g = c.benchmark_group("ephids");
    g.throughput(Throughput::Elements(1));
    let day = DayKey::generate(&mut rng());
    g.bench_function("lowcost_day_96", |b| {
        b.iter(|| black_box(black_box(&day).ephids()))
    });
    let seed = WindowSeed::generate(&mut rng());
    g.bench_function("hybrid_window_default", |b| {
        b.iter(|| black_box(black_box(&seed).ephids(WindowMinutes::DEFAULT)))
    });
    g.finish();
}

/// DPCF lookups in a filter of one million hashes. Both benchmarks walk a million
/// queries in order (as a phone walks the hashes it heard), so each lookup lands on a
/// random bucket of the ~8 MB table, as in real use.
fn cuckoo(c: &mut Criterion) {
    const N: usize = 1_000_000;
    let mut r = rng();
    let mut random = |n: usize| -> Vec<[u8; 32]> {
        (0..n)
            .map(|_| {
                let mut x = [0u8; 32];
                r.fill_bytes(&mut x);
                x
            })
            .collect()
    };
    let items = random(N);
    let absent = random(N);
    let filter = FilterBuilder::new()
        .build(&items)
        .expect("building the benchmark filter");
    let mut g = c.benchmark_group("cuckoo_1m");
    g.throughput(Throughput::Elements(1));
    for (name, queries) in [("contains_present", &items), ("contains_absent", &absent)] {
        let mut i = 0usize;
        g.bench_function(name, |b| {
            b.iter(|| {
                i = if i + 1 == N { 0 } else { i + 1 };
                black_box(filter.contains(black_box(&queries[i])))
            })
        });
    }
    g.finish();
}

/// A phone's work on one downloaded export file: unzip, check the signature, parse the
/// 10,000 keys.
fn export(c: &mut Criterion) {
    const N: usize = 10_000;
    let mut r = rng();
    let batch = ExportBatch {
        start_timestamp: 1_700_000_000,
        end_timestamp: 1_700_007_200,
        region: "CH".into(),
        batch_num: 1,
        batch_size: 1,
        keys: (0..N)
            .map(|i| {
                let mut key_data = [0u8; 16];
                r.fill_bytes(&mut key_data);
                ExportKey {
                    key_data,
                    rolling_start_interval_number: 2_800_000 + 144 * (i as u32 % 14),
                    rolling_period: 144,
                    transmission_risk_level: 0,
                    report_type: Some(1),
                    days_since_onset_of_symptoms: None,
                }
            })
            .collect(),
        revised_keys: Vec::new(),
    };
    let info = SignatureInfo {
        verification_key_version: "v1".into(),
        verification_key_id: "228".into(),
    };
    let key = SigningKey::generate(&mut r);
    let public = key.public_key();
    let zip = write_export_zip(&batch, &info, &key).expect("writing the benchmark export");
    let mut g = c.benchmark_group("export");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(30);
    g.bench_function("read_verified_10k_keys", |b| {
        b.iter(|| {
            let batch = read_verified_export(black_box(&zip), &public).expect("valid export");
            black_box(batch.keys.len())
        })
    });
    g.finish();
}

criterion_group!(benches, tek, tek_many, ephids, cuckoo, export);
criterion_main!(benches);
