//! The timestamp ladder: from a field value (or the Kafka record time) to the file's date.
//!
//! Numbers are epoch times whose unit is read from their magnitude (see [`millis_from_number`]);
//! strings are parsed in `message_timezone`; the date is formatted in `output_timezone`. So an
//! event with `syncts` 1580495403199 (2020-01-31T18:30:03Z) is dated `2020-02-01` in Asia/Kolkata.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

/// A field's value, as found in the message (strings without escapes borrow from it).
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue<'a> {
    Int(i64),
    Float(f64),
    Str(std::borrow::Cow<'a, str>),
    /// Present but of another type (bool, null, object, array): not usable.
    Other,
}

/// How to turn field values into dates, for one topic.
#[derive(Debug, Clone)]
pub struct DateRules {
    /// strftime pattern for strings, matched at the start of the string (Secor's input pattern).
    pub input_pattern: Option<String>,
    pub message_tz: Tz,
    pub output_tz: Tz,
    pub date_format: String,
    /// `[earliest, latest)` epoch milliseconds of a usable time (the sanity window): a time
    /// outside it is treated like no time at all, so the ladder goes on to its next rung.
    pub window: (i64, i64),
}

/// The sanity window of `[earliest, latest]` calendar days in `tz`, as epoch milliseconds.
pub fn window(tz: Tz, earliest: NaiveDate, latest: NaiveDate) -> (i64, i64) {
    let midnight = |d: NaiveDate| tz.from_local_datetime(&d.and_time(NaiveTime::MIN)).earliest().map(|t| t.timestamp_millis());
    let lo = midnight(earliest).unwrap_or(i64::MIN);
    let hi = latest.succ_opt().and_then(midnight).unwrap_or(i64::MAX);
    (lo, hi)
}

// Boundaries of the magnitude ladder. 1e11 s is the year 5138 and 1e11 ms is 1973-03-03, so
// every plausible event time falls in exactly one band.
const SECONDS_BELOW: f64 = 1e11;
const MILLIS_BELOW: f64 = 1e14;
const MICROS_BELOW: f64 = 1e17;

/// Epoch milliseconds from a number whose unit is read from its magnitude:
/// below 1e11 seconds, below 1e14 milliseconds, below 1e17 microseconds, else nanoseconds.
/// Negative, NaN and infinite values are not usable.
pub fn millis_from_number(v: f64) -> Option<i64> {
    if !v.is_finite() || v < 0.0 {
        return None;
    }
    let ms = if v < SECONDS_BELOW {
        v * 1e3
    } else if v < MILLIS_BELOW {
        v
    } else if v < MICROS_BELOW {
        v / 1e3
    } else {
        v / 1e6
    };
    let ms = ms.floor();
    (ms <= i64::MAX as f64).then_some(ms as i64)
}

/// Epoch milliseconds from an integer; exact for the common millisecond case.
pub fn millis_from_int(v: i64) -> Option<i64> {
    if v < 0 {
        None
    } else if (v as f64) < SECONDS_BELOW {
        v.checked_mul(1000)
    } else if (v as f64) < MILLIS_BELOW {
        Some(v)
    } else if (v as f64) < MICROS_BELOW {
        Some(v / 1000)
    } else {
        Some(v / 1_000_000)
    }
}

/// A Java date pattern letter kbackup has no equivalent for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Java date pattern letter `{letters}` (in `{pattern}`) has no kbackup equivalent")]
pub struct UnsupportedLetter {
    /// The letter as the pattern repeats it (`GG`).
    pub letters: String,
    pub pattern: String,
}

