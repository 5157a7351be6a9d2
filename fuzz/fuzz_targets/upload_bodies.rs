//! Every upload body parser of the server (`backend::api::upload::check_body`): the GAEN
//! v2, v1 and next-day bodies and the three DP-3T designs' (PROTOCOL.md §7). Input: one
//! byte choosing the route, one byte choosing the onset (0–20 days before the fixture
//! time), then the body. Beyond "no panic, bounded memory": a refusal is a 4xx (never a
//! 5xx), parsing is deterministic, and whatever a body would store obeys the range rules
//! the pipeline relies on.

#![no_main]

use std::collections::HashSet;

use backend::api::upload::{check_body, BodyRoute};
use dp3t_core::time::{Day, Enin};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [route, onset, body @ ..] = data else {
        return;
    };
    let route = BodyRoute::ALL[usize::from(*route) % BodyRoute::ALL.len()];
    let now = dp3t_fuzz::NOW;
    let onset = Day(now.day().0 - u32::from(*onset % 21));
    let delayed = Some(now.day().0 * 144);
    let run = || check_body(route, body, now, onset, delayed, 7_200, 14 * 86_400);
    let first = run();
    assert_eq!(
        format!("{first:?}"),
        format!("{:?}", run()),
        "deterministic"
    );
    match first {
        Err(e) => assert!(
            e.status.is_client_error(),
            "{route:?}: {} {}",
            e.status,
            e.code
        ),
        Ok(s) => {
            let mut seen = HashSet::new();
            for k in &s.keys {
                assert!((1..=144).contains(&k.rolling_period), "{k:?}");
                assert!(
                    k.rolling_start_number >= onset.0 * 144,
                    "{k:?} before the onset"
                );
                assert!(
                    Enin(k.rolling_start_number).day() <= now.day().next(),
                    "{k:?}"
                );
                assert!((-14..=14).contains(&k.days_since_onset), "{k:?}");
                assert!(
                    k.received_at > now.0 && k.publish_at >= k.received_at,
                    "{k:?}"
                );
                assert!(
                    seen.insert((k.key_data, k.rolling_start_number)),
                    "duplicate {k:?}"
                );
            }
            if let Some((_, bytes, count)) = &s.records {
                // No record (a day out of range, dropped): the pipeline stores nothing.
                if *count == 0 {
                    assert!(bytes.is_empty(), "bytes without a record count");
                } else {
                    assert_eq!(bytes.len() as u64 % count, 0, "records of unequal size");
                }
            }
            assert!(s.keys.is_empty() || s.records.is_none());
        }
    }
});
