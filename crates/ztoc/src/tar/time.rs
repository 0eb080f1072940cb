//! The `mod_time` string: Go's `time.Unix(secs, nanos).UTC().MarshalText()`, without a date library.

const NANOS_PER_SEC: i128 = 1_000_000_000;
const SECS_PER_DAY: i128 = 86_400;

/// Formats `time.Unix(secs, nanos)` (any `nanos`, normalised as Go does) in UTC the way Go's `Time.MarshalText`
/// does: RFC 3339 with up to nine fraction digits, trailing zeros trimmed, no fraction when it is zero, e.g.
/// `"2023-11-14T22:13:20.5Z"`. Returns `""` when the year is outside `0..=9999`, where `MarshalText` fails and
/// soci stores an empty string.
pub fn format_mod_time(secs: i64, nanos: i64) -> String {
    // i128 holds every (secs, nanos) pair exactly, so out-of-range inputs are rejected by the year test, not by
    // overflow.
    let total = i128::from(secs) * NANOS_PER_SEC + i128::from(nanos);
    let unix_secs = total.div_euclid(NANOS_PER_SEC);
    let fraction = total.rem_euclid(NANOS_PER_SEC);
    let days = unix_secs.div_euclid(SECS_PER_DAY);
    let second_of_day = unix_secs.rem_euclid(SECS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        return String::new();
    }
    let (hour, minute, second) = (second_of_day / 3600, second_of_day / 60 % 60, second_of_day % 60);
    let mut text = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}");
    if fraction != 0 {
        let digits = format!("{fraction:09}");
        text.push('.');
        text.push_str(digits.trim_end_matches('0'));
    }
    text.push('Z');
    text
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i128) -> (i128, i128, i128) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153; // March = 0
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    let year = year_of_era + era * 400 + i128::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_seconds() {
        assert_eq!(format_mod_time(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(format_mod_time(1_700_000_000, 0), "2023-11-14T22:13:20Z");
        assert_eq!(format_mod_time(1_234_567_890, 0), "2009-02-13T23:31:30Z");
        assert_eq!(format_mod_time(951_782_400, 0), "2000-02-29T00:00:00Z");
        assert_eq!(format_mod_time(4_107_542_400, 0), "2100-03-01T00:00:00Z");
    }

    #[test]
    fn sub_seconds_are_trimmed() {
        assert_eq!(format_mod_time(1_700_000_000, 500_000_000), "2023-11-14T22:13:20.5Z");
        assert_eq!(format_mod_time(1_700_000_000, 123_456_789), "2023-11-14T22:13:20.123456789Z");
        assert_eq!(format_mod_time(1_700_000_000, 1), "2023-11-14T22:13:20.000000001Z");
        assert_eq!(format_mod_time(1_700_000_000, 120_000_000), "2023-11-14T22:13:20.12Z");
    }

    #[test]
    fn negative_times() {
        assert_eq!(format_mod_time(-1, 0), "1969-12-31T23:59:59Z");
        // PAX "-1.25" is time.Unix(-1, -250000000).
        assert_eq!(format_mod_time(-1, -250_000_000), "1969-12-31T23:59:58.75Z");
        // PAX "-0.5" is time.Unix(0, -500000000).
        assert_eq!(format_mod_time(0, -500_000_000), "1969-12-31T23:59:59.5Z");
        assert_eq!(format_mod_time(-86_400 * 365, 0), "1969-01-01T00:00:00Z");
        // Nanoseconds beyond a second carry into the seconds, as time.Unix does.
        assert_eq!(format_mod_time(0, 2_500_000_000), "1970-01-01T00:00:02.5Z");
    }

    #[test]
    fn year_range_limits() {
        // 0000-01-01T00:00:00Z and 9999-12-31T23:59:59Z are the limits of MarshalText.
        assert_eq!(format_mod_time(-62_167_219_200, 0), "0000-01-01T00:00:00Z");
        assert_eq!(format_mod_time(-62_167_219_201, 0), "");
        assert_eq!(format_mod_time(253_402_300_799, 999_999_999), "9999-12-31T23:59:59.999999999Z");
        assert_eq!(format_mod_time(253_402_300_800, 0), "");
        assert_eq!(format_mod_time(-62_135_596_800, 0), "0001-01-01T00:00:00Z");
    }

    #[test]
    fn extremes_do_not_panic() {
        assert_eq!(format_mod_time(i64::MAX, i64::MAX), "");
        assert_eq!(format_mod_time(i64::MIN, i64::MIN), "");
        assert_eq!(format_mod_time(i64::MIN, 0), "");
        // The largest octal mtime a 12-byte field can hold.
        assert_eq!(format_mod_time(0o777_777_777_777, 0), "4147-08-20T07:32:15Z");
    }
}
