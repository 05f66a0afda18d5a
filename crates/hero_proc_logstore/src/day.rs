//! UTC calendar days for event file names, without a date library: the store only needs
//! "which day is this millisecond in" and back (Howard Hinnant's civil-date algorithms).

pub(crate) const DAY_MS: i64 = 86_400_000;

/// Days since 1970-01-01 (UTC) of a Unix time in milliseconds.
pub(crate) fn day_of_ms(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(DAY_MS)
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD.jsonl`
pub(crate) fn file_name(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}.jsonl")
}

/// The day of an event file name, `None` for anything else.
pub(crate) fn parse_file_name(name: &str) -> Option<i64> {
    let stem = name.strip_suffix(".jsonl")?;
    let mut parts = stem.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || y.len() < 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !(all_digits(y) && all_digits(m) && all_digits(d)) {
        return None;
    }
    let (y, m, d): (i64, u32, u32) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let day = days_from_civil(y, m, d);
    // Reject dates like 02-31 that would silently name another day.
    (civil_from_days(day) == (y, m, d)).then_some(day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(file_name(0), "1970-01-01.jsonl");
        // 2026-11-23T12:00:00Z
        assert_eq!(file_name(day_of_ms(1_795_435_200_000)), "2026-11-23.jsonl");
        assert_eq!(file_name(day_of_ms(-1)), "1969-12-31.jsonl");
        assert_eq!(file_name(days_from_civil(2024, 2, 29)), "2024-02-29.jsonl");
    }

    #[test]
    fn round_trip_over_centuries() {
        for day in (-700_000..800_000).step_by(7) {
            assert_eq!(parse_file_name(&file_name(day)), Some(day), "day {day}");
        }
    }

    #[test]
    fn rejects_other_names() {
        for n in
            ["2026-11-23.json", "2026-13-01.jsonl", "2026-02-30.jsonl", "26-11-23.jsonl", "x.jsonl", "2026-1-23.jsonl"]
        {
            assert_eq!(parse_file_name(n), None, "{n}");
        }
    }
}
