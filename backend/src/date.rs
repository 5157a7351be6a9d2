//! `YYYY-MM-DD` calendar dates (the `onset` claim of upload tokens) to and from UTC day
//! numbers, without a date library: the proleptic Gregorian conversion of Howard
//! Hinnant's `days_from_civil` / `civil_from_days`.

use dp3t_core::time::Day;

/// Parse a strict `YYYY-MM-DD` date (1970-01-01 or later) into its UTC day number.
/// Anything else (other separators, a time part, 2021-02-30, …) is `None`.
pub fn parse_iso_date(s: &str) -> Option<Day> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = s.get(r)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (y, m, d) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    if y < 1970 || !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return None;
    }
    let days = days_from_civil(i64::from(y), m, d);
    u32::try_from(days).ok().map(Day)
}

/// Format a UTC day number as `YYYY-MM-DD`.
pub fn format_iso_date(day: Day) -> String {
    let (y, m, d) = civil_from_days(i64::from(day.0));
    format!("{y:04}-{m:02}-{d:02}")
}

fn is_leap(y: u32) -> bool {
    (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400)
}

fn days_in_month(y: u32, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(parse_iso_date("1970-01-01"), Some(Day(0)));
        // 2020-04-02, the day of the official GAEN vectors (unix 1585785600).
        assert_eq!(
            parse_iso_date("2020-04-02"),
            Some(Day(1_585_785_600 / 86_400))
        );
        assert_eq!(
            parse_iso_date("2024-02-29").map(format_iso_date).as_deref(),
            Some("2024-02-29")
        );
    }

    #[test]
    fn round_trip_over_many_days() {
        for d in (0..40_000).step_by(7) {
            assert_eq!(parse_iso_date(&format_iso_date(Day(d))), Some(Day(d)));
        }
    }

    #[test]
    fn malformed_dates_are_rejected() {
        for s in [
            "",
            "2020-4-02",
            "2020/04/02",
            "2020-13-01",
            "2020-00-10",
            "2021-02-29",
            "2020-04-31",
            "1969-12-31",
            "2020-04-02T00:00",
            "+020-04-02",
            "2020-04-0a",
            "２020-04-02",
        ] {
            assert_eq!(parse_iso_date(s), None, "{s}");
        }
    }
}
