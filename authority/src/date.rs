//! UTC days and `YYYY-MM-DD` dates (the `onset` of codes and tokens) as the authority
//! keeps them: plain day numbers. The calendar conversion is the core's
//! ([`dp3t_core::time::Day::parse_iso`] and [`dp3t_core::time::Day::iso`]), the one the
//! key server reads the `onset` claim with, so the two services cannot disagree on a date.

use dp3t_core::time::Day;

/// Seconds per day.
pub const DAY_SECONDS: u64 = 86_400;

/// The UTC day number (days since 1970-01-01) of unix time `t`.
pub fn day_of(t: u64) -> u32 {
    u32::try_from(t / DAY_SECONDS).unwrap_or(u32::MAX)
}

/// Parse a strict `YYYY-MM-DD` date (1970-01-01 or later) into its UTC day number.
pub fn parse_iso_date(s: &str) -> Option<u32> {
    Day::parse_iso(s).map(|d| d.0)
}

/// Format a UTC day number as `YYYY-MM-DD`.
pub fn format_iso_date(day: u32) -> String {
    Day(day).iso()
}

#[cfg(test)]
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
        assert_eq!(day_of(18_321 * DAY_SECONDS + 86_399), 18_321);
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
