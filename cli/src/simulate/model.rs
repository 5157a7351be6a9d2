//! The population model of `dp3t simulate`: people, households, workplaces and random
//! encounters; contacts with a distance over time; a radio model that turns distance into
//! the attenuation a phone's scan would report; and an SIR-style epidemic with imported
//! infections, tests and uploads.
//!
//! Sans-IO and deterministic: everything is a function of [`ModelConfig`] (its seed
//! included). Random draws are keyed by what they are about (a pair of people and a day,
//! a contact and a scan time, ...), so a contact looks the same whichever side generates
//! it and the result does not depend on iteration order.
//!
//! Only the people whose contacts matter are simulated in detail each day: the engine
//! phones (their contacts become real sightings) and the infectious (their contacts
//! carry the epidemic and define the ground truth). Contacts between two people who are
//! neither are never generated: nothing downstream would read them.

use std::collections::HashMap;

/// Seconds of a day.
pub const DAY: u64 = 86_400;

/// A small, fast, deterministic generator (SplitMix64). Not cryptographic: the model only.
#[derive(Debug, Clone)]
pub struct Rng(u64);

/// Mix a list of words into one (SplitMix64 finaliser after each word).
pub fn mix(parts: &[u64]) -> u64 {
    let mut h: u64 = 0x243F_6A88_85A3_08D3;
    for &p in parts {
        h ^= p;
        h = h.wrapping_add(0x9E37_79B9_7F4A_7C15);
        h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        h ^= h >> 31;
    }
    h
}

