//! Acquisition times as written in raster metadata and on the command line.

/// Parses the date-time spellings found in raster metadata (TIFF `YYYY:MM:DD HH:MM:SS`,
/// ISO 8601 with or without zone, a bare date) into microseconds since the epoch (UTC).
pub fn parse_time(text: &str) -> Option<i64> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime};
    let t = text.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Some(dt.timestamp_micros());
    }
    for format in
        ["%Y:%m:%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.fZ"]
    {
        if let Ok(dt) = NaiveDateTime::parse_from_str(t, format) {
            return Some(dt.and_utc().timestamp_micros());
        }
    }
    NaiveDate::parse_from_str(t, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|dt| dt.and_utc().timestamp_micros())
}

/// A query's `since` bound: a date or RFC 3339 time, with a message naming the text.
pub fn parse_since(text: &str) -> Result<i64, String> {
    parse_time(text)
        .ok_or_else(|| format!("'{text}' is not a date or time (use 2020-05-18 or 2020-05-18T12:00:00Z)"))
}

/// A query's `until` bound: a plain date means the whole day (up to its last microsecond).
pub fn parse_until(text: &str) -> Result<i64, String> {
    let t = parse_since(text)?;
    let date_only = text.trim().len() == 10 && !text.contains(['T', 't', ' ']);
    Ok(if date_only { t + 86_400_000_000 - 1 } else { t })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_times_in_the_usual_spellings() {
        let t = 1_589_803_200_000_000; // 2020-05-18T12:00:00Z
        assert_eq!(parse_time("2020:05:18 12:00:00"), Some(t));
        assert_eq!(parse_time("2020-05-18T12:00:00Z"), Some(t));
        assert_eq!(parse_time("2020-05-18T14:00:00+02:00"), Some(t));
        assert_eq!(parse_time("2020-05-18T12:00:00.000"), Some(t));
        assert_eq!(parse_time("2020-05-18"), Some(t - 12 * 3600 * 1_000_000));
        assert_eq!(parse_time("yesterday"), None);
    }
}
