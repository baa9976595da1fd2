//! JSON documents in the Variant binary encoding (parquet-format's `VariantEncoding.md`),
//! written directly from a parsed document.
//!
//! `parquet-variant`'s builder keeps a hashed field-name dictionary per builder, and a shredded
//! event needs several values sharing one metadata (the residual object, each field of another
//! type): building them with it cost more than everything else the writer does per event
//! (perf: malloc, `IndexMap` inserts and SipHash). Here a document's dictionary is built once,
//! sorted, and every value of the document is encoded against it. `parquet-variant` stays the
//! reference: the tests decode and validate everything written here with it.

use serde_json::{Map, Value};

/// A document's field names, sorted and unique: a field's id is its index.
pub(super) struct Dictionary<'a> {
    names: Vec<&'a str>,
}

impl<'a> Dictionary<'a> {
    /// Every field name of `doc`, at any depth (the shredding spec wants all of them, shredded
    /// or not, in the one metadata of the document's values).
    pub(super) fn of(doc: &'a Value) -> Dictionary<'a> {
        fn walk<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
            match v {
                Value::Object(m) => {
                    for (k, f) in m {
                        out.push(k);
                        walk(f, out);
                    }
                }
                Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
                _ => {}
            }
        }
        let mut names = Vec::new();
        walk(doc, &mut names);
        names.sort_unstable();
        names.dedup();
        Dictionary { names }
    }

    fn id(&self, name: &str) -> usize {
        self.names.binary_search(&name).expect("every field name of the document is in its dictionary")
    }

    /// The metadata: header (version 1, sorted), dictionary size, offsets, names.
    pub(super) fn metadata(&self) -> Vec<u8> {
        let total: usize = self.names.iter().map(|n| n.len()).sum();
        let size = width(total.max(self.names.len()));
        let mut out = Vec::with_capacity(1 + size * (self.names.len() + 2) + total);
        out.push(0x01 | 0x10 | (((size - 1) as u8) << 6));
        put(&mut out, self.names.len(), size);
        let mut at = 0;
        put(&mut out, 0, size);
        for n in &self.names {
            at += n.len();
            put(&mut out, at, size);
        }
        for n in &self.names {
            out.extend_from_slice(n.as_bytes());
        }
        out
    }
}

/// Bytes needed for an unsigned value up to `max` (1 to 4).
fn width(max: usize) -> usize {
    match max {
        0..=0xff => 1,
        0x100..=0xffff => 2,
        0x1_0000..=0xff_ffff => 3,
        _ => 4,
    }
}

/// `v` little-endian in `size` bytes.
fn put(out: &mut Vec<u8>, v: usize, size: usize) {
    out.extend_from_slice(&(v as u32).to_le_bytes()[..size]);
}

/// Appends `v`'s Variant value, its field names from `dict`.
pub(super) fn encode(v: &Value, dict: &Dictionary<'_>, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.push(0x00),
        Value::Bool(true) => out.push(1 << 2),
        Value::Bool(false) => out.push(2 << 2),
        Value::Number(n) => match n.as_i64() {
            // The narrowest integer that holds it, as Spark's parse_json does.
            Some(i) if i8::try_from(i).is_ok() => {
                out.push(3 << 2);
                out.push(i as i8 as u8);
            }
            Some(i) if i16::try_from(i).is_ok() => {
                out.push(4 << 2);
                out.extend_from_slice(&(i as i16).to_le_bytes());
            }
            Some(i) if i32::try_from(i).is_ok() => {
                out.push(5 << 2);
                out.extend_from_slice(&(i as i32).to_le_bytes());
            }
            Some(i) => {
                out.push(6 << 2);
                out.extend_from_slice(&i.to_le_bytes());
            }
            // Fractions, exponents and integers beyond i64: a double (the `value` column keeps
            // the exact text).
            None => {
                out.push(7 << 2);
                out.extend_from_slice(&n.as_f64().unwrap_or(f64::NAN).to_le_bytes());
            }
        },
        Value::String(s) => string(s, out),
        Value::Array(items) => {
            let start = out.len();
            let mut ends = Vec::with_capacity(items.len());
            for item in items {
                encode(item, dict, out);
                ends.push(out.len() - start);
            }
            let (n, total) = (items.len(), out.len() - start);
            let (large, size) = (n > 0xff, width(total));
            let mut head = Vec::with_capacity(5 + (n + 1) * size);
            head.push(((u8::from(large) << 2 | (size - 1) as u8) << 2) | 3);
            put(&mut head, n, if large { 4 } else { 1 });
            put(&mut head, 0, size);
            for e in ends {
                put(&mut head, e, size);
            }
            out.splice(start..start, head);
        }
        Value::Object(map) => {
            object(map, |_| false, dict, out);
        }
    }
}