impl Rng {
    /// A generator keyed by `parts`.
    pub fn keyed(parts: &[u64]) -> Self {
        Rng(mix(parts))
    }
    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, 1)`.
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n.max(1))) >> 64) as u64
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.f64();
        let u2 = self.f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
    /// Exponential with the given mean.
    pub fn exp(&mut self, mean: f64) -> f64 {
        -(1.0 - self.f64()).ln() * mean
    }
    /// Poisson with mean `lambda` (Knuth below 30, a rounded normal above).
    pub fn poisson(&mut self, lambda: f64) -> u64 {
        if lambda <= 0.0 {
            return 0;
        }
        if lambda > 30.0 {
            return (lambda + lambda.sqrt() * self.normal()).round().max(0.0) as u64;
        }
        let l = (-lambda).exp();
        let mut k = 0;
        let mut p = 1.0;
        loop {
            p *= self.f64();
            if p <= l {
                return k;
            }
            k += 1;
        }
    }
}

/// How distance becomes the attenuation a phone's scan reports, and when phones scan.
#[derive(Debug, Clone, PartialEq)]
pub struct Radio {
    /// Attenuation at 1 m, dB (TX power − RSSI of a reference pair).
    pub at_1m_db: f64,
    /// Path-loss exponent (2 in free space; more indoors with bodies in between).
    pub exponent: f64,
    /// Standard deviation of the per-scan noise (fading), dB.
    pub noise_sd_db: f64,
    /// Noise is clamped to ± this many standard deviations.
    pub noise_clamp_sd: f64,
    /// Each phone's TX and RX calibration error is uniform in ± this, dB.
    pub calibration_db: f64,
    /// Seconds between two scans of a phone (GAEN: about 5 minutes).
    pub scan_interval: u32,
    /// Every this-many-th scan slot of a phone is skipped (the OS's duty-cycle gaps).
    pub skip_every: u32,
    /// Below this attenuation a scan always hears a present beacon; above, the chance of
    /// missing it grows by `miss_per_db` per dB (at most 90%).
    pub reliable_below_db: f64,
    /// See `reliable_below_db`.
    pub miss_per_db: f64,
}

impl Default for Radio {
    fn default() -> Self {
        Radio {
            at_1m_db: 44.0,
            exponent: 2.5,
            noise_sd_db: 3.0,
            noise_clamp_sd: 2.0,
            calibration_db: 2.0,
            scan_interval: 300,
            skip_every: 12,
            reliable_below_db: 60.0,
            miss_per_db: 0.03,
        }
    }
}

/// A contact planted between two extra engine phones that meet nobody else: the first
/// tests positive the next day and uploads.
#[derive(Debug, Clone, PartialEq)]
pub struct Planted {
    /// Minutes.
    pub minutes: u16,
    /// Constant distance, metres.
    pub distance_m: f64,
    /// Day of the contact (from 0).
    pub day: u32,
}

/// Everything the model depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Seed of every draw.
    pub seed: u64,
    /// People.
    pub population: u32,
    /// Days simulated.
    pub days: u32,
    /// Phones that run real engines (taken from the app users of the first
    /// neighbourhoods, so that they meet each other), planted pairs not included.
    pub engines: u32,
    /// Share of people who run the app.
    pub app_share: f64,
    /// People per neighbourhood (households and workplaces stay inside one).
    pub neighbourhood: u32,
    /// Share of people with a workplace or school.
    pub work_share: f64,
    /// Largest workplace (sizes uniform in 3..=this).
    pub work_size_max: u32,
    /// Colleagues met per weekday (expected).
    pub work_contacts_per_day: f64,
    /// Random encounters per person and day (expected): shops, transport.
    pub random_contacts_per_day: f64,
    /// Share of random encounters inside the own neighbourhood.
    pub random_local_share: f64,
    /// Infections imported from outside per day (expected).
    pub imports_per_day: f64,
    /// Infection hazard per minute within 2 m of an infectious person.
    pub beta_close_per_min: f64,
    /// Infection hazard per minute farther than 2 m.
    pub beta_far_per_min: f64,
    /// Share of infected people who get a positive test.
    pub test_share: f64,
    /// Share of app users with a positive test who upload.
    pub upload_share: f64,
    /// Radio and scanning.
    pub radio: Radio,
    /// Planted contacts.
    pub planted: Vec<Planted>,
    /// Unix time of day 0's midnight.
    pub start: u64,
}

/// Where a contact happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// At home.
    Household,
    /// At work or school.
    Work,
    /// Random encounter.
    Random,
    /// A planted contact (constant distance).
    Planted,
}

/// One contact: who, when, how long, how far (distance varies per 5-minute segment).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Contact {
    /// One person.
    pub a: u32,
    /// The other.
    pub b: u32,
    /// Start, unix seconds.
    pub start: u64,
    /// Minutes.
    pub minutes: u16,
    /// Median distance, metres.
    pub d0: f32,
    /// Key of the contact's own draws.
    pub key: u64,
    /// Where.
    pub kind: Kind,
}

/// A person's fixed traits.
#[derive(Debug, Clone, Copy)]
pub struct Person {
    /// First member of the household.
    pub household: u32,
    /// Household size.
    pub household_len: u8,
    /// Workplace index, `u32::MAX` for none.
    pub work: u32,
    /// Runs the app.
    pub app: bool,
    /// TX calibration error, dB.
    pub tx_db: f32,
    /// RX calibration error, dB.
    pub rx_db: f32,
    /// Scan phase, seconds in `0..scan_interval`.
    pub phase: u16,
}

/// The course of one infection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Course {
    /// Day of infection.
    pub infected_day: u32,
    /// Unix time of the positive test result, if tested.
    pub positive_at: Option<u64>,
    /// Unix time of the upload, if the person uploads.
    pub upload_at: Option<u64>,
    /// First day whose keys are uploaded (symptom onset − 2 days).
    pub keys_from_day: u32,
}

/// Infectious from this many days after infection ...
pub const INFECTIOUS_FROM: u32 = 2;
/// ... to this many (inclusive), unless isolated after a positive test.
pub const INFECTIOUS_TO: u32 = 9;
/// Symptom onset, days after infection.
pub const ONSET: u32 = 5;

/// What the model produced.
#[derive(Debug, Default)]
pub struct ModelOutput {
    /// People (planted pairs at the end).
    pub people: Vec<Person>,
    /// Person ids of the engine phones (planted pairs first).
    pub engines: Vec<u32>,
    /// Engine index of a person, `u32::MAX` when not an engine.
    pub engine_of: Vec<u32>,
    /// Infections, by person.
    pub courses: HashMap<u32, Course>,
    /// Per day: the contacts between an engine phone and another app user.
    pub engine_contacts: Vec<Vec<Contact>>,
    /// Contacts between a person who uploads (while infectious, before the upload) and
    /// an app user: the population's ground truth.
    pub uploader_contacts: Vec<Contact>,
    /// New infections per day.
    pub infections_per_day: Vec<u64>,
    /// Positive tests per day.
    pub positives_per_day: Vec<u64>,
    /// Uploads per day.
    pub uploads_per_day: Vec<u64>,
    /// Contacts generated per day (all kinds, involving an engine or an infectious person).
    pub contacts_per_day: Vec<u64>,
    /// Pairs `(sender, receiver)` of the planted contacts, as engine indices.
    pub planted_pairs: Vec<(u32, u32, u16)>,
}

const NONE: u32 = u32::MAX;

impl ModelConfig {
    /// Distance of contact `c` in minute `m`, metres.
    pub fn distance(&self, c: &Contact, m: u32) -> f64 {
        if c.kind == Kind::Planted {
            return f64::from(c.d0);
        }
        let mut r = Rng::keyed(&[c.key, 1, u64::from(m / 5)]);
        f64::from(c.d0) * (0.3 * r.normal()).exp()
    }

    /// Minutes of `c` within 2 m.
    pub fn close_minutes(&self, c: &Contact) -> u32 {
        (0..u32::from(c.minutes))
            .filter(|&m| self.distance(c, m) <= 2.0)
            .count() as u32
    }

    /// The scans in which `receiver` hears `sender` during `c`: `(unix time, attenuation
    /// dB)`. Each stands for one scan interval of contact (GAEN's seconds since the
    /// previous scan).
    pub fn scans(
        &self,
        c: &Contact,
        people: &[Person],
        sender: u32,
        receiver: u32,
    ) -> Vec<(u64, i32)> {
        let r = &self.radio;
        let interval = u64::from(r.scan_interval.max(1));
        let rx = &people[receiver as usize];
        let tx = &people[sender as usize];
        let end = c.start + u64::from(c.minutes) * 60;
        // First scan of the receiver at or after the start.
        let phase = u64::from(rx.phase);
        let mut t = if c.start <= phase {
            phase
        } else {
            phase + (c.start - phase).div_ceil(interval) * interval
        };
        let mut out = Vec::new();
        while t < end {
            let slot = t / interval;
            let skipped =
                r.skip_every > 0 && (slot + u64::from(receiver)) % u64::from(r.skip_every) == 0;
            if !skipped {
                let m = ((t - c.start) / 60) as u32;
                let d = self.distance(c, m).max(0.1);
                let mut g = Rng::keyed(&[c.key, 2, t, u64::from(receiver)]);
                let clamp = r.noise_sd_db * r.noise_clamp_sd;
                let noise = (r.noise_sd_db * g.normal()).clamp(-clamp, clamp);
                let att = r.at_1m_db
                    + 10.0 * r.exponent * d.log10()
                    + f64::from(tx.tx_db)
                    + f64::from(rx.rx_db)
                    + noise;
                let miss = ((att - r.reliable_below_db) * r.miss_per_db).clamp(0.0, 0.9);
                if miss <= 0.0 || g.f64() >= miss {
                    out.push((t, att.round() as i32));
                }
            }
            t += interval;
        }
        out
    }

    /// Whether `p` is infectious on `day` (and not isolated at the day's start).
    fn infectious(&self, courses: &HashMap<u32, Course>, p: u32, day: u32) -> bool {
        courses.get(&p).is_some_and(|c| {
            day >= c.infected_day + INFECTIOUS_FROM && day <= c.infected_day + INFECTIOUS_TO
        })
    }

    fn isolated(&self, courses: &HashMap<u32, Course>, p: u32, day: u32) -> bool {
        let day_start = self.start + u64::from(day) * DAY;
        courses
            .get(&p)
            .and_then(|c| c.positive_at)
            .is_some_and(|t| t <= day_start)
    }

    fn course(&self, p: u32, infected_day: u32, app: bool) -> Course {
        let mut r = Rng::keyed(&[self.seed, 11, u64::from(p)]);
        let tested = r.f64() < self.test_share;
        let delay = 1 + r.below(3) as u32;
        let positive_at = tested.then(|| {
            self.start
                + u64::from(infected_day + ONSET + delay) * DAY
                + 8 * 3600
                + r.below(10 * 3600)
        });
        let uploads = app && r.f64() < self.upload_share;
        // Uploads in the last 12 hours would be published after the end: left out, so
        // that every upload has the time to reach the phones.
        let end = self.start + u64::from(self.days) * DAY - DAY / 2;
        let upload_at = positive_at
            .filter(|_| uploads)
            .map(|t| t + 600 + r.below(7200))
            .filter(|&t| t < end);
        Course {
            infected_day,
            positive_at,
            upload_at,
            keys_from_day: infected_day + ONSET - 2,
        }
    }

    /// Run the model.
    pub fn run(&self) -> ModelOutput {
        let mut out = ModelOutput::default();
        let (people, work_members) = self.build_people();
        let n = self.population;
        out.people = people;
        let total = out.people.len() as u32;
        // Engines: planted pairs first, then app users in id order (neighbourhood 0 on).
        for p in n..total {
            out.engines.push(p);
        }
        for p in 0..n {
            if out.engines.len() as u32 >= self.engines + (total - n) {
                break;
            }
            if out.people[p as usize].app {
                out.engines.push(p);
            }
        }
        out.engine_of = vec![NONE; total as usize];
        for (i, &p) in out.engines.iter().enumerate() {
            out.engine_of[p as usize] = i as u32;
        }
        let days = self.days;
        out.engine_contacts = vec![Vec::new(); days as usize];
        out.infections_per_day = vec![0; days as usize];
        out.positives_per_day = vec![0; days as usize];
        out.uploads_per_day = vec![0; days as usize];
        out.contacts_per_day = vec![0; days as usize];

        // Planted contacts: the first of each pair tests positive the next day.
        let mut planted_contacts: Vec<Vec<Contact>> = vec![Vec::new(); days as usize];
        for (i, pl) in self.planted.iter().enumerate() {
            let (a, b) = (n + 2 * i as u32, n + 2 * i as u32 + 1);
            let day = pl.day.min(days.saturating_sub(2));
            let start = self.start + u64::from(day) * DAY + 10 * 3600;
            planted_contacts[day as usize].push(Contact {
                a,
                b,
                start,
                minutes: pl.minutes,
                d0: pl.distance_m as f32,
                key: mix(&[self.seed, 99, i as u64]),
                kind: Kind::Planted,
            });
            let positive = self.start + u64::from(day + 1) * DAY + 9 * 3600;
            out.courses.insert(
                a,
                Course {
                    infected_day: day.saturating_sub(INFECTIOUS_FROM),
                    positive_at: Some(positive),
                    upload_at: Some(positive + 600),
                    keys_from_day: day.saturating_sub(1),
                },
            );
            out.planted_pairs.push((
                out.engine_of[a as usize],
                out.engine_of[b as usize],
                pl.minutes,
            ));
        }

        let mut infectious_now: Vec<u32> = Vec::new();
        let mut active = vec![false; total as usize];
        for &e in &out.engines {
            active[e as usize] = true;
        }
        for day in 0..days {
            // Imports.
            let mut r = Rng::keyed(&[self.seed, 3, u64::from(day)]);
            let imports = r.poisson(self.imports_per_day);
            for _ in 0..imports {
                let p = r.below(u64::from(n)) as u32;
                if let std::collections::hash_map::Entry::Vacant(v) = out.courses.entry(p) {
                    v.insert(self.course(p, day, out.people[p as usize].app));
                    out.infections_per_day[day as usize] += 1;
                }
            }
            // Who is infectious today.
            for &p in &infectious_now {
                if out.engine_of.get(p as usize).is_none_or(|&e| e == NONE) {
                    active[p as usize] = false;
                }
            }
            infectious_now = out
                .courses
                .iter()
                .filter(|(p, _)| **p < n && self.infectious(&out.courses, **p, day))
                .map(|(p, _)| *p)
                .collect();
            infectious_now.sort_unstable();
            for &p in &infectious_now {
                active[p as usize] = true;
            }
            // Contacts of the active.
            let mut actives: Vec<u32> = out.engines.iter().copied().filter(|&p| p < n).collect();
            actives.extend(infectious_now.iter().copied());
            actives.sort_unstable();
            actives.dedup();
            let mut contacts = Vec::new();
            for &p in &actives {
                self.contacts_of(p, day, &out, &work_members, &active, &mut contacts);
            }
            contacts.extend(planted_contacts[day as usize].iter().copied());
            out.contacts_per_day[day as usize] = contacts.len() as u64;
            // Transmission (newly infected are not infectious before day + 2, so the
            // order within the day does not matter).
            let mut new: Vec<u32> = Vec::new();
            for c in &contacts {
                if c.kind == Kind::Planted {
                    continue;
                }
                for (src, dst) in [(c.a, c.b), (c.b, c.a)] {
                    if self.infectious(&out.courses, src, day) && !out.courses.contains_key(&dst) {
                        let close = f64::from(self.close_minutes(c));
                        let far = f64::from(c.minutes) - close;
                        let hazard = self.beta_close_per_min * close + self.beta_far_per_min * far;
                        let mut g = Rng::keyed(&[c.key, 7, u64::from(src)]);
                        if g.f64() < 1.0 - (-hazard).exp() {
                            new.push(dst);
                        }
                    }
                }
            }
            new.sort_unstable();
            new.dedup();
            for p in new {
                if let std::collections::hash_map::Entry::Vacant(v) = out.courses.entry(p) {
                    v.insert(self.course(p, day, out.people[p as usize].app));
                    out.infections_per_day[day as usize] += 1;
                }
            }
            // Keep what the phones and the ground truth need.
            for c in contacts {
                let (ea, eb) = (out.engine_of[c.a as usize], out.engine_of[c.b as usize]);
                let (app_a, app_b) = (out.people[c.a as usize].app, out.people[c.b as usize].app);
                if (ea != NONE && app_b) || (eb != NONE && app_a) {
                    out.engine_contacts[day as usize].push(c);
                }
                let relevant = |u: u32, other_app: bool| {
                    other_app
                        && out.courses.get(&u).is_some_and(|k| {
                            k.upload_at.is_some_and(|t| c.start < t)
                                && day >= k.infected_day + INFECTIOUS_FROM
                        })
                };
                if relevant(c.a, app_b) || relevant(c.b, app_a) {
                    out.uploader_contacts.push(c);
                }
            }
        }
        for k in out.courses.values() {
            let day_of = |t: u64| ((t.saturating_sub(self.start)) / DAY) as usize;
            if let Some(t) = k.positive_at {
                if let Some(x) = out.positives_per_day.get_mut(day_of(t)) {
                    *x += 1;
                }
            }
            if let Some(t) = k.upload_at {
                if let Some(x) = out.uploads_per_day.get_mut(day_of(t)) {
                    *x += 1;
                }
            }
        }
        out
    }

    /// People, then the members of each workplace (contiguous per workplace: offsets in
    /// the returned `(start, len)` list).
    #[allow(clippy::type_complexity)]
    fn build_people(&self) -> (Vec<Person>, (Vec<u32>, Vec<(u32, u32)>)) {
        let n = self.population;
        let mut r = Rng::keyed(&[self.seed, 1]);
        let mut people = Vec::with_capacity(n as usize + 2 * self.planted.len());
        let hood = self.neighbourhood.max(10);
        let cal = self.radio.calibration_db;
        let person = |r: &mut Rng, household: u32, len: u8, app: bool| Person {
            household,
            household_len: len,
            work: NONE,
            app,
            tx_db: ((r.f64() * 2.0 - 1.0) * cal) as f32,
            rx_db: ((r.f64() * 2.0 - 1.0) * cal) as f32,
            phase: r.below(u64::from(self.radio.scan_interval.max(1))) as u16,
        };
        while (people.len() as u32) < n {
            let id = people.len() as u32;
            // Household sizes 1..=5 (mean ≈ 2.2), never across a neighbourhood border.
            let size = match r.f64() {
                x if x < 0.35 => 1,
                x if x < 0.68 => 2,
                x if x < 0.82 => 3,
                x if x < 0.95 => 4,
                _ => 5,
            };
            let room = (hood - id % hood).min(n - id);
            let size = size.min(room);
            for _ in 0..size {
                let app = r.f64() < self.app_share;
                people.push(person(&mut r, id, size as u8, app));
            }
        }
        // Workplaces inside each neighbourhood.
        let mut members = Vec::new();
        let mut groups = Vec::new();
        let mut h0 = 0;
        while h0 < n {
            let h1 = (h0 + hood).min(n);
            let mut workers: Vec<u32> = (h0..h1).filter(|_| r.f64() < self.work_share).collect();
            // Shuffle (Fisher-Yates) so that households spread over workplaces.
            for i in (1..workers.len()).rev() {
                let j = r.below(i as u64 + 1) as usize;
                workers.swap(i, j);
            }
            let mut i = 0;
            while i < workers.len() {
                let size = (3 + r.below(u64::from(self.work_size_max.max(3) - 2)) as usize)
                    .min(workers.len() - i);
                let g = groups.len() as u32;
                groups.push((members.len() as u32, size as u32));
                for &w in &workers[i..i + size] {
                    members.push(w);
                    people[w as usize].work = g;
                }
                i += size;
            }
            h0 = h1;
        }
        // Planted pairs: app users alone in their household, no workplace.
        for i in 0..self.planted.len() as u32 {
            for k in 0..2 {
                let id = n + 2 * i + k;
                let mut p = person(&mut r, id, 1, true);
                p.tx_db = p.tx_db.clamp(-2.0, 2.0);
                people.push(p);
            }
        }
        (people, (members, groups))
    }

    fn contacts_of(
        &self,
        p: u32,
        day: u32,
        out: &ModelOutput,
        work: &(Vec<u32>, Vec<(u32, u32)>),
        active: &[bool],
        contacts: &mut Vec<Contact>,
    ) {
        let people = &out.people;
        let me = people[p as usize];
        let day_start = self.start + u64::from(day) * DAY;
        let iso = |q: u32| self.isolated(&out.courses, q, day);
        let p_iso = iso(p);
        // Household: every member, every day, in the evening.
        for q in me.household..me.household + u32::from(me.household_len) {
            if q == p || (active[q as usize] && q < p) {
                continue;
            }
            let (lo, hi) = (p.min(q), p.max(q));
            let key = mix(&[self.seed, 20, u64::from(day), u64::from(lo), u64::from(hi)]);
            let mut g = Rng::keyed(&[key]);
            contacts.push(Contact {
                a: lo,
                b: hi,
                start: day_start + 18 * 3600 + g.below(3600),
                minutes: (120 + g.below(181)) as u16,
                d0: (1.8 * (0.4 * g.normal()).exp()) as f32,
                key,
                kind: Kind::Household,
            });
        }
        if p_iso {
            return;
        }
        // Work or school, on weekdays.
        if me.work != NONE && day % 7 < 5 {
            let (start, len) = work.1[me.work as usize];
            let q_meet =
                (self.work_contacts_per_day / f64::from(len.saturating_sub(1).max(1))).min(1.0);
            for &q in &work.0[start as usize..(start + len) as usize] {
                if q == p || (active[q as usize] && q < p) || iso(q) {
                    continue;
                }
                let (lo, hi) = (p.min(q), p.max(q));
                let key = mix(&[self.seed, 21, u64::from(day), u64::from(lo), u64::from(hi)]);
                let mut g = Rng::keyed(&[key]);
                if g.f64() >= q_meet {
                    continue;
                }
                contacts.push(Contact {
                    a: lo,
                    b: hi,
                    start: day_start + 9 * 3600 + g.below(6 * 3600),
                    minutes: (5.0 + g.exp(40.0)).min(240.0) as u16,
                    d0: (2.2 * (0.4 * g.normal()).exp()) as f32,
                    key,
                    kind: Kind::Work,
                });
            }
        }
        // Random encounters: half initiated by p (any partner), half received from people
        // who are not active (active partners initiate their own).
        let n = self.population;
        let hood = self.neighbourhood.max(10);
        let mut g = Rng::keyed(&[self.seed, 22, u64::from(day), u64::from(p)]);
        let half = self.random_contacts_per_day / 2.0;
        let initiated = g.poisson(half);
        let received = g.poisson(half);
        for i in 0..initiated + received {
            let must_be_inactive = i >= initiated;
            let mut q = NONE;
            for _ in 0..8 {
                let cand = if g.f64() < self.random_local_share {
                    let h0 = p - p % hood;
                    h0 + g.below(u64::from((h0 + hood).min(n) - h0)) as u32
                } else {
                    g.below(u64::from(n)) as u32
                };
                if cand != p && !(must_be_inactive && active[cand as usize]) && !iso(cand) {
                    q = cand;
                    break;
                }
            }
            if q == NONE {
                continue;
            }
            let key = mix(&[self.seed, 23, u64::from(day), u64::from(p), i]);
            let mut c = Rng::keyed(&[key]);
            contacts.push(Contact {
                a: p,
                b: q,
                start: day_start + 7 * 3600 + c.below(14 * 3600),
                minutes: (1.0 + c.exp(8.0)).min(90.0) as u16,
                d0: (2.0 * (0.5 * c.normal()).exp()) as f32,
                key,
                kind: Kind::Random,
            });
        }
    }
}
