//! Routing: which file a message belongs in — (prefix, date), or the invalid bucket — and why.
//!
//! One pass over the message validates it as JSON and picks out only the configured fields
//! (timestamp ladder and prefix field); everything else is skipped without building a tree.

mod scan;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use scan::{ScanError, MAX_PATHS};

use crate::config::{parse_day, parse_tz, ConfigError, OffsetBuckets, RecordTime, TopicConfig};
use crate::event_date::{DateRules, FieldValue};

/// How a message's date was found; counted per topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DateSource {
    /// From `timestamp_fields[i]`.
    Field(usize),
    /// No usable field: the Kafka record timestamp.
    RecordTime,
    /// `format = "record"` only: the value gives no event time (a tombstone, not JSON, not
    /// UTF-8), so the record is dated by its Kafka record timestamp rather than filed under
    /// `invalid_date`, where no date range finds it. Value-format topics keep Secor's invalid
    /// bucket.
    RecordTimeInstead(InvalidReason),
    /// Not JSON or not UTF-8 (or no usable time at all): the invalid bucket.
    Invalid(InvalidReason),
    /// Placed by its offset (stock Secor's offset parsers), whatever it holds.
    Offset,
}

/// Why a message went to the invalid bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InvalidReason {
    NotUtf8,
    NotJson,
    Empty,
    /// Valid JSON, but neither a field nor the record carried a usable time.
    NoTimestamp,
}

impl InvalidReason {
    /// Every reason, for counters exported at zero before the first message.
    pub const ALL: [InvalidReason; 4] = [InvalidReason::NotUtf8, InvalidReason::NotJson, InvalidReason::Empty, InvalidReason::NoTimestamp];

    /// The values a record backup dates by the record time instead
    /// ([`DateSource::RecordTimeInstead`]).
    pub const UNDATABLE_VALUES: [InvalidReason; 3] = [InvalidReason::NotUtf8, InvalidReason::NotJson, InvalidReason::Empty];

    /// A short label for logs and counters.
    pub fn as_str(self) -> &'static str {
        match self {
            InvalidReason::NotUtf8 => "not_utf8",
            InvalidReason::NotJson => "not_json",
            InvalidReason::Empty => "empty",
            InvalidReason::NoTimestamp => "no_timestamp",
        }
    }
}

/// Where one message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Sub-path chosen by `prefix_field`, if configured.
    pub prefix: Option<Arc<str>>,
    /// The formatted date.
    pub date: Arc<str>,
    /// The epoch milliseconds the date was read from (none in the invalid bucket).
    pub event_ms: Option<i64>,
    /// True if the message goes under `error_path` rather than `path`.
    pub to_error_path: bool,
    pub source: DateSource,
    /// Whether the message holds a raw `\n`/`\r`, when parsing found out (valid JSON only).
    pub line_breaks: Option<bool>,
    /// The first timestamp field (index into `timestamp_fields`) that held a string the
    /// topic's pattern could not read, before the rung that dated the message: a pattern that
    /// does not fit the data is counted and reported, never silent.
    pub unparsed_field: Option<u8>,
    /// For [`DateSource::RecordTimeInstead`]: where releases before record dating put the
    /// message (the invalid bucket). Recovery and the audit still recognise files there.
    pub earlier: Option<Box<Placement>>,
}

/// A directory and date a message may be filed under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub prefix: Option<Arc<str>>,
    pub date: Arc<str>,
    pub to_error_path: bool,
}

/// The routing rules of one topic.
#[derive(Debug)]
pub struct Router {
    rules: DateRules,
    /// Field paths, split on dots: the timestamp fields, then the prefix field if any.
    paths: Vec<Vec<String>>,
    n_ts: usize,
    prefix_map: BTreeMap<String, Arc<str>>,
    default_prefix: Option<Arc<str>>,
    invalid_date: Arc<str>,
    has_error_path: bool,
    /// `format = "record"`: values without an event time are dated by the record time.
    records: bool,
    /// When the record time dates an event.
    record_time: RecordTime,
    /// The prefix field's value names the folder (Secor's `SplitByFieldMessageParser`).
    prefix_as_value: bool,
    /// Offset folders instead of dates (Secor's offset parsers).
    buckets: Option<OffsetBuckets>,
    /// Names this router in the per-thread date cache.
    id: u64,
    cacheable: bool,
}