fn string(s: &str, out: &mut Vec<u8>) {
    if s.len() < 64 {
        out.push(((s.len() as u8) << 2) | 1);
    } else {
        out.push(16 << 2);
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(s.as_bytes());
}

/// Appends the object of `map`'s fields that `skip` does not name; returns how many it holds.
/// Its fields are in name order (serde_json's map is ordered by key), as the encoding requires.
pub(super) fn object(map: &Map<String, Value>, skip: impl Fn(&str) -> bool, dict: &Dictionary<'_>, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    let mut fields: Vec<(usize, usize)> = Vec::with_capacity(map.len());
    for (k, f) in map.iter().filter(|(k, _)| !skip(k)) {
        fields.push((dict.id(k), out.len() - start));
        encode(f, dict, out);
    }
    let (n, total) = (fields.len(), out.len() - start);
    let large = n > 0xff;
    let id_size = width(fields.iter().map(|f| f.0).max().unwrap_or(0));
    let size = width(total);
    let mut head = Vec::with_capacity(5 + n * id_size + (n + 1) * size);
    head.push(((u8::from(large) << 4 | ((id_size - 1) as u8) << 2 | (size - 1) as u8) << 2) | 2);
    put(&mut head, n, if large { 4 } else { 1 });
    for (id, _) in &fields {
        put(&mut head, *id, id_size);
    }
    for (_, at) in &fields {
        put(&mut head, *at, size);
    }
    put(&mut head, total, size);
    out.splice(start..start, head);
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet_variant::{Variant, VariantMetadata};

    /// A decoded Variant as JSON, through `parquet-variant` (the reference reader).
    fn to_json(v: &Variant<'_, '_>) -> Value {
        match v {
            Variant::Null => Value::Null,
            Variant::BooleanTrue => Value::Bool(true),
            Variant::BooleanFalse => Value::Bool(false),
            Variant::Int8(i) => Value::from(*i),
            Variant::Int16(i) => Value::from(*i),
            Variant::Int32(i) => Value::from(*i),
            Variant::Int64(i) => Value::from(*i),
            Variant::Double(d) => serde_json::Number::from_f64(*d).map_or(Value::Null, Value::Number),
            Variant::String(s) => Value::from(*s),
            Variant::ShortString(s) => Value::from(s.as_str()),
            Variant::Object(o) => Value::Object(o.iter().map(|(k, f)| (k.to_string(), to_json(&f))).collect()),
            Variant::List(l) => Value::Array(l.iter().map(|i| to_json(&i)).collect()),
            other => panic!("not written here: {other:?}"),
        }
    }

    fn round_trip(doc: &Value) {
        let dict = Dictionary::of(doc);
        let metadata = dict.metadata();
        let mut value = Vec::new();
        encode(doc, &dict, &mut value);
        // try_new validates the whole encoding (headers, offsets, sorted dictionary and fields).
        let v = Variant::try_new(&metadata, &value).unwrap_or_else(|e| panic!("{doc}: {e}"));
        assert_eq!(to_json(&v), *doc);
        assert!(VariantMetadata::try_new(&metadata).unwrap().is_sorted());
    }

    #[test]
    fn documents_decode_to_themselves_in_the_reference_reader() {
        let long = "x".repeat(70);
        let docs = [
            serde_json::json!(null),
            serde_json::json!(true),
            serde_json::json!({"eid": "START", "ets": 1_700_000_000_000i64, "mid": "m1", "context": {"did": "d1", "pdata": {"id": "app"}},
                "edata": {"x": [1, 2.5, "s", null, true, false, -129, 40000, -3_000_000_000i64]}, "tags": []}),
            serde_json::json!({}),
            serde_json::json!([]),
            serde_json::json!([[], {}, [[1]], {"a": {"b": {"c": [long.clone()]}}}]),
            serde_json::json!({"a": 1, "b": long, "ü": "ß", "": "empty key", "A": 0}),
            serde_json::json!(1e300),
            serde_json::json!(-0.5),
            serde_json::json!(i64::MIN),
            serde_json::json!(i64::MAX),
            serde_json::json!("just a string"),
        ];
        for d in &docs {
            round_trip(d);
        }
    }

    #[test]
    fn wide_and_deep_documents_use_wider_ids_and_offsets() {
        // 300 fields: a large object (4-byte count) and two-byte field ids.
        let wide: Map<String, Value> = (0..300).map(|i| (format!("field-{i:04}"), Value::from(i))).collect();
        round_trip(&Value::Object(wide.clone()));
        // 300 elements: a large array; values over 64 KiB: three-byte offsets.
        let big = "y".repeat(70_000);
        round_trip(&Value::Array((0..300).map(|i| Value::from(i * 1000)).collect()));
        round_trip(&serde_json::json!({"big": big, "wide": wide, "list": [big.clone(), 1]}));
        let mut deep = serde_json::json!(1);
        for i in 0..60 {
            deep = if i % 2 == 0 { serde_json::json!({ "k": deep }) } else { serde_json::json!([deep]) };
        }
        round_trip(&deep);
    }

    #[test]
    fn an_object_without_some_fields_keeps_the_documents_metadata() {
        let doc = serde_json::json!({"eid": "E", "ets": 5, "rest": {"x": 1}});
        let dict = Dictionary::of(&doc);
        let metadata = dict.metadata();
        let mut value = Vec::new();
        let n = object(doc.as_object().unwrap(), |k| k == "eid" || k == "ets", &dict, &mut value);
        assert_eq!(n, 1);
        let v = Variant::try_new(&metadata, &value).unwrap();
        assert_eq!(to_json(&v), serde_json::json!({"rest": {"x": 1}}));
    }
}
