//! Synthetic Sunbird telemetry (v3 envelope, ~1 KB) for the demo, the tests and the benchmark.

use std::fmt::Write;

/// Deterministic generator of telemetry events; the same seed gives the same events.
#[derive(Debug, Clone)]
pub struct TelemetryGen {
    state: u64,
    devices: u64,
    /// Range of `syncts` values, epoch ms.
    pub syncts_from: i64,
    pub syncts_to: i64,
}

const EIDS: [&str; 8] = ["IMPRESSION", "INTERACT", "START", "END", "LOG", "SEARCH", "ASSESS", "ME_WORKFLOW_SUMMARY"];

impl TelemetryGen {
    /// A generator over `devices` device ids with `syncts` in `[from, to)`.
    pub fn new(seed: u64, devices: u64, syncts_from: i64, syncts_to: i64) -> TelemetryGen {
        TelemetryGen { state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1, devices: devices.max(1), syncts_from, syncts_to }
    }

    fn next_u64(&mut self) -> u64 {
        // xorshift64*: fast, deterministic, good enough for test data.
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn hex(&mut self, out: &mut String, n: usize) {
        let mut left = n;
        while left > 0 {
            let v = self.next_u64();
            let take = left.min(16);
            let start = out.len();
            write!(out, "{v:016x}").unwrap();
            out.truncate(start + take);
            left -= take;
        }
    }

    /// The next event as (key = device id, JSON value, syncts).
    pub fn next_event(&mut self, seq: u64) -> (String, String, i64) {
        let mut did = String::with_capacity(40);
        let d = self.next_u64() % self.devices;
        write!(did, "{:040x}", (d as u128).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)).unwrap();
        did.truncate(40);
        let span = (self.syncts_to - self.syncts_from).max(1) as u64;
        let syncts = self.syncts_from + (self.next_u64() % span) as i64;
        let ets = syncts - (self.next_u64() % 60_000) as i64;
        let eid = EIDS[(self.next_u64() % EIDS.len() as u64) as usize];
        let mut mid = String::new();
        self.hex(&mut mid, 32);
        let mut sid = String::new();
        self.hex(&mut sid, 32);
        let mut actor = String::new();
        self.hex(&mut actor, 32);
        let mut obj = String::new();
        self.hex(&mut obj, 20);
        let ts = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(syncts).unwrap_or_default().format("%Y-%m-%dT%H:%M:%S%.3fZ");
        let json = format!(
            concat!(
                r#"{{"ver":"3.0","eid":"{eid}","ets":{ets},"mid":"{eid}:{mid}","actor":{{"type":"User","id":"{actor}"}},"#,
                r#""context":{{"channel":"505c7c48ac6dc1edc9b08f21db5a571d","pdata":{{"id":"prod.sunbird.app","pid":"sunbird.app","ver":"4.1.2"}},"#,
                r#""env":"home","sid":"{sid}","did":"{did}","cdata":[{{"type":"UserRole","id":"student"}}],"#,
                r#""rollup":{{"l1":"505c7c48ac6dc1edc9b08f21db5a571d"}}}},"object":{{"id":"do_{obj}","type":"Content","ver":"1","rollup":{{}}}},"#,
                r#""edata":{{"type":"view","pageid":"library","uri":"library","duration":{dur}.{durf},"seq":{seq}}},"tags":[],"#,
                r#""syncts":{syncts},"@timestamp":"{ts}","flags":{{"dd_processed":true}},"type":"events"}}"#
            ),
            eid = eid,
            ets = ets,
            mid = mid,
            actor = actor,
            sid = sid,
            did = did,
            obj = obj,
            dur = self.next_u64() % 100,
            durf = self.next_u64() % 10,
            seq = seq,
            syncts = syncts,
            ts = ts,
        );
        (did, json, syncts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_valid_deterministic_telemetry() {
        let mut a = TelemetryGen::new(7, 100, 1_580_400_000_000, 1_580_600_000_000);
        let mut b = TelemetryGen::new(7, 100, 1_580_400_000_000, 1_580_600_000_000);
        for i in 0..200 {
            let (k, v, s) = a.next_event(i);
            assert_eq!((k.clone(), v.clone(), s), b.next_event(i));
            let j: serde_json::Value = serde_json::from_str(&v).unwrap();
            assert_eq!(j["context"]["did"], k);
            assert_eq!(j["syncts"], s);
            assert!((1_580_400_000_000..1_580_600_000_000).contains(&s));
            assert_eq!(j["mid"].as_str().unwrap().len(), j["eid"].as_str().unwrap().len() + 33);
            assert!(v.len() > 700 && v.len() < 1100, "{}", v.len());
        }
    }
}
