//! Brute-force limits on `POST /v1/onset`, kept in memory only.
//!
//! ## The arithmetic
//!
//! A code is one of 10^12. An attacker who makes one guess while `L` codes are live finds
//! one with probability `L / 10^12`. Over a day, by the union bound,
//!
//! ```text
//! P(the attacker finds a live code) <= sum over guesses of L_at_that_guess / 10^12
//!                                    = live codes x guesses per day / 10^12   (L constant)
//! ```
//!
//! So the service keeps a **global daily risk budget** instead of a fixed number of
//! guesses: every exchange attempt first reserves `L / 10^12` (with `L` the live codes at
//! that moment) against `max_daily_guess_risk` (default 10^-6) for the current UTC day,
//! and is refused with 429 once the reservation would reach it; a successful exchange
//! gives its reservation back, a failed one keeps it. With 1 000 live codes that allows
//! just under 1 000 failed exchanges a day across all clients; with 100 live codes, just
//! under 10 000; the chance per day stays below 10^-6 however many codes are live. The
//! reservation is taken before the database is asked, so concurrent guesses cannot
//! overspend.
//!
//! The budget being global means that an attacker who spends it locks out legitimate
//! exchanges until the next UTC day (the app shows an error and the patient retries, or
//! staff issue the upload another day). That is the price of a bounded guessing chance;
//! the **per-client limit** (default 10 failed exchanges per address per hour) keeps one
//! careless or hostile client from spending the budget alone.
//!
//! ## Privacy
//!
//! Client addresses are never stored or logged: the table holds a keyed hash (a random
//! key drawn at start) of the address — for IPv6 of its /64 prefix, which one subscriber
//! usually holds whole — and forgets it when the hour ends. The table is capped at
//! [`MAX_CLIENTS`] entries; when full of live entries, new clients are refused (fail
//! closed) rather than left unlimited.
//!
//! With several authority processes, each has its own budget: divide
//! `max_daily_guess_risk` by the number of processes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::codes::CODE_SPACE;

/// Most client addresses tracked at once.
pub const MAX_CLIENTS: usize = 100_000;

const HOUR: u64 = 3600;
const DAY: u64 = 86_400;

/// Why an attempt was refused before it was tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// This client address has used its failed exchanges for the hour.
    Client,
    /// The global daily risk budget is spent (or the client table is full).
    Global,
}

/// An attempt that was allowed: its cost is held until [`Limiter::succeeded`] gives it
/// back; dropping it keeps the cost (a failed exchange).
#[derive(Debug)]
#[must_use = "a successful exchange must hand its reservation back"]
pub struct Reservation {
    client: [u8; 16],
    hour: u64,
    day: u64,
    cost: u128,
}

#[derive(Debug, Default)]
struct State {
    clients: HashMap<[u8; 16], (u64, u32)>,
    day: u64,
    spent: u128,
}

