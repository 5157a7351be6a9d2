// scratch: not committed
use dp3t_core::gaen::{derive_rpis_many, DayBlocks, Block};
use dp3t_core::matching::{PublishedTek, SightingIndex, match_gaen};
use dp3t_core::store::Sighting;
use dp3t_core::time::UnixTime;
use rand::{Rng, SeedableRng};
use std::time::Instant;
fn main() {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    let n: usize = std::env::args().nth(2).map_or(400_000, |a| a.parse().unwrap());
    let keys: Vec<([u8;16],u32)> = (0..n).map(|i| (rng.gen(), 2_880_000 + (i as u32 % 14)*144)).collect();
    let mut bufs = vec![[Block::default(); 144]; 4];
    let mut acc = 0u8;
    for rep in 0..3 {
        let t = Instant::now();
        for g in keys.chunks(4) {
            derive_rpis_many(g, &mut bufs[..g.len()]);
            acc ^= bufs[0][5][3];
        }
        let s = t.elapsed().as_secs_f64();
        println!("derive only: {:.0} ns/key ({:.2} M/s) {rep}", s*1e9/n as f64, n as f64/s/1e6);
    }
    let ns: usize = std::env::args().nth(1).map_or(100_000, |a| a.parse().unwrap());
    let sightings: Vec<Sighting> = (0..ns).map(|_| Sighting{ id: rng.gen(), first_seen: 0, last_seen: 1, seconds:[300,0,0]}).collect();
    let idx = SightingIndex::new(&sightings);
    let pk: Vec<PublishedTek> = keys.iter().map(|k| PublishedTek{key_data:k.0, rolling_start:k.1, rolling_period:144}).collect();
    for rep in 0..3 {
        let t = Instant::now();
        let m = match_gaen(&idx, &pk, UnixTime(20_000*86400));
        let s = t.elapsed().as_secs_f64();
        println!("match 1 thread: {:.0} ns/key ({:.2} M/s) {} {rep}", s*1e9/n as f64, n as f64/s/1e6, m.len());
    }
    println!("{acc}");
}