impl Router {
    /// Builds the router of a topic; `topic_index` names the topic in errors.
    pub fn new(t: &TopicConfig, topic_index: usize) -> Result<Router, ConfigError> {
        let k = |n: &str| format!("topic[{topic_index}].{n}");
        let output_tz = parse_tz(&k("output_timezone"), &t.output_timezone)?;
        let rules = DateRules {
            input_pattern: t.timestamp_input_pattern.clone(),
            message_tz: parse_tz(&k("message_timezone"), &t.message_timezone)?,
            output_tz,
            // The route's date string: with stock Secor's layout, its partition folders.
            date_format: t.partition_format(),
            window: crate::event_date::window(
                output_tz,
                parse_day(&k("earliest_event_date"), &t.earliest_event_date)?,
                parse_day(&k("latest_event_date"), &t.latest_event_date)?,
            ),
        };
        let mut paths: Vec<Vec<String>> = t.timestamp_fields.iter().map(|f| f.split('.').map(String::from).collect()).collect();
        let n_ts = paths.len();
        if let Some(f) = &t.prefix_field {
            paths.push(f.split('.').map(String::from).collect());
        }
        if paths.len() > MAX_PATHS {
            return Err(ConfigError::Invalid {
                key: k("timestamp_fields"),
                message: format!("at most {} fields (with prefix_field) can be looked up per message", MAX_PATHS),
            });
        }
        let prefix_map: BTreeMap<String, Arc<str>> = t.prefix_map.iter().map(|(k, v)| (k.clone(), Arc::from(v.trim_matches('/')))).collect();
        let default_prefix = prefix_map.get("DEFAULT").cloned();
        // A date format finer than a day (or with odd specifiers) is formatted every time.
        let cacheable = crate::event_date::is_daily_format(&t.partition_format());
        Ok(Router {
            rules,
            paths,
            n_ts,
            prefix_map,
            default_prefix,
            // In the topic's date format, so that every name of a topic has one date form.
            invalid_date: Arc::from(invalid_date(t).as_str()),
            has_error_path: t.error_path.is_some(),
            records: t.format == crate::config::Format::Record,
            record_time: t.record_time,
            prefix_as_value: t.prefix_as_value,
            buckets: t.offset_buckets.clone(),
            id: NEXT_ROUTER_ID.fetch_add(1, Ordering::Relaxed),
            cacheable,
        })
    }

    /// The router of releases before record dating, which filed undatable records in the
    /// invalid bucket like values (the simulation runs them beside the current one, as a
    /// rolling upgrade does).
    #[cfg(test)]
    pub(crate) fn before_record_dating(t: &TopicConfig, topic_index: usize) -> Result<Router, ConfigError> {
        Ok(Router { records: false, ..Router::new(t, topic_index)? })
    }

    /// Routes one message at `offset`. `record_ms` is the Kafka record timestamp, if the record
    /// has one.
    pub fn route(&self, payload: Option<&[u8]>, record_ms: Option<i64>, offset: i64) -> Route {
        if let Some(b) = &self.buckets {
            return self.route_by_offset(b, record_ms, offset);
        }
        if self.record_time == RecordTime::Only {
            // Secor's `kafka.useTimestamp`: the record time alone, whatever the value holds.
            return match record_ms.filter(|ms| self.rules.usable(*ms)).and_then(|ms| Some((ms, self.date_for(ms)?))) {
                Some((ms, date)) => Route {
                    prefix: self.default_prefix.clone(),
                    date,
                    event_ms: Some(ms),
                    to_error_path: false,
                    source: DateSource::RecordTime,
                    line_breaks: None,
                    unparsed_field: None,
                    earlier: None,
                },
                None => self.invalid(InvalidReason::NoTimestamp),
            };
        }
        let route = self.route_value(payload, record_ms);
        match route.source {
            // A JSON value without a usable time already had the record time's chance.
            DateSource::Invalid(reason) if self.records && reason != InvalidReason::NoTimestamp => {
                let Some(date) = record_ms.filter(|ms| self.rules.usable(*ms)).and_then(|ms| self.date_for(ms)) else {
                    return route;
                };
                let earlier = Placement { prefix: route.prefix, date: route.date, to_error_path: route.to_error_path };
                Route {
                    prefix: self.default_prefix.clone(),
                    date,
                    event_ms: record_ms,
                    to_error_path: false,
                    source: DateSource::RecordTimeInstead(reason),
                    line_breaks: None,
                    unparsed_field: None,
                    earlier: Some(Box::new(earlier)),
                }
            }
            _ => route,
        }
    }

