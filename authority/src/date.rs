//! UTC days and `YYYY-MM-DD` dates (the `onset` of codes and tokens), without a date
//! library: Howard Hinnant's `days_from_civil` / `civil_from_days`. The key server has its
//! own copy; the two services share no code at run time so that they can be deployed
//! apart, and the end-to-end test checks that they agree on the wire.

/// Seconds per day.
pub const DAY_SECONDS: u64 = 86_400;

/// The UTC day number (days since 1970-01-01) of unix time `t`.
pub fn day_of(t: u64) -> u32 {
    u32::try_from(t / DAY_SECONDS).unwrap_or(u32::MAX)
}

/// Parse a strict `YYYY-MM-DD` date (1970-01-01 or later) into its UTC day number.
pub fn parse_iso_date(s: &str) -> Option<u32> {
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
    u32::try_from(days_from_civil(i64::from(y), m, d)).ok()
}

/// Format a UTC day number as `YYYY-MM-DD`.
pub fn format_iso_date(day: u32) -> String {
    let (y, m, d) = civil_from_days(i64::from(day));
    format!("{y:04}-{m:02}-{d:02}")
}

fn days_in_month(y: u32, m: u32) -> u32 {
    let leap = (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if leap => 29,
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
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn known_dates_round_trip() {
        assert_eq!(parse_iso_date("1970-01-01"), Some(0));
        assert_eq!(parse_iso_date("2020-02-29"), Some(18_321));
        assert_eq!(format_iso_date(18_321), "2020-02-29");
        for day in (0..40_000).step_by(37) {
            assert_eq!(parse_iso_date(&format_iso_date(day)), Some(day));
        }
    }

    #[test]
    fn malformed_dates_are_refused() {
        for s in [
            "2021-02-29",
            "2021-13-01",
            "2021-1-01",
            "20210101",
            "1969-12-31",
            "2021-01-01T00",
        ] {
            assert_eq!(parse_iso_date(s), None, "{s}");
        }
    }
}