/// The limiter. One per process.
pub struct Limiter {
    client_failures_per_hour: u32,
    /// `max_daily_guess_risk x 10^12`, in units of "live codes per guess".
    budget: u128,
    key: [u8; 32],
    state: Mutex<State>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("client_failures_per_hour", &self.client_failures_per_hour)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl Limiter {
    /// A limiter allowing `client_failures_per_hour` failures per address and a daily
    /// chance of `max_daily_guess_risk` that guessing finds a live code.
    pub fn new(client_failures_per_hour: u32, max_daily_guess_risk: f64) -> Limiter {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        // In range by Config::validate (0 < risk <= 1e-3), so the product fits.
        let budget = (max_daily_guess_risk * CODE_SPACE as f64).round() as u128;
        Limiter {
            client_failures_per_hour,
            budget,
            key,
            state: Mutex::new(State::default()),
        }
    }

    /// The daily budget in "live codes x guesses" (10^6 for a risk of 10^-6).
    pub fn daily_budget(&self) -> u128 {
        self.budget
    }

    fn client_key(&self, addr: IpAddr) -> [u8; 16] {
        let bytes: Vec<u8> = match addr {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => v4.octets().to_vec(),
                None => a.octets()[..8].to_vec(),
            },
        };
        let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(&self.key) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        mac.update(&bytes);
        let out = mac.finalize().into_bytes();
        let mut k = [0u8; 16];
        k.copy_from_slice(&out[..16]);
        k
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ask to make one exchange attempt from `client` at `now` while `live_codes` codes
    /// are live. The attempt counts as a failure unless [`Limiter::succeeded`] is called.
    pub fn begin(&self, client: IpAddr, live_codes: u64, now: u64) -> Result<Reservation, Refusal> {
        let key = self.client_key(client);
        let (hour, day) = (now / HOUR, now / DAY);
        let cost = u128::from(live_codes);
        let mut s = self.lock();
        if s.day != day {
            s.day = day;
            s.spent = 0;
        }
        if s.spent + cost >= self.budget {
            return Err(Refusal::Global);
        }
        if !s.clients.contains_key(&key) && s.clients.len() >= MAX_CLIENTS {
            s.clients.retain(|_, (h, _)| *h == hour);
            if s.clients.len() >= MAX_CLIENTS {
                return Err(Refusal::Global);
            }
        }
        let entry = s.clients.entry(key).or_insert((hour, 0));
        if entry.0 != hour {
            *entry = (hour, 0);
        }
        if entry.1 >= self.client_failures_per_hour {
            return Err(Refusal::Client);
        }
        entry.1 += 1;
        s.spent += cost;
        Ok(Reservation {
            client: key,
            hour,
            day,
            cost,
        })
    }

    /// The attempt found a live code: give its reservation back.
    pub fn succeeded(&self, r: Reservation) {
        let mut s = self.lock();
        if s.day == r.day {
            s.spent = s.spent.saturating_sub(r.cost);
        }
        if let Some(e) = s.clients.get_mut(&r.client) {
            if e.0 == r.hour {
                e.1 = e.1.saturating_sub(1);
            }
        }
    }

    /// The budget spent so far today, as a fraction of the day's budget in ‰.
    pub fn spent_per_mille(&self, now: u64) -> u64 {
        let s = self.lock();
        if s.day != now / DAY || self.budget == 0 {
            return 0;
        }
        u64::try_from(s.spent * 1000 / self.budget).unwrap_or(u64::MAX)
    }

    /// Forget clients whose hour has ended (called periodically).
    pub fn prune(&self, now: u64) {
        let hour = now / HOUR;
        self.lock().clients.retain(|_, (h, _)| *h == hour);
    }

    /// Number of client entries held (for tests and metrics).
    pub fn tracked_clients(&self) -> usize {
        self.lock().clients.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000 - 1_700_000_000 % DAY + 100;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_client_gets_its_failures_per_hour_then_429_until_the_hour_ends() {
        let l = Limiter::new(3, 1e-6);
        for _ in 0..3 {
            drop(l.begin(ip("10.0.0.1"), 10, T0).unwrap());
        }
        assert_eq!(
            l.begin(ip("10.0.0.1"), 10, T0).unwrap_err(),
            Refusal::Client
        );
        // Another client is not affected; the same one is again an hour later.
        drop(l.begin(ip("10.0.0.2"), 10, T0).unwrap());
        drop(l.begin(ip("10.0.0.1"), 10, T0 + HOUR).unwrap());
    }

    #[test]
    fn successes_do_not_count_against_the_client() {
        let l = Limiter::new(2, 1e-6);
        for _ in 0..10 {
            let r = l.begin(ip("10.0.0.1"), 10, T0).unwrap();
            l.succeeded(r);
        }
        drop(l.begin(ip("10.0.0.1"), 10, T0).unwrap());
        drop(l.begin(ip("10.0.0.1"), 10, T0).unwrap());
        assert!(l.begin(ip("10.0.0.1"), 10, T0).is_err());
    }

    #[test]
    fn an_ipv6_64_is_one_client_and_mapped_ipv4_is_its_ipv4() {
        let l = Limiter::new(1, 1e-6);
        drop(l.begin(ip("2001:db8:1:2::1"), 1, T0).unwrap());
        assert!(l.begin(ip("2001:db8:1:2:ffff::9"), 1, T0).is_err());
        drop(l.begin(ip("2001:db8:1:3::1"), 1, T0).unwrap());
        drop(l.begin(ip("192.0.2.7"), 1, T0).unwrap());
        assert!(l.begin(ip("::ffff:192.0.2.7"), 1, T0).is_err());
    }

    /// The documented arithmetic: with L live codes, the global budget allows fewer than
    /// risk x 10^12 / L failed guesses a day, so the daily chance stays below the risk.
    #[test]
    fn the_global_budget_bounds_the_daily_chance() {
        for (live, risk) in [(1_000u64, 1e-6), (100, 1e-6), (13, 1e-6), (2_500, 1e-5)] {
            let l = Limiter::new(u32::MAX, risk);
            let mut allowed = 0u64;
            let mut chance = 0f64;
            // Every guess from a different address: per-client limits do not help.
            while let Ok(r) = l.begin(IpAddr::from((allowed as u32).to_be_bytes()), live, T0) {
                drop(r);
                allowed += 1;
                chance += live as f64 / CODE_SPACE as f64;
                assert!(allowed < 10_000_000, "no limit");
            }
            assert!(chance < risk, "live {live}: chance {chance} >= {risk}");
            let expected = ((risk * 1e12).round() as u64).div_ceil(live) - 1;
            assert_eq!(allowed, expected, "live {live}");
            assert_eq!(
                l.begin(ip("10.9.9.9"), live, T0).unwrap_err(),
                Refusal::Global
            );
            // The next UTC day has a fresh budget.
            drop(l.begin(ip("10.9.9.9"), live, T0 + DAY).unwrap());
        }
    }

    #[test]
    fn successful_exchanges_return_their_cost_to_the_budget() {
        let l = Limiter::new(u32::MAX, 1e-6);
        // 10^6 budget, 400 000 live: two failures fit, a third would not.
        for _ in 0..100 {
            let r = l.begin(ip("10.0.0.1"), 400_000, T0).unwrap();
            l.succeeded(r);
        }
        drop(l.begin(ip("10.0.0.1"), 400_000, T0).unwrap());
        drop(l.begin(ip("10.0.0.1"), 400_000, T0).unwrap());
        assert_eq!(
            l.begin(ip("10.0.0.1"), 400_000, T0).unwrap_err(),
            Refusal::Global
        );
        assert_eq!(l.spent_per_mille(T0), 800);
    }

    #[test]
    fn with_no_live_code_guessing_costs_nothing_but_clients_are_still_limited() {
        let l = Limiter::new(5, 1e-6);
        for i in 0..10_000u32 {
            drop(l.begin(IpAddr::from(i.to_be_bytes()), 0, T0).unwrap());
        }
        assert_eq!(l.tracked_clients(), 10_000);
        l.prune(T0 + HOUR);
        assert_eq!(l.tracked_clients(), 0);
    }
}