/// Converts a Java `SimpleDateFormat` pattern (Secor's `message.timestamp.input.pattern`,
/// `secor.partition.output_dt_format`) to the strftime equivalent; the error says which
/// pattern letter has none.
pub fn strftime_from_java(p: &str) -> Result<String, UnsupportedLetter> {
    let mut out = String::new();
    let chars: Vec<char> = p.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            // Quoted literal; '' is a single quote.
            let mut j = i + 1;
            while j < chars.len() && chars[j] != '\'' {
                out.push(chars[j]);
                j += 1;
            }
            if j == i + 1 {
                out.push('\'');
            }
            i = j + 1;
            continue;
        }
        let run = chars[i..].iter().take_while(|&&x| x == c).count();
        let spec = match (c, run) {
            ('y', 4) | ('y', 1) | ('y', 3) => "%Y",
            ('y', 2) => "%y",
            ('M', 2) | ('M', 1) => "%m",
            ('d', 2) | ('d', 1) => "%d",
            ('H', 2) | ('H', 1) => "%H",
            ('m', 2) | ('m', 1) => "%M",
            ('s', 2) | ('s', 1) => "%S",
            ('S', 3) => "%3f",
            // English names, as chrono reads them (a name in another language fails to parse
            // and is counted, never misdated).
            ('M', 3) => "%b",
            ('M', 4..) => "%B",
            ('E', 1..=3) => "%a",
            ('E', 4..) => "%A",
            ('a', 1) => "%p",
            ('h', 1 | 2) => "%I",
            // RFC 822 and ISO 8601 offsets: -0800, -08:00.
            ('Z', 1..=3) => "%z",
            ('X', 3) => "%:z",
            ('a'..='z' | 'A'..='Z', _) => return Err(UnsupportedLetter { letters: c.to_string().repeat(run), pattern: p.to_string() }),
            ('%', _) => "%%",
            _ => {
                out.extend(std::iter::repeat_n(c, run));
                i += run;
                continue;
            }
        };
        out.push_str(spec);
        i += run;
    }
    Ok(out)
}

/// The strftime equivalent when `p` is written the Java way (`yyyy-MM-dd`: no `%`, and a
/// year run), which strftime would take for literal text and never match.
pub fn looks_like_java(p: &str) -> Option<String> {
    (!p.contains('%') && p.contains("yy")).then(|| strftime_from_java(p).ok()).flatten()
}

impl DateRules {
    /// True if `ms` lies inside the sanity window.
    pub fn usable(&self, ms: i64) -> bool {
        ms >= self.window.0 && ms < self.window.1
    }

    /// Epoch milliseconds from a field value, or `None` if it is not a usable time.
    pub fn millis(&self, v: &FieldValue<'_>) -> Option<i64> {
        match v {
            FieldValue::Int(i) => millis_from_int(*i),
            FieldValue::Float(f) => millis_from_number(*f),
            FieldValue::Str(s) => self.millis_from_str(s),
            FieldValue::Other => None,
        }
    }

    /// Parses a string timestamp.
    ///
    /// With `input_pattern`, the start of the string must match it (as Java's
    /// `SimpleDateFormat.parse` does, so `yyyy-MM-dd` reads the date part of an ISO timestamp).
    /// Without, RFC 3339, ISO-8601 without offset (`T` or space), a plain date, or an all-digit
    /// string read as a number.
    pub fn millis_from_str(&self, s: &str) -> Option<i64> {
        let s = s.trim();
        if let Some(p) = &self.input_pattern {
            return self.parse_with_pattern(s, p);
        }
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            // Eight digits are an ISO-8601 basic date (`20200131`), not epoch seconds of 1970.
            if s.len() == 8 {
                if let Ok(d) = NaiveDate::parse_from_str(s, "%Y%m%d") {
                    return self.local_millis(d.and_time(NaiveTime::MIN));
                }
            }
            return s.parse::<i64>().ok().and_then(millis_from_int);
        }
        if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
            return Some(dt.timestamp_millis());
        }
        // ISO-8601 variants RFC 3339 rejects: `+0530` offsets, lowercase or space separators.
        for f in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%:z"] {
            if let Ok(dt) = DateTime::parse_from_str(s, f) {
                return Some(dt.timestamp_millis());
            }
        }
        for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
            if let Ok(ndt) = NaiveDateTime::parse_from_str(s, f) {
                return self.local_millis(ndt);
            }
        }
        if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            return self.local_millis(d.and_time(NaiveTime::MIN));
        }
        None
    }

    fn parse_with_pattern(&self, s: &str, pattern: &str) -> Option<i64> {
        if let Ok((dt, _)) = DateTime::parse_and_remainder(s, pattern) {
            return Some(dt.timestamp_millis());
        }
        if let Ok((ndt, _)) = NaiveDateTime::parse_and_remainder(s, pattern) {
            return self.local_millis(ndt);
        }
        if let Ok((d, _)) = NaiveDate::parse_and_remainder(s, pattern) {
            return self.local_millis(d.and_time(NaiveTime::MIN));
        }
        None
    }

    fn local_millis(&self, ndt: NaiveDateTime) -> Option<i64> {
        // In a DST gap or fold take the earliest valid instant, as java.time does.
        self.message_tz.from_local_datetime(&ndt).earliest().map(|d| d.timestamp_millis())
    }

    /// The `[start, end)` epoch-millisecond range of the output-zone calendar day holding `ms`.
    pub fn local_day_range(&self, ms: i64) -> Option<(i64, i64)> {
        let day = DateTime::<Utc>::from_timestamp_millis(ms)?.with_timezone(&self.output_tz).date_naive();
        let start = |d: NaiveDate| {
            // A zone may skip midnight on a DST day; the day then starts at its first valid instant.
            (0..=120).find_map(|m| {
                let t = d.and_time(NaiveTime::MIN) + chrono::Duration::minutes(m);
                self.output_tz.from_local_datetime(&t).earliest()
            })
        };
        let lo = start(day)?.timestamp_millis();
        let hi = start(day.succ_opt()?)?.timestamp_millis();
        (lo <= ms && ms < hi).then_some((lo, hi))
    }

    /// The date string for epoch milliseconds, in the output zone and format.
    pub fn format_date(&self, ms: i64) -> Option<String> {
        let utc = DateTime::<Utc>::from_timestamp_millis(ms)?;
        Some(utc.with_timezone(&self.output_tz).format(&self.date_format).to_string())
    }
}