    /// The routing of Secor's rules: the value's fields, then the record time, else invalid.
    fn route_value(&self, payload: Option<&[u8]>, record_ms: Option<i64>) -> Route {
        let payload = payload.unwrap_or_default();
        if payload.is_empty() {
            return self.invalid(InvalidReason::Empty);
        }
        // A UTF-8 byte order mark before the JSON is ignored (RFC 8259 allows it); the stored
        // line keeps it, byte for byte.
        let text = payload.strip_prefix("\u{feff}".as_bytes()).unwrap_or(payload);
        // No allocation per message for the usual handful of fields.
        let mut small: [Option<FieldValue<'_>>; 8] = Default::default();
        let mut large = Vec::new();
        let found: &mut [Option<FieldValue<'_>>] = if self.paths.len() <= small.len() {
            &mut small[..self.paths.len()]
        } else {
            large.resize(self.paths.len(), None);
            &mut large
        };
        // One pass proves the message UTF-8 and JSON (or finds it is not).
        let line_breaks = match scan::scan_bytes(text, &self.paths, found, false) {
            Ok(b) => Some(b),
            // Which of the two it is not: UTF-8 is judged first, as Secor's decoding does.
            Err(_) if std::str::from_utf8(payload).is_err() => return self.invalid(InvalidReason::NotUtf8),
            Err(_) => return self.invalid(InvalidReason::NotJson),
        };
        let prefix = if self.prefix_as_value {
            // The value itself names the folder; without a usable one (absent, not a name,
            // or not a safe folder name) the message cannot be placed, as Secor cannot.
            let value = match &found[self.n_ts] {
                Some(FieldValue::Str(s)) => Some(s.to_string()),
                Some(FieldValue::Int(i)) => Some(i.to_string()),
                _ => None,
            };
            match value.filter(|v| crate::naming::is_folder_name(v)) {
                Some(v) => Some(Arc::from(v)),
                None => return Route { line_breaks, ..self.invalid(InvalidReason::NoTimestamp) },
            }
        } else if self.paths.len() > self.n_ts {
            let value = match &found[self.n_ts] {
                Some(FieldValue::Str(s)) => self.prefix_map.get(s.as_ref()),
                Some(FieldValue::Int(i)) => self.prefix_map.get(&i.to_string()),
                _ => None,
            };
            value.or(self.default_prefix.as_ref()).cloned()
        } else {
            None
        };
        let mut unparsed_field = None;
        let dated = found[..self.n_ts]
            .iter()
            .enumerate()
            .find_map(|(i, v)| {
                let v = v.as_ref()?;
                let ms = self.rules.millis(v);
                if ms.is_none() && unparsed_field.is_none() && matches!(v, FieldValue::Str(_)) {
                    unparsed_field = Some(i as u8);
                }
                Some((DateSource::Field(i), ms.filter(|ms| self.rules.usable(*ms))?))
            })
            .or_else(|| match self.record_time {
                RecordTime::Never => None,
                _ => Some((DateSource::RecordTime, record_ms.filter(|ms| self.rules.usable(*ms))?)),
            });
        match dated.and_then(|(src, ms)| Some((src, ms, self.date_for(ms)?))) {
            Some((source, ms, date)) => {
                Route { prefix, date, event_ms: Some(ms), to_error_path: false, source, line_breaks, unparsed_field, earlier: None }
            }
            None => Route { prefix, line_breaks, unparsed_field, ..self.invalid(InvalidReason::NoTimestamp) },
        }
    }

    /// Stock Secor's offset folders: `<prefix><first offset of the bucket>`, below the record
    /// time's day folder for `DailyOffsetMessageParser`.
    fn route_by_offset(&self, b: &OffsetBuckets, record_ms: Option<i64>, offset: i64) -> Route {
        let bucket = offset.div_euclid(b.per) * b.per;
        let day = if b.daily {
            Some(record_ms.filter(|ms| self.rules.usable(*ms)).and_then(|ms| self.date_for(ms)).unwrap_or_else(|| self.invalid_date.clone()))
        } else {
            None
        };
        let date: Arc<str> = match day {
            Some(day) => Arc::from(format!("{day}/{}{bucket}", b.prefix)),
            None => Arc::from(format!("{}{bucket}", b.prefix)),
        };
        Route {
            prefix: None,
            date,
            event_ms: record_ms,
            to_error_path: false,
            source: DateSource::Offset,
            line_breaks: None,
            unparsed_field: None,
            earlier: None,
        }
    }

    fn invalid(&self, reason: InvalidReason) -> Route {
        Route {
            prefix: if self.has_error_path { None } else { self.default_prefix.clone() },
            date: self.invalid_date.clone(),
            event_ms: None,
            to_error_path: self.has_error_path,
            source: DateSource::Invalid(reason),
            line_breaks: None,
            unparsed_field: None,
            earlier: None,
        }
    }

    fn date_for(&self, ms: i64) -> Option<Arc<str>> {
        if !self.cacheable {
            return Some(Arc::from(self.rules.format_date(ms)?));
        }
        DATE_CACHE.with_borrow_mut(|cache| {
            if let Some((.., d)) = cache.iter().find(|(id, lo, hi, _)| *id == self.id && ms >= *lo && ms < *hi) {
                return Some(d.clone());
            }
            let date: Arc<str> = Arc::from(self.rules.format_date(ms)?);
            // The format depends on the local calendar day only, so the string holds from that
            // day's local midnight to the next one.
            if let Some((lo, hi)) = self.rules.local_day_range(ms) {
                if cache.len() >= DATE_CACHE_DAYS * 4 {
                    cache.remove(0);
                }
                cache.push((self.id, lo, hi, date.clone()));
            }
            Some(date)
        })
    }
}

/// The invalid bucket's date as it appears in names: `invalid_date` in the topic's `date_format`.
pub fn invalid_date(t: &TopicConfig) -> String {
    match (t.invalid_day(), crate::naming::DateFormat::parse_partition(&t.partition_format())) {
        (Ok(d), Ok(f)) => f.format(d),
        _ => t.invalid_date.clone(),
    }
}

static NEXT_ROUTER_ID: AtomicU64 = AtomicU64::new(0);

/// (router id, local midnight ms, next local midnight ms, formatted date).
type CachedDay = (u64, i64, i64, Arc<str>);

thread_local! {
    /// Recently formatted dates per (router, local day): events are mostly from a few days
    /// (around midnight, two alternate), so most lookups skip the formatter. Per thread, so
    /// routers can be shared by the threads that route.
    static DATE_CACHE: RefCell<Vec<CachedDay>> = const { RefCell::new(Vec::new()) };
}

/// How many days' ranges the date cache keeps per router (in a thread's cache of four routers' worth).
const DATE_CACHE_DAYS: usize = 8;

/// Validates `text` as JSON and returns the first value found at each path (`None` if absent).
pub fn extract<'t>(text: &'t str, paths: &[Vec<String>]) -> Result<Vec<Option<FieldValue<'t>>>, ScanError> {
    let mut found = vec![None; paths.len()];
    scan::scan(text, paths, &mut found, false)?;
    Ok(found)
}

