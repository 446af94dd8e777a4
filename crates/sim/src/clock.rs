//! Wall-clock time: the one place the simulator reads the system clock, and HubSpot's
//! ISO-8601 timestamp format.
//!
//! Everything that measures durations (rate-limit windows, latency, outside consumers) uses
//! `tokio::time::Instant` instead, so tests can pause and advance it.

/// Unix time in milliseconds, for `createdAt`-style timestamps and the daily reset.
// Calendar time has no tokio equivalent (a paused tokio clock cannot say which day it is),
// so this is the simulator's one read of the system clock.
#[allow(clippy::disallowed_methods)]
pub(crate) fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `2024-05-01T12:34:56.789Z` from Unix milliseconds (proleptic Gregorian, UTC).
pub(crate) fn iso_ms(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let (h, mi, s, milli) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    );
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_format() {
        assert_eq!(iso_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_ms(1_714_566_896_789), "2024-05-01T12:34:56.789Z");
        assert_eq!(iso_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