/// True if a strftime format depends only on the calendar day (so dates can be cached per day).
pub fn is_daily_format(fmt: &str) -> bool {
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            let mut spec = chars.next();
            while matches!(spec, Some('-' | '_' | '0')) {
                spec = chars.next();
            }
            match spec {
                Some(s) if "YmdyjeFbBhaAuwDCGgVUW%".contains(s) => {}
                _ => return false,
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(out: &str) -> DateRules {
        DateRules {
            input_pattern: None,
            message_tz: Tz::UTC,
            output_tz: out.parse().unwrap(),
            date_format: "%Y-%m-%d".into(),
            window: (i64::MIN, i64::MAX),
        }
    }

    const SYNCTS: i64 = 1_580_495_403_199; // 2020-01-31T18:30:03.199Z

    #[test]
    fn syncts_is_dated_in_ist() {
        let r = rules("Asia/Kolkata");
        assert_eq!(r.format_date(SYNCTS).unwrap(), "2020-02-01");
        assert_eq!(rules("UTC").format_date(SYNCTS).unwrap(), "2020-01-31");
    }

    #[test]
    fn ist_midnight_boundary() {
        let r = rules("Asia/Kolkata");
        // 2020-01-31T18:29:59.999Z is 23:59:59.999 IST; one ms later is the next IST day.
        let midnight = 1_580_495_400_000;
        assert_eq!(r.format_date(midnight - 1).unwrap(), "2020-01-31");
        assert_eq!(r.format_date(midnight).unwrap(), "2020-02-01");
    }

    #[test]
    fn magnitude_ladder() {
        let ms = SYNCTS;
        assert_eq!(millis_from_int(ms / 1000), Some(ms / 1000 * 1000), "seconds");
        assert_eq!(millis_from_int(ms), Some(ms), "millis");
        assert_eq!(millis_from_int(ms * 1000 + 7), Some(ms), "micros");
        assert_eq!(millis_from_int(ms * 1_000_000 + 7), Some(ms), "nanos");
        assert_eq!(millis_from_int(0), Some(0));
        assert_eq!(millis_from_int(-1), None);
        assert_eq!(millis_from_number(1_580_495_403.5), Some(1_580_495_403_500));
        assert_eq!(millis_from_number(1.580495403199e12), Some(ms));
        assert_eq!(millis_from_number(f64::NAN), None);
        assert_eq!(millis_from_number(-3.0), None);
        assert_eq!(millis_from_number(f64::INFINITY), None);
        assert_eq!(millis_from_int(i64::MAX), Some(i64::MAX / 1_000_000));
    }

    #[test]
    fn eight_digit_strings_are_basic_dates() {
        let r = rules("UTC");
        assert_eq!(r.millis_from_str("20200131").and_then(|ms| r.format_date(ms)).as_deref(), Some("2020-01-31"));
        // Not a date: read as a number (epoch seconds) as before.
        assert_eq!(r.millis_from_str("20201399"), Some(20_201_399_000));
        assert_eq!(r.millis_from_str("1580495403"), Some(1_580_495_403_000));
    }

    #[test]
    fn the_window_covers_whole_local_days() {
        let ist: Tz = "Asia/Kolkata".parse().unwrap();
        let (lo, hi) = window(ist, NaiveDate::from_ymd_opt(2000, 1, 1).unwrap(), NaiveDate::from_ymd_opt(2099, 12, 31).unwrap());
        let mut r = rules("Asia/Kolkata");
        r.window = (lo, hi);
        assert_eq!(r.format_date(lo).unwrap(), "2000-01-01");
        assert_eq!(r.format_date(lo - 1).unwrap(), "1999-12-31");
        assert!(r.usable(lo) && !r.usable(lo - 1));
        assert_eq!(r.format_date(hi - 1).unwrap(), "2099-12-31");
        assert!(r.usable(hi - 1) && !r.usable(hi));
        assert!(!r.usable(0), "syncts 0 is no time");
    }

    #[test]
    fn string_forms() {
        let r = rules("Asia/Kolkata");
        let s = |x: &str| r.millis_from_str(x);
        assert_eq!(s("2020-01-31T18:30:03.199Z"), Some(SYNCTS));
        assert_eq!(s("2020-02-01T00:00:03.199+05:30"), Some(SYNCTS));
        assert_eq!(s("2020-02-01T00:00:03.199+0530"), Some(SYNCTS));
        assert_eq!(s("2020-01-31 18:30:03.199"), Some(SYNCTS), "no offset: message_timezone (UTC)");
        assert_eq!(s("2020-01-31T18:30:03.199"), Some(SYNCTS));
        assert_eq!(s("2020-01-31"), Some(1_580_428_800_000));
        assert_eq!(s("1580495403199"), Some(SYNCTS));
        assert_eq!(s(""), None);
        assert_eq!(s("yesterday"), None);
        assert_eq!(s("2020-13-01"), None);
    }

    #[test]
    fn message_timezone_applies_to_offsetless_strings() {
        let mut r = rules("UTC");
        r.message_tz = "Asia/Kolkata".parse().unwrap();
        // 00:00:03 IST on Feb 1 is still Jan 31 in UTC.
        let ms = r.millis_from_str("2020-02-01 00:00:03.199").unwrap();
        assert_eq!(ms, SYNCTS);
        assert_eq!(r.format_date(ms).unwrap(), "2020-01-31");
    }

    #[test]
    fn secor_input_pattern_reads_only_the_date_part() {
        // Sunbird: message.timestamp.input.pattern=yyyy-MM-dd on @timestamp, parser zone UTC,
        // output zone IST: an @timestamp of 18:30Z Jan 31 is filed under Jan 31, not Feb 1.
        let mut r = rules("Asia/Kolkata");
        r.input_pattern = Some("%Y-%m-%d".into());
        let ms = r.millis_from_str("2020-01-31T18:30:03.199Z").unwrap();
        assert_eq!(r.format_date(ms).unwrap(), "2020-01-31");
        assert_eq!(r.millis_from_str("31/01/2020"), None);
    }

    #[test]
    fn dst_zones_take_the_earliest_instant() {
        let mut r = rules("UTC");
        r.message_tz = "America/New_York".parse().unwrap();
        // 02:30 on 2021-03-14 does not exist in New York; 01:30 on 2021-11-07 happens twice.
        assert!(r.millis_from_str("2021-03-14 02:30:00").is_none());
        let fold = r.millis_from_str("2021-11-07 01:30:00").unwrap();
        assert_eq!(fold, 1_636_263_000_000); // 05:30Z, the EDT reading
    }

    #[test]
    fn local_day_range_is_the_ist_day() {
        let r = rules("Asia/Kolkata");
        let (lo, hi) = r.local_day_range(SYNCTS).unwrap();
        assert_eq!(lo, 1_580_495_400_000); // 2020-02-01T00:00+05:30
        assert_eq!(hi - lo, 86_400_000);
        // A DST day in New York is 23 hours long.
        let ny = rules("America/New_York");
        let (lo, hi) = ny.local_day_range(1_615_730_400_000).unwrap(); // 2021-03-14T14:00Z
        assert_eq!(hi - lo, 23 * 3_600_000);
    }

    #[test]
    fn other_formats() {
        let mut r = rules("Asia/Kolkata");
        r.date_format = "%Y%m%d".into();
        assert_eq!(r.format_date(SYNCTS).unwrap(), "20200201");
        r.date_format = "dt=%Y-%m-%d".into();
        assert_eq!(r.format_date(SYNCTS).unwrap(), "dt=2020-02-01");
    }

    #[test]
    fn field_values() {
        let r = rules("UTC");
        assert_eq!(r.millis(&FieldValue::Int(SYNCTS)), Some(SYNCTS));
        assert_eq!(r.millis(&FieldValue::Float(1.580495403199e12)), Some(SYNCTS));
        assert_eq!(r.millis(&FieldValue::Str("2020-01-31T18:30:03.199Z".into())), Some(SYNCTS));
        assert_eq!(r.millis(&FieldValue::Other), None);
    }
}