/// Whether `text` is one valid JSON value (the whole of it is validated).
pub fn is_json(text: &str) -> bool {
    scan::scan(text, &[], &mut [], false).is_ok()
}

/// Like [`extract`], but stops reading as soon as every path is found, without validating the
/// rest: for tools that only need a key from events already known to be JSON.
pub fn find_fields<'t>(text: &'t str, paths: &[Vec<String>]) -> Option<Vec<Option<FieldValue<'t>>>> {
    let mut found = vec![None; paths.len()];
    scan::scan(text, paths, &mut found, true).ok()?;
    Some(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(extra: &str) -> TopicConfig {
        let text =
            format!("[kafka]\nbrokers='x'\n[storage]\nurl='file:///tmp/x'\n[[topic]]\nname='t'\npath='p'\noutput_timezone='Asia/Kolkata'\n{extra}");
        crate::config::Config::parse(&text, "t").unwrap().topics.remove(0)
    }

    fn router(extra: &str) -> Router {
        Router::new(&topic(extra), 0).unwrap()
    }

    const EVENT: &str = r#"{"ver":"3.0","eid":"IMPRESSION","ets":1580495389750,"mid":"IMPRESSION:5f0c","context":{"channel":"505c","did":"8b55","pdata":{"id":"prod.sunbird.app"}},"edata":{"type":"view"},"tags":[],"syncts":1580495403199,"@timestamp":"2020-01-31T18:30:03.199Z","flags":{"dd_processed":true},"type":"events"}"#;

    /// One pass proves UTF-8 and JSON, yet which of the two a bad message is not stays as it
    /// was: UTF-8 first, wherever the bad byte is.
    #[test]
    fn not_utf8_is_told_from_not_json() {
        let r = router("timestamp_fields=['syncts']");
        let reason = |b: &[u8]| match r.route(Some(b), None, 0).source {
            DateSource::Invalid(why) => Some(why),
            _ => None,
        };
        assert_eq!(reason(b"{\"syncts\":1580495403199,\"a\":\"caf\xc3\xa9\"}"), None, "UTF-8 in a string is fine");
        assert_eq!(reason(b"{\"syncts\":1580495403199,\"a\":\"caf\xe9\"}"), Some(InvalidReason::NotUtf8), "Latin-1 in a string");
        assert_eq!(reason(b"{\"syncts\":1580495403199,\"a\":\"\xed\xa0\x80\"}"), Some(InvalidReason::NotUtf8), "a surrogate");
        assert_eq!(reason(b"\xff{\"syncts\":1580495403199}"), Some(InvalidReason::NotUtf8), "outside any string");
        assert_eq!(reason(b"{\"syncts\":1580495403199,\"a\":\"x\xff"), Some(InvalidReason::NotUtf8), "both: UTF-8 first");
        assert_eq!(reason(b"{\"syncts\":1580495403199,\"a\":\"x\""), Some(InvalidReason::NotJson));
        assert_eq!(reason(b"\xef\xbb\xbf{\"syncts\":1580495403199}"), None, "a byte order mark is skipped");
    }

    /// Stock Secor's rules: JsonMessageParser never falls back to the record time (a message
    /// without its field goes where Secor files time 0), `kafka.useTimestamp` dates by the
    /// record time alone, hour folders follow the day's.
    #[test]
    fn stock_secor_dating_rules() {
        let never = router("layout='secor'\ngranularity='hour'\ntimestamp_fields=['syncts']\nrecord_time='never'");
        let r = never.route(Some(EVENT.as_bytes()), Some(0), 7);
        assert_eq!((&*r.date, r.source), ("dt=2020-02-01/hr=00", DateSource::Field(0)));
        let r = never.route(Some(br#"{"eid":"X"}"#), Some(1_580_495_403_199), 8);
        assert_eq!((&*r.date, r.source), ("dt=1970-01-01/hr=00", DateSource::Invalid(InvalidReason::NoTimestamp)));
        let only = router("layout='secor'\ntimestamp_fields=['syncts']\nrecord_time='only'");
        let r = only.route(Some(b"not json"), Some(1_580_495_403_199 - 86_400_000), 9);
        assert_eq!((&*r.date, r.source), ("dt=2020-01-31", DateSource::RecordTime), "the record time, whatever the value");
        assert_eq!(only.route(Some(EVENT.as_bytes()), None, 9).source, DateSource::Invalid(InvalidReason::NoTimestamp));
    }

    /// SplitByFieldMessageParser: the field's value names the folder; a value that cannot name
    /// one safely, or none, is an invalid message.
    #[test]
    fn the_split_fields_value_names_the_folder() {
        let r = router("layout='secor'\ntimestamp_fields=['syncts']\nrecord_time='never'\nprefix_field='eid'\nprefix_as_value=true");
        assert_eq!(r.route(Some(EVENT.as_bytes()), None, 0).prefix.as_deref(), Some("IMPRESSION"));
        assert_eq!(r.route(Some(br#"{"eid":42,"syncts":1580495403199}"#), None, 0).prefix.as_deref(), Some("42"));
        for bad in [
            r#"{"syncts":1580495403199}"#,
            r#"{"eid":"a/b","syncts":1580495403199}"#,
            r#"{"eid":"_x","syncts":1580495403199}"#,
            r#"{"eid":"","syncts":1580495403199}"#,
            r#"{"eid":null,"syncts":1580495403199}"#,
        ] {
            let x = r.route(Some(bad.as_bytes()), None, 0);
            assert_eq!((x.prefix, x.source), (None, DateSource::Invalid(InvalidReason::NoTimestamp)), "{bad}");
        }
    }

    /// Secor's offset parsers: `offset=<bucket>` folders, below the record time's day for
    /// DailyOffsetMessageParser, whatever the message holds.
    #[test]
    fn offset_parsers_place_messages_by_offset() {
        let r = router("layout='secor'\noffset_buckets={per=1000}");
        for (offset, want) in [(0, "offset=0"), (999, "offset=0"), (1000, "offset=1000"), (123_456, "offset=123000")] {
            let x = r.route(Some(b"\xff not even utf-8"), None, offset);
            assert_eq!((&*x.date, x.source, x.to_error_path), (want, DateSource::Offset, false), "{offset}");
        }
        let daily = router("layout='secor'\noffset_buckets={per=1000,daily=true}");
        assert_eq!(&*daily.route(None, Some(1_580_495_403_199), 2500).date, "dt=2020-02-01/offset=2000");
        assert_eq!(&*daily.route(None, None, 2500).date, "dt=1970-01-01/offset=2000", "no record time: the invalid date's day");
    }

    /// A string its pattern cannot read is dated by the next rung, and the route says which
    /// field failed (the writer counts and reports it).
    #[test]
    fn unreadable_timestamp_strings_are_reported() {
        let r = router("timestamp_fields = ['@timestamp', 'syncts']\ntimestamp_input_pattern = '%d/%m/%Y'");
        let x = r.route(Some(br#"{"@timestamp":"2020-01-31T18:30:03Z","syncts":1580495403199}"#), None, 0);
        assert_eq!((&*x.date, x.source, x.unparsed_field), ("2020-02-01", DateSource::Field(1), Some(0)));
        let x = r.route(Some(br#"{"@timestamp":"31/01/2020"}"#), None, 0);
        assert_eq!((x.source, x.unparsed_field), (DateSource::Field(0), None));
        // No string at all: nothing to report. A number outside the window is a deliberate skip.
        let x = r.route(Some(br#"{"syncts":1580495403199}"#), None, 0);
        assert_eq!(x.unparsed_field, None);
        let x = r.route(Some(br#"{"@timestamp":"nope"}"#), Some(1_580_495_403_199), 0);
        assert_eq!((x.source, x.unparsed_field), (DateSource::RecordTime, Some(0)));
        let x = r.route(Some(br#"{"@timestamp":"nope"}"#), None, 0);
        assert_eq!((x.source, x.unparsed_field), (DateSource::Invalid(InvalidReason::NoTimestamp), Some(0)));
        assert_eq!(router("").route(Some(EVENT.as_bytes()), None, 0).unparsed_field, None, "Sunbird's events read fine");
    }

    /// The timestamp decisions of issue 13, each deliberate (docs: README, "Event date").
    #[test]
    fn timestamp_decisions() {
        let r = router(""); // dated in IST, as Sunbird does
        let rec = Some(1_580_495_403_199); // a usable record time: 2020-02-01 IST
        let route = |v: &str, rec: Option<i64>| r.route(Some(v.as_bytes()), rec, 0);
        // `@timestamp` of eight digits is a basic ISO date, not 1970-08-23 in epoch seconds.
        let x = route(r#"{"@timestamp":"20200131"}"#, None);
        assert_eq!((&*x.date, x.source), ("2020-01-31", DateSource::Field(1)));
        // A number too large to be a time (23 digits): the next rung, the record time.
        let x = route(r#"{"syncts":12345678901234567890123}"#, rec);
        assert_eq!((&*x.date, x.source), ("2020-02-01", DateSource::RecordTime));
        // `syncts: 0` is no time (before earliest_event_date): the next field, then the record.
        let x = route(r#"{"syncts":0,"@timestamp":"2020-02-03T00:00:00Z"}"#, rec);
        assert_eq!((&*x.date, x.source), ("2020-02-03", DateSource::Field(1)));
        let x = route(r#"{"syncts":0}"#, None);
        assert_eq!((&*x.date, x.source), ("1970-01-01", DateSource::Invalid(InvalidReason::NoTimestamp)), "counted as invalid");
        // A UTF-8 BOM before the JSON does not make it invalid.
        let x = route("\u{feff}{\"syncts\":1580495403199}", None);
        assert_eq!((&*x.date, x.source), ("2020-02-01", DateSource::Field(0)));
        // The year 3000 is outside the sanity window: the record time dates it.
        let x = route(r#"{"syncts":32503680000000}"#, rec);
        assert_eq!((&*x.date, x.source), ("2020-02-01", DateSource::RecordTime));
        // The window is configurable, inclusive, in the output zone.
        let narrow = router("earliest_event_date = '2020-02-01'\nlatest_event_date = '2020-02-01'");
        let x = narrow.route(Some(br#"{"syncts":1580495400000}"#), None, 0);
        assert_eq!((&*x.date, x.source), ("2020-02-01", DateSource::Field(0)));
        let x = narrow.route(Some(br#"{"syncts":1580495399999}"#), None, 0);
        assert_eq!(x.source, DateSource::Invalid(InvalidReason::NoTimestamp));
    }

    #[test]
    fn extract_finds_nested_and_top_level_fields() {
        let paths: Vec<Vec<String>> = ["syncts", "context.did", "context.pdata.id", "missing", "context.missing"]
            .iter()
            .map(|p| p.split('.').map(String::from).collect())
            .collect();
        let f = extract(EVENT, &paths).unwrap();
        assert_eq!(f[0], Some(FieldValue::Int(1580495403199)));
        assert_eq!(f[1], Some(FieldValue::Str("8b55".into())));
        assert_eq!(f[2], Some(FieldValue::Str("prod.sunbird.app".into())));
        assert_eq!(f[3], None);
        assert_eq!(f[4], None);
    }

    #[test]
    fn find_fields_stops_at_the_last_wanted_field() {
        let p: Vec<Vec<String>> = vec![vec!["context".into(), "did".into()]];
        // Everything after the key may be anything: it is not read.
        let f = find_fields(r#"{"context":{"did":"d1","x":1},"rest": not json at all"#, &p).unwrap();
        assert_eq!(f[0], Some(FieldValue::Str("d1".into())));
        let f = find_fields(r#"{"a":1}"#, &p).unwrap();
        assert_eq!(f[0], None);
        assert!(find_fields("garbage", &p).is_none());
    }

    #[test]
    fn extract_validates_the_whole_document() {
        let p = vec![vec!["a".to_string()]];
        assert!(extract(r#"{"a":1,"b":[1,2,{"c":"d"}]}"#, &p).is_ok());
        assert!(extract(r#"{"a":1,"b":[1,2,{"c":"d"}]"#, &p).is_err(), "truncated");
        assert!(extract(r#"{"a":1} trailing"#, &p).is_err());
        assert!(extract(r#"{"a":1,}"#, &p).is_err());
        assert!(extract("[1,2]", &p).unwrap()[0].is_none(), "valid JSON, not an object");
        assert!(extract(r#""just a string""#, &p).is_ok());
        assert_eq!(extract(r#"{"\u0061":5}"#, &p).unwrap()[0], Some(FieldValue::Int(5)), "escaped key");
        assert_eq!(extract(r#"{"a":5,"a":6}"#, &p).unwrap()[0], Some(FieldValue::Int(5)), "first wins");
    }

    #[test]
    fn is_json_validates_the_whole_text() {
        assert!(is_json(r#"{"a":[1,2,{"b":null}]}"#) && is_json("12") && is_json(r#""s""#));
        for bad in [r#"{"a": not json"#, "plain", "", r#"{"a":1} trailing"#, "{\"a\":\"\u{1}\"}"] {
            assert!(!is_json(bad), "{bad}");
        }
    }

    #[test]
    fn ladder_syncts_then_timestamp_then_record_time() {
        let r = router("");
        let route = r.route(Some(EVENT.as_bytes()), Some(0), 0);
        assert_eq!(&*route.date, "2020-02-01");
        assert_eq!(route.source, DateSource::Field(0));

        let ts_only = r#"{"eid":"LOG","@timestamp":"2020-01-31T18:30:03.199Z"}"#;
        let route = r.route(Some(ts_only.as_bytes()), Some(0), 0);
        assert_eq!(route.source, DateSource::Field(1));
        assert_eq!(&*route.date, "2020-02-01", "RFC 3339 read in full without an input pattern");

        let none = r#"{"eid":"LOG"}"#;
        let route = r.route(Some(none.as_bytes()), Some(1_580_495_403_199), 0);
        assert_eq!(route.source, DateSource::RecordTime);
        assert_eq!(&*route.date, "2020-02-01");

        let bad_field = r#"{"syncts":"soon","@timestamp":true}"#;
        let route = r.route(Some(bad_field.as_bytes()), Some(1_580_495_403_199), 0);
        assert_eq!(route.source, DateSource::RecordTime, "unusable values fall through the ladder");

        let route = r.route(Some(none.as_bytes()), None, 0);
        assert_eq!(route.source, DateSource::Invalid(InvalidReason::NoTimestamp));
        assert_eq!(&*route.date, "1970-01-01");
    }

    #[test]
    fn invalid_messages_go_to_invalid_date() {
        let r = router("");
        for (payload, reason) in [
            (Some(&b"not json at all"[..]), InvalidReason::NotJson),
            (Some(&b"{\"syncts\":1"[..]), InvalidReason::NotJson),
            (Some(&b"\xff\xfe{}"[..]), InvalidReason::NotUtf8),
            (Some(&b""[..]), InvalidReason::Empty),
            (None, InvalidReason::Empty),
        ] {
            let route = r.route(payload, Some(1_580_495_403_199), 0);
            assert_eq!(route.source, DateSource::Invalid(reason), "{payload:?}");
            assert_eq!(&*route.date, "1970-01-01");
            assert!(!route.to_error_path);
        }
        let r = router("error_path = 'errors/unique'");
        let route = r.route(Some(b"nope"), Some(0), 0);
        assert!(route.to_error_path);
    }

    /// Issue 28: a record backup dates what its value cannot date (tombstones, binary values)
    /// by the record time, so a date range finds it; it remembers where earlier releases put it.
    #[test]
    fn record_backups_date_undatable_values_by_the_record_time() {
        let r = router("format = 'record'\nerror_path = 'errors/unique'\nprefix_field = 'eid'\nprefix_map = { LOG = 'logs', DEFAULT = 'raw' }");
        // 2020-01-31T18:30:03.199Z is 2020-02-01 in IST.
        let at = Some(1_580_495_403_199);
        for (payload, reason) in [
            (Some(&b"not json at all"[..]), InvalidReason::NotJson),
            (Some(&b"\xff\xfe{}"[..]), InvalidReason::NotUtf8),
            (Some(&b""[..]), InvalidReason::Empty),
            (None, InvalidReason::Empty),
        ] {
            let route = r.route(payload, at, 0);
            assert_eq!(route.source, DateSource::RecordTimeInstead(reason), "{payload:?}");
            assert_eq!((&*route.date, route.to_error_path, route.prefix.as_deref()), ("2020-02-01", false, Some("raw")));
            let earlier = route.earlier.as_deref().expect("where earlier releases put it");
            assert_eq!((&*earlier.date, earlier.to_error_path, earlier.prefix.as_deref()), ("1970-01-01", true, None));
        }
        // No usable record time either (here: before earliest_event_date): the invalid bucket.
        let route = r.route(None, Some(0), 0);
        assert_eq!((route.source, &*route.date, route.to_error_path), (DateSource::Invalid(InvalidReason::Empty), "1970-01-01", true));
        assert!(route.earlier.is_none());
        let route = r.route(None, None, 0);
        assert_eq!(route.source, DateSource::Invalid(InvalidReason::Empty));
        // JSON without a usable time had the record time's chance already; datable values are
        // routed as in value backups.
        assert_eq!(r.route(Some(b"{}"), None, 0).source, DateSource::Invalid(InvalidReason::NoTimestamp));
        let x = r.route(Some(br#"{"eid":"LOG"}"#), at, 0);
        assert_eq!((x.source, x.prefix.as_deref(), x.earlier.is_none()), (DateSource::RecordTime, Some("logs"), true));
        // Value backups keep Secor's rule.
        let v = router("error_path = 'errors/unique'");
        let route = v.route(None, at, 0);
        assert_eq!((route.source, &*route.date, route.to_error_path), (DateSource::Invalid(InvalidReason::Empty), "1970-01-01", true));
    }

    #[test]
    fn denorm_prefix_routing() {
        let r = router("prefix_field = 'eid'\nprefix_map = { ME_WORKFLOW_SUMMARY = 'summary', DEFAULT = 'raw' }");
        let summary = r#"{"eid":"ME_WORKFLOW_SUMMARY","syncts":1580495403199}"#;
        assert_eq!(r.route(Some(summary.as_bytes()), None, 0).prefix.as_deref(), Some("summary"));
        assert_eq!(r.route(Some(EVENT.as_bytes()), None, 0).prefix.as_deref(), Some("raw"));
        let no_eid = r#"{"syncts":1580495403199}"#;
        assert_eq!(r.route(Some(no_eid.as_bytes()), None, 0).prefix.as_deref(), Some("raw"));
        assert_eq!(r.route(Some(b"garbage"), None, 0).prefix.as_deref(), Some("raw"), "invalid: DEFAULT prefix");
    }

    #[test]
    fn nested_timestamp_field() {
        let r = router("timestamp_fields = ['context.ts', 'syncts']");
        let e = r#"{"context":{"ts":"2020-01-31T18:29:59Z"},"syncts":1580495403199}"#;
        let route = r.route(Some(e.as_bytes()), None, 0);
        assert_eq!(route.source, DateSource::Field(0));
        assert_eq!(&*route.date, "2020-01-31");
    }

    #[test]
    fn daily_formats() {
        assert!(crate::event_date::is_daily_format("%Y-%m-%d"));
        assert!(crate::event_date::is_daily_format("dt=%Y%m%d"));
        assert!(crate::event_date::is_daily_format("%-d.%b.%Y"));
        assert!(!crate::event_date::is_daily_format("%Y-%m-%d-%H"));
        assert!(!crate::event_date::is_daily_format("%s"));
    }

    #[test]
    fn date_cache_agrees_with_the_formatter_around_midnight() {
        let r = router("");
        let rules = &r.rules;
        let midnight = 1_580_495_400_000i64; // IST midnight
                                             // Walk across two IST midnights in uneven steps, in both directions, and compare.
        let mut times: Vec<i64> = (-200..200).map(|i| midnight + i * 433_777).collect();
        times.extend((-50..50).map(|i| midnight + 86_400_000 + i * 7));
        let mut rev = times.clone();
        rev.reverse();
        times.extend(rev);
        for t in times {
            let e = format!(r#"{{"syncts":{t}}}"#);
            assert_eq!(&*r.route(Some(e.as_bytes()), None, 0).date, rules.format_date(t).unwrap(), "t={t}");
        }
    }
}
