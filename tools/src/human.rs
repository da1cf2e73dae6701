//! Output for people: times in the local time zone to the second, sizes in binary units.
//! `--json` keeps RFC 3339 times with nanoseconds and sizes in bytes.

/// An RFC 3339 time as `YYYY-MM-DD HH:MM:SS` in the local time zone (the form `--before`
/// and `.cowfs/at/` take). Text that is not such a time is shown as it is.
pub fn time(rfc3339: &str) -> String {
    match rfc3339.parse::<jiff::Timestamp>() {
        Ok(ts) => ts.to_zoned(jiff::tz::TimeZone::system()).strftime("%Y-%m-%d %H:%M:%S").to_string(),
        Err(_) => rfc3339.to_string(),
    }
}

/// A size in bytes, then KiB, MiB, GiB, TiB, PiB, EiB with one decimal: `512 B`, `1.5 KiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(1 << 40), "1.0 TiB");
        assert_eq!(size(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn times_are_local_to_the_second() {
        let t = time("2026-12-03T07:16:40.012875593+00:00");
        assert_eq!(t.len(), "2026-12-03 07:16:40".len(), "{t}");
        let back = jiff::civil::DateTime::strptime("%Y-%m-%d %H:%M:%S", &t).unwrap();
        let ts = back.to_zoned(jiff::tz::TimeZone::system()).unwrap().timestamp();
        assert_eq!(ts.as_second(), 1_796_282_200, "{t}");
        assert_eq!(time("not a time"), "not a time");
    }
}
