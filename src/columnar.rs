//! Parquet files (`file_format = "parquet"`): the sealing of a buffer of record envelope lines
//! into one Parquet file, and the reading of such a file back as the lines a text file of the
//! same messages would hold.
//!
//! Columns, one row per Kafka message, in this order:
//!
//! | column | Parquet type | |
//! |---|---|---|
//! | `partition` | `INT32` required | Kafka partition |
//! | `offset` | `INT64` required | Kafka offset |
//! | `timestamp` | `INT64 TIMESTAMP(MILLIS, UTC)` optional | record time |
//! | `key` | `BYTE_ARRAY` optional | message key, bytes as sent |
//! | `value` | `BYTE_ARRAY` optional | message value, bytes as sent (null: a tombstone) |
//! | `event` | group `VARIANT(1)` optional: `metadata`, `value` | the value as a Variant; null where the value is not JSON |
//!
//! With `format = "record"` (the whole record kept), two more, after `event`:
//!
//! | column | Parquet type | |
//! |---|---|---|
//! | `timestamp_type` | `BYTE_ARRAY STRING` optional | `create` or `log_append` (null: no timestamp) |
//! | `headers` | `LIST` required of `element { key: STRING required, value: BYTE_ARRAY optional }` | the record's headers, in order (names may repeat) |
//!
//! A record file reads back as the record envelope lines a text record file would hold.
//!
//! Two columns for the event, on purpose: a Variant does not keep a document's bytes (an
//! object's fields are stored sorted, numbers lose their text), while `verify` compares bytes
//! and `replay` must restore them. `value` keeps them; `event` is what queries read (Spark 4.1+:
//! `variant_get(event, '$.eid', 'string')`). See `docs/design/parquet-variant.md`.
//!
//! The writer buffers each message as its record envelope (`consumer::encode_record`, the same
//! deterministic line `format = "record"` stores) and [`encode`] transcodes the buffer at seal
//! time, as a SequenceFile is block-compressed then. The file depends only on those lines and
//! on constants here (writer properties, `created_by`), so a file rebuilt from the same
//! messages is byte-identical to its first upload, which the writer's recovery relies on.

use std::sync::Arc;

use bytes::Bytes;
use parquet::basic::{LogicalType, Repetition, TimeUnit, Type as Physical};
use parquet::column::writer::ColumnWriter;
use parquet::data_type::{ByteArray, ByteArrayType, Int32Type, Int64Type};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::{ColumnPath, Type};

use crate::config::{Compression, ShredType};

mod variant;

/// What every file names as its writer: the column layout's version, not the crate's, so that
/// a kbackup upgrade does not make a rebuilt file differ from its first upload.
pub const CREATED_BY: &str = "kbackup parquet layout 1";

/// A Parquet file starts and ends with this.
const MAGIC: &[u8; 4] = b"PAR1";

/// Input lines per row group, at most (the transcoding's working set is one row group's
/// columns, besides the buffer being sealed and the compressed output).
const ROW_GROUP_INPUT_BYTES: usize = 64 << 20;

/// What transcoding `buffered` bytes of envelope lines holds at most besides them: one row
/// group's columns (the values' bytes, their Variants and what is shredded of them, each
/// about the size of the lines), bounded by the row group size, and the compressed file.
pub fn working_set(buffered: u64) -> u64 {
    2 * buffered.min(ROW_GROUP_INPUT_BYTES as u64) + buffered / 4
}

/// Why a buffer could not be transcoded, or a stored file not read.
#[derive(Debug, thiserror::Error)]
pub enum ColumnarError {
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("line {line} of the buffer is not a record envelope: {error}")]
    Envelope { line: usize, error: crate::record::RecordError },
    #[error("not a kbackup Parquet file: {0}")]
    Layout(String),
}

/// True if `stored` is a Parquet file (its magic at both ends).
pub fn is_parquet(stored: &[u8]) -> bool {
    stored.len() >= 12 && stored.starts_with(MAGIC) && stored.ends_with(MAGIC)
}

/// The fields shredded out of the event Variant into typed columns (`parquet_shred`), as a tree
/// of object fields in name order: `context.did` is field `did` of field `context`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shred {
    fields: Vec<(String, ShredNode)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ShredNode {
    Leaf(ShredType),
    Object(Shred),
}

impl Shred {
    /// The tree of `paths` (dotted); an error names a path that is empty, has an empty part,
    /// or is both a field and an object of other shredded fields.
    pub fn new(paths: &std::collections::BTreeMap<String, ShredType>) -> Result<Shred, String> {
        if let Some(e) = crate::config::shred_paths_error(paths) {
            return Err(e);
        }
        let mut root = Shred::default();
        for (path, ty) in paths {
            let parts: Vec<&str> = path.split('.').collect();
            root.insert(&parts, *ty).map_err(|()| format!("`{path}` is shredded both as a field and as an object holding other shredded fields"))?;
        }
        Ok(root)
    }

    fn insert(&mut self, parts: &[&str], ty: ShredType) -> Result<(), ()> {
        let (first, rest) = parts.split_first().expect("a path has a part");
        let at = match self.fields.binary_search_by(|(n, _)| n.as_str().cmp(first)) {
            Ok(i) => i,
            Err(i) => {
                let node = if rest.is_empty() { ShredNode::Leaf(ty) } else { ShredNode::Object(Shred::default()) };
                self.fields.insert(i, (first.to_string(), node));
                i
            }
        };
        match (&mut self.fields[at].1, rest.is_empty()) {
            (ShredNode::Object(o), false) => o.insert(rest, ty),
            (ShredNode::Leaf(t), true) if *t == ty => Ok(()),
            _ => Err(()),
        }
    }

    fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The `typed_value` group of an object shredded into these fields.
    fn typed_value(&self) -> Result<Type, ColumnarError> {
        let mut fields = Vec::new();
        for (name, node) in &self.fields {
            let typed = match node {
                ShredNode::Leaf(ShredType::String) => leaf("typed_value", Physical::BYTE_ARRAY, Repetition::OPTIONAL, Some(LogicalType::String))?,
                ShredNode::Leaf(ShredType::Int64) => leaf("typed_value", Physical::INT64, Repetition::OPTIONAL, None)?,
                ShredNode::Object(o) => Arc::new(o.typed_value()?),
            };
            let group = Type::group_type_builder(name)
                .with_repetition(Repetition::REQUIRED)
                .with_fields(vec![leaf("value", Physical::BYTE_ARRAY, Repetition::OPTIONAL, None)?, typed])
                .build()?;
            fields.push(Arc::new(group));
        }
        Ok(Type::group_type_builder("typed_value").with_repetition(Repetition::OPTIONAL).with_fields(fields).build()?)
    }

    /// The leaf columns below this object's `typed_value`, in schema order.
    fn leaves(&self, out: &mut Vec<Leaf>) {
        for (_, node) in &self.fields {
            out.push(Leaf::bytes());
            match node {
                ShredNode::Leaf(ShredType::String) => out.push(Leaf::bytes()),
                ShredNode::Leaf(ShredType::Int64) => out.push(Leaf::Int64 { values: Vec::new(), defs: Vec::new() }),
                ShredNode::Object(o) => o.leaves(out),
            }
        }
    }
}

fn leaf(name: &str, physical: Physical, repetition: Repetition, logical: Option<LogicalType>) -> Result<Arc<Type>, ColumnarError> {
    Ok(Type::primitive_type_builder(name, physical).with_repetition(repetition).with_logical_type(logical).build().map(Arc::new)?)
}

/// The values of one leaf column of the event group, with their definition levels.
enum Leaf {
    Bytes { values: Vec<ByteArray>, defs: Vec<i16> },
    Int64 { values: Vec<i64>, defs: Vec<i16> },
}

impl Leaf {
    fn bytes() -> Leaf {
        Leaf::Bytes { values: Vec::new(), defs: Vec::new() }
    }

    /// An undefined entry, its nearest defined ancestor at `level`.
    fn absent(&mut self, level: i16) {
        match self {
            Leaf::Bytes { defs, .. } | Leaf::Int64 { defs, .. } => defs.push(level),
        }
    }

    fn push_bytes(&mut self, v: Vec<u8>, level: i16) {
        if let Leaf::Bytes { values, defs } = self {
            values.push(v.into());
            defs.push(level);
        }
    }

    fn push_int(&mut self, v: i64, level: i16) {
        if let Leaf::Int64 { values, defs } = self {
            values.push(v);
            defs.push(level);
        }
    }
}

/// One position of a shredded Variant: its Variant-encoded `value` and its `typed_value`.
#[derive(Debug, Default)]
struct Part {
    value: Option<Vec<u8>>,
    typed: Typed,
}

#[derive(Debug, Default)]
enum Typed {
    #[default]
    Null,
    Str(String),
    Int(i64),
    /// A shredded object's fields, in the tree's order.
    Object(Vec<Part>),
}

/// Encodes the values of one document against its dictionary, so that every value of the
/// document (the residual object, fields of another type) shares its one metadata.
struct Encoder<'a> {
    dict: variant::Dictionary<'a>,
}

impl<'a> Encoder<'a> {
    fn of(doc: &'a serde_json::Value) -> Encoder<'a> {
        Encoder { dict: variant::Dictionary::of(doc) }
    }

    fn metadata(&self) -> Vec<u8> {
        self.dict.metadata()
    }

    fn value(&self, v: &serde_json::Value) -> Vec<u8> {
        let mut out = Vec::new();
        variant::encode(v, &self.dict, &mut out);
        out
    }

    /// `v` shredded as `node` says.
    fn part(&self, v: &serde_json::Value, node: &ShredNode) -> Part {
        use serde_json::Value;
        match (node, v) {
            (ShredNode::Leaf(ShredType::String), Value::String(s)) => Part { value: None, typed: Typed::Str(s.clone()) },
            (ShredNode::Leaf(ShredType::Int64), Value::Number(n)) if n.as_i64().is_some() => {
                Part { value: None, typed: Typed::Int(n.as_i64().unwrap_or_default()) }
            }
            (ShredNode::Object(o), Value::Object(_)) => self.object(v, o),
            _ => Part { value: Some(self.value(v)), typed: Typed::Null },
        }
    }

    /// An object shredded into `shred`'s fields: the fields it has go to their columns, the
    /// rest to `value` (none left: `value` is null).
    fn object(&self, v: &serde_json::Value, shred: &Shred) -> Part {
        let serde_json::Value::Object(map) = v else {
            return Part { value: Some(self.value(v)), typed: Typed::Null };
        };
        let fields = shred.fields.iter().map(|(name, node)| map.get(name).map(|f| self.part(f, node)).unwrap_or_default()).collect();
        let mut rest = Vec::new();
        let shredded = |k: &str| shred.fields.binary_search_by(|(n, _)| n.as_str().cmp(k)).is_ok();
        let value = (variant::object(map, shredded, &self.dict, &mut rest) > 0).then_some(rest);
        Part { value, typed: Typed::Object(fields) }
    }
}

/// Writes a shredded position's columns (`value`, then `typed_value`'s) into `leaves` from
/// `at` on, taking the part's bytes; `part` is `None` when its parent is undefined (every
/// column gets `level`, the definition level of the nearest defined ancestor). Returns the next
/// leaf index.
fn push_part(node: &ShredNode, part: Option<Part>, leaves: &mut [Leaf], at: usize, level: i16) -> usize {
    let (value, typed) = match part {
        Some(p) => (p.value, Some(p.typed)),
        None => (None, None),
    };
    match value {
        Some(v) => leaves[at].push_bytes(v, level + 1),
        None => leaves[at].absent(level),
    }
    match (node, typed) {
        (ShredNode::Leaf(_), Some(Typed::Str(s))) => leaves[at + 1].push_bytes(s.into_bytes(), level + 1),
        (ShredNode::Leaf(_), Some(Typed::Int(i))) => leaves[at + 1].push_int(i, level + 1),
        (ShredNode::Leaf(_), _) => leaves[at + 1].absent(level),
        (ShredNode::Object(o), typed) => return push_object(o, typed, leaves, at + 1, level),
    }
    at + 2
}

/// The columns below an object's `typed_value` (defined at `level + 1` when `typed` is one).
fn push_object(o: &Shred, typed: Option<Typed>, leaves: &mut [Leaf], mut at: usize, level: i16) -> usize {
    let mut fields = match typed {
        Some(Typed::Object(fields)) => Some(fields.into_iter()),
        _ => None,
    };
    let inner = if fields.is_some() { level + 1 } else { level };
    for (_, node) in &o.fields {
        at = push_part(node, fields.as_mut().and_then(Iterator::next), leaves, at, inner);
    }
    at
}

/// The columns of one row group, gathered from envelope lines.
#[derive(Default)]
struct Columns {
    /// `format = "record"`: the timestamp type and the headers are columns too.
    records: bool,
    timestamp_type: Vec<ByteArray>,
    timestamp_type_def: Vec<i16>,
    /// The headers list's two leaves, with definition and repetition levels (one entry per
    /// header; an empty list is one undefined entry).
    header_key: Vec<ByteArray>,
    header_value: Vec<ByteArray>,
    header_key_def: Vec<i16>,
    header_value_def: Vec<i16>,
    header_rep: Vec<i16>,
    partition: Vec<i32>,
    offset: Vec<i64>,
    timestamp: Vec<i64>,
    timestamp_def: Vec<i16>,
    key: Vec<ByteArray>,
    key_def: Vec<i16>,
    value: Vec<ByteArray>,
    value_def: Vec<i16>,
    event_metadata: Vec<ByteArray>,
    event_def: Vec<i16>,
    /// The event group's columns after `metadata`: `value`, then `typed_value`'s leaves.
    event_leaves: Vec<Leaf>,
    /// Values that are not JSON, or JSON a Variant cannot hold: their `event` is null.
    not_json: u64,
}

impl Columns {
    fn new(shred: &Shred, records: bool) -> Columns {
        let mut event_leaves = vec![Leaf::bytes()];
        shred.leaves(&mut event_leaves);
        Columns { event_leaves, records, ..Columns::default() }
    }

    fn push(&mut self, r: crate::record::Record, shred: &Shred) {
        if self.records {
            let kind = r.timestamp.map(|(_, k)| ByteArray::from(k.as_str()));
            optional(&mut self.timestamp_type, &mut self.timestamp_type_def, kind);
            if r.headers.is_empty() {
                self.header_key_def.push(0);
                self.header_value_def.push(0);
                self.header_rep.push(0);
            }
            for (i, (name, value)) in r.headers.iter().enumerate() {
                self.header_rep.push(i16::from(i > 0));
                self.header_key.push(ByteArray::from(name.as_bytes().to_vec()));
                self.header_key_def.push(1);
                self.header_value_def.push(1 + i16::from(value.is_some()));
                self.header_value.extend(value.clone().map(ByteArray::from));
            }
        }
        self.partition.push(r.partition.unwrap_or(-1));
        self.offset.push(r.offset.unwrap_or(-1));
        optional(&mut self.timestamp, &mut self.timestamp_def, r.timestamp.map(|(t, _)| t));
        optional(&mut self.key, &mut self.key_def, r.key.map(ByteArray::from));
        // serde_json's map is ordered by key and keeps the last of duplicate keys: the same
        // document always gives the same Variant bytes.
        match r.value.as_deref().and_then(|v| serde_json::from_slice::<serde_json::Value>(v).ok()) {
            Some(doc) => {
                let enc = Encoder::of(&doc);
                self.event_metadata.push(enc.metadata().into());
                self.event_def.push(1);
                if shred.is_empty() {
                    // Unshredded: `value` is required and holds the whole document.
                    self.event_leaves[0].push_bytes(enc.value(&doc), 1);
                } else {
                    let part = enc.object(&doc, shred);
                    match part.value {
                        Some(v) => self.event_leaves[0].push_bytes(v, 2),
                        None => self.event_leaves[0].absent(1),
                    }
                    let end = push_object(shred, Some(part.typed), &mut self.event_leaves, 1, 1);
                    debug_assert_eq!(end, self.event_leaves.len());
                }
            }
            None => {
                self.not_json += u64::from(r.value.is_some());
                self.event_def.push(0);
                for l in &mut self.event_leaves {
                    l.absent(0);
                }
            }
        }
        optional(&mut self.value, &mut self.value_def, r.value.map(ByteArray::from));
    }

    fn rows(&self) -> usize {
        self.offset.len()
    }
}

fn optional<T>(values: &mut Vec<T>, defs: &mut Vec<i16>, v: Option<T>) {
    defs.push(i16::from(v.is_some()));
    values.extend(v);
}

fn schema(shred: &Shred, records: bool) -> Result<Type, ColumnarError> {
    // Unshredded, `value` holds every document whole (required); shredded, it holds what the
    // typed columns do not (optional).
    let mut event_fields = vec![leaf("metadata", Physical::BYTE_ARRAY, Repetition::REQUIRED, None)?];
    if shred.is_empty() {
        event_fields.push(leaf("value", Physical::BYTE_ARRAY, Repetition::REQUIRED, None)?);
    } else {
        event_fields.push(leaf("value", Physical::BYTE_ARRAY, Repetition::OPTIONAL, None)?);
        event_fields.push(Arc::new(shred.typed_value()?));
    }
    let event = Type::group_type_builder("event")
        .with_repetition(Repetition::OPTIONAL)
        .with_logical_type(Some(LogicalType::variant(Some(1))))
        .with_fields(event_fields)
        .build()?;
    let mut fields = vec![
        leaf("partition", Physical::INT32, Repetition::REQUIRED, None)?,
        leaf("offset", Physical::INT64, Repetition::REQUIRED, None)?,
        leaf("timestamp", Physical::INT64, Repetition::OPTIONAL, Some(LogicalType::timestamp(true, TimeUnit::MILLIS)))?,
        leaf("key", Physical::BYTE_ARRAY, Repetition::OPTIONAL, None)?,
        leaf("value", Physical::BYTE_ARRAY, Repetition::OPTIONAL, None)?,
        Arc::new(event),
    ];
    if records {
        // Parquet's three-level LIST (LogicalTypes.md): headers.list.element.{key, value}.
        let element = Type::group_type_builder("element")
            .with_repetition(Repetition::REQUIRED)
            .with_fields(vec![
                leaf("key", Physical::BYTE_ARRAY, Repetition::REQUIRED, Some(LogicalType::String))?,
                leaf("value", Physical::BYTE_ARRAY, Repetition::OPTIONAL, None)?,
            ])
            .build()?;
        let list = Type::group_type_builder("list").with_repetition(Repetition::REPEATED).with_fields(vec![Arc::new(element)]).build()?;
        let headers = Type::group_type_builder("headers")
            .with_repetition(Repetition::REQUIRED)
            .with_logical_type(Some(LogicalType::List))
            .with_fields(vec![Arc::new(list)])
            .build()?;
        fields.push(leaf("timestamp_type", Physical::BYTE_ARRAY, Repetition::OPTIONAL, Some(LogicalType::String))?);
        fields.push(Arc::new(headers));
    }
    Ok(Type::group_type_builder("kbackup").with_fields(fields).build()?)
}

fn properties(compression: Compression, level: u32) -> Result<WriterProperties, ColumnarError> {
    let codec = match compression {
        Compression::None => parquet::basic::Compression::UNCOMPRESSED,
        Compression::Snappy => parquet::basic::Compression::SNAPPY,
        Compression::Zstd => parquet::basic::Compression::ZSTD(parquet::basic::ZstdLevel::try_new(level.clamp(1, 22) as i32)?),
        // Refused by the config check (see `config::TopicConfig::compression`).
        Compression::Gzip => return Err(ColumnarError::Layout("gzip is not a codec kbackup writes Parquet with".into())),
    };
    let mut b = WriterProperties::builder().set_created_by(CREATED_BY.into()).set_compression(codec);
    // Values are unique per row: a dictionary only costs time, and min/max of whole events
    // prune nothing. Keys (device ids) repeat, and offsets and times are what readers filter on.
    for column in [["value"].as_slice(), &["event", "metadata"], &["event", "value"]] {
        let path = ColumnPath::new(column.iter().map(|s| s.to_string()).collect());
        b = b.set_column_dictionary_enabled(path.clone(), false).set_column_statistics_enabled(path, EnabledStatistics::None);
    }
    Ok(b.build())
}

/// What sealing a buffer gave: the file, and how many values are not JSON (their `event` is
/// null; the `value` column keeps them).
pub struct Sealed {
    pub file: Vec<u8>,
    pub not_json: u64,
}

/// Transcodes a buffer of record envelope lines (each followed by `\n`) into one Parquet file;
/// `records`: the file keeps whole records (`format = "record"`: timestamp type and headers).
pub fn encode(lines: &[u8], compression: Compression, level: u32, shred: &Shred, records: bool) -> Result<Sealed, ColumnarError> {
    let props = Arc::new(properties(compression, level)?);
    let mut w = SerializedFileWriter::new(Vec::new(), Arc::new(schema(shred, records)?), props)?;
    let mut not_json = 0;
    let mut rest = lines;
    let mut line_no = 0;
    // Row group by row group: at most ROW_GROUP_INPUT_BYTES of lines each (always at least one
    // row group, so an empty file still has its schema).
    loop {
        let mut cols = Columns::new(shred, records);
        let mut taken = 0;
        while taken < ROW_GROUP_INPUT_BYTES && !rest.is_empty() {
            let end = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
            let record = crate::record::decode(&rest[..end]).map_err(|error| ColumnarError::Envelope { line: line_no + 1, error })?;
            cols.push(record, shred);
            line_no += 1;
            taken += end + 1;
            rest = rest.get(end + 1..).unwrap_or_default();
        }
        not_json += cols.not_json;
        if cols.rows() > 0 || line_no == 0 {
            write_row_group(&mut w, &cols)?;
        }
        if rest.is_empty() {
            break;
        }
    }
    Ok(Sealed { file: w.into_inner()?, not_json })
}

fn write_row_group(w: &mut SerializedFileWriter<Vec<u8>>, c: &Columns) -> Result<(), ColumnarError> {
    let mut rg = w.next_row_group()?;
    let mut index: usize = 0;
    while let Some(mut col) = rg.next_column()? {
        let event_leaf = index.checked_sub(6).and_then(|i| c.event_leaves.get(i));
        // The record columns follow the event's.
        let record_column = index.checked_sub(6 + c.event_leaves.len()).filter(|_| c.records);
        match (record_column, col.untyped()) {
            (Some(0), ColumnWriter::ByteArrayColumnWriter(w)) => {
                w.write_batch(&c.timestamp_type, Some(&c.timestamp_type_def), None)?;
            }
            (Some(1), ColumnWriter::ByteArrayColumnWriter(w)) => {
                w.write_batch(&c.header_key, Some(&c.header_key_def), Some(&c.header_rep))?;
            }
            (Some(2), ColumnWriter::ByteArrayColumnWriter(w)) => {
                w.write_batch(&c.header_value, Some(&c.header_value_def), Some(&c.header_rep))?;
            }
            (Some(i), _) => return Err(ColumnarError::Layout(format!("record column {i} of the schema has no writer"))),
            (None, _) => {}
        }
        if record_column.is_some() {
            col.close()?;
            index += 1;
            continue;
        }
        match (index, col.untyped(), event_leaf) {
            (0, ColumnWriter::Int32ColumnWriter(w), _) => {
                w.write_batch(&c.partition, None, None)?;
            }
            (1, ColumnWriter::Int64ColumnWriter(w), _) => {
                w.write_batch(&c.offset, None, None)?;
            }
            (2, ColumnWriter::Int64ColumnWriter(w), _) => {
                w.write_batch(&c.timestamp, Some(&c.timestamp_def), None)?;
            }
            (3, ColumnWriter::ByteArrayColumnWriter(w), _) => {
                w.write_batch(&c.key, Some(&c.key_def), None)?;
            }
            (4, ColumnWriter::ByteArrayColumnWriter(w), _) => {
                w.write_batch(&c.value, Some(&c.value_def), None)?;
            }
            (5, ColumnWriter::ByteArrayColumnWriter(w), _) => {
                w.write_batch(&c.event_metadata, Some(&c.event_def), None)?;
            }
            (_, ColumnWriter::ByteArrayColumnWriter(w), Some(Leaf::Bytes { values, defs })) => {
                w.write_batch(&values[..], Some(&defs[..]), None)?;
            }
            (_, ColumnWriter::Int64ColumnWriter(w), Some(Leaf::Int64 { values, defs })) => {
                w.write_batch(&values[..], Some(&defs[..]), None)?;
            }
            (i, _, _) => return Err(ColumnarError::Layout(format!("column {i} of the schema has no writer"))),
        }
        col.close()?;
        index += 1;
    }
    rg.close()?;
    Ok(())
}

/// One message read back from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Option<i64>,
    pub key: Option<Vec<u8>>,
    /// `None`: a tombstone.
    pub value: Option<Vec<u8>>,
    /// A record file's (`format = "record"`): the timestamp's type and the headers.
    pub record: Option<RecordParts>,
}

/// A record's headers, in order: name, and value (`None`: a header without one).
pub type Headers = Vec<(String, Option<Vec<u8>>)>;

/// One leaf of a repeated column: its values, definition levels and repetition levels.
type Levels = (Vec<ByteArray>, Vec<i16>, Vec<i16>);

/// What a record file keeps of a message besides the columns every file has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordParts {
    pub timestamp_type: Option<crate::record::TimestampKind>,
    pub headers: Headers,
}

impl Row {
    /// The line the file's text counterpart would hold: for a record file, the record's
    /// envelope (as the writer encoded it); otherwise the value, raw line breaks as spaces (a
    /// tombstone gives an empty line).
    pub fn line(&self) -> Vec<u8> {
        let Some(parts) = &self.record else {
            return crate::record::value_line(self.value.as_deref());
        };
        let record = crate::record::Record {
            partition: Some(self.partition),
            offset: Some(self.offset),
            timestamp: self.timestamp.map(|t| (t, parts.timestamp_type.unwrap_or(crate::record::TimestampKind::Create))),
            key: self.key.clone(),
            headers: parts.headers.clone(),
            value: self.value.clone(),
        };
        let mut out = Vec::new();
        record.encode(&mut out);
        out
    }
}

/// The messages of a stored file, in order.
pub fn rows(stored: &[u8]) -> Result<Vec<Row>, ColumnarError> {
    let reader = SerializedFileReader::new(Bytes::copy_from_slice(stored))?;
    let columns = reader.metadata().file_metadata().schema_descr().columns().iter().map(|c| c.path().string()).collect::<Vec<_>>();
    let want = ["partition", "offset", "timestamp", "key", "value"];
    let index: Vec<usize> = want
        .iter()
        .map(|name| columns.iter().position(|c| c == name).ok_or_else(|| ColumnarError::Layout(format!("no column `{name}`"))))
        .collect::<Result<_, _>>()?;
    // A record file's columns: all three, or none.
    let find = |name: &str| columns.iter().position(|c| c == name);
    let record_columns = match [find("timestamp_type"), find("headers.list.element.key"), find("headers.list.element.value")] {
        [Some(a), Some(b), Some(c)] => Some([a, b, c]),
        [None, None, None] => None,
        _ => return Err(ColumnarError::Layout("some of the record columns (timestamp_type, headers) are missing".into())),
    };
    let mut out = Vec::new();
    for g in 0..reader.num_row_groups() {
        let rg = reader.get_row_group(g)?;
        let n = usize::try_from(rg.metadata().num_rows()).unwrap_or(0);
        let partition: Vec<i32> = read_required::<Int32Type>(rg.get_column_reader(index[0])?, n)?;
        let offset: Vec<i64> = read_required::<Int64Type>(rg.get_column_reader(index[1])?, n)?;
        let timestamp = read_optional::<Int64Type>(rg.get_column_reader(index[2])?, n)?;
        let key = read_optional::<ByteArrayType>(rg.get_column_reader(index[3])?, n)?;
        let value = read_optional::<ByteArrayType>(rg.get_column_reader(index[4])?, n)?;
        if [partition.len(), offset.len(), timestamp.len(), key.len(), value.len()].iter().any(|l| *l != n) {
            return Err(ColumnarError::Layout(format!("row group {g}: columns of unequal length")));
        }
        let mut records = match &record_columns {
            Some([kind, key, value]) => {
                let kinds = read_optional::<ByteArrayType>(rg.get_column_reader(*kind)?, n)?;
                let kinds = kinds.into_iter().map(|k| k.map(|k| timestamp_kind(k.data())).transpose()).collect::<Result<Vec<_>, _>>()?;
                let headers = read_headers(rg.get_column_reader(*key)?, rg.get_column_reader(*value)?, n)?;
                if kinds.len() != n || headers.len() != n {
                    return Err(ColumnarError::Layout(format!("row group {g}: record columns of unequal length")));
                }
                kinds.into_iter().zip(headers).map(|(timestamp_type, headers)| Some(RecordParts { timestamp_type, headers })).collect()
            }
            None => vec![None; n],
        }
        .into_iter();
        for ((((p, o), t), k), v) in partition.into_iter().zip(offset).zip(timestamp).zip(key).zip(value) {
            let record = records.next().flatten();
            out.push(Row { partition: p, offset: o, timestamp: t, key: k.map(|b| b.data().to_vec()), value: v.map(|b| b.data().to_vec()), record });
        }
    }
    Ok(out)
}

fn typed<T: parquet::data_type::DataType>(
    reader: parquet::column::reader::ColumnReader,
) -> Result<parquet::column::reader::ColumnReaderImpl<T>, ColumnarError> {
    Ok(parquet::column::reader::get_typed_column_reader::<T>(reader))
}

/// The values of `rows` rows of a column, with their definition and repetition levels where
/// asked for (a column that is optional, or inside a list).
fn read_column<T: parquet::data_type::DataType>(
    reader: parquet::column::reader::ColumnReader,
    rows: usize,
    mut defs: Option<&mut Vec<i16>>,
    mut reps: Option<&mut Vec<i16>>,
) -> Result<Vec<T::T>, ColumnarError> {
    let mut r = typed::<T>(reader)?;
    let mut values = Vec::with_capacity(rows);
    let mut read = 0;
    while read < rows {
        let (records, _, _) = r.read_records(rows - read, defs.as_deref_mut(), reps.as_deref_mut(), &mut values)?;
        if records == 0 {
            break;
        }
        read += records;
    }
    Ok(values)
}

fn read_required<T: parquet::data_type::DataType>(reader: parquet::column::reader::ColumnReader, rows: usize) -> Result<Vec<T::T>, ColumnarError> {
    read_column::<T>(reader, rows, None, None)
}

fn read_optional<T: parquet::data_type::DataType>(
    reader: parquet::column::reader::ColumnReader,
    rows: usize,
) -> Result<Vec<Option<T::T>>, ColumnarError> {
    let mut defs = Vec::with_capacity(rows);
    let mut values = read_column::<T>(reader, rows, Some(&mut defs), None)?.into_iter();
    defs.iter()
        .map(
            |d| if *d > 0 { values.next().map(Some).ok_or_else(|| ColumnarError::Layout("fewer values than defined rows".into())) } else { Ok(None) },
        )
        .collect()
}

fn timestamp_kind(s: &[u8]) -> Result<crate::record::TimestampKind, ColumnarError> {
    std::str::from_utf8(s)
        .ok()
        .and_then(crate::record::TimestampKind::from_name)
        .ok_or_else(|| ColumnarError::Layout(format!("timestamp_type {:?} is neither create nor log_append", String::from_utf8_lossy(s))))
}

/// The headers of `rows` rows from the list's two leaves (their levels: see `Columns::push`).
fn read_headers(
    keys: parquet::column::reader::ColumnReader,
    values: parquet::column::reader::ColumnReader,
    rows: usize,
) -> Result<Vec<Headers>, ColumnarError> {
    let levels = |reader| -> Result<Levels, ColumnarError> {
        let (mut defs, mut reps) = (Vec::new(), Vec::new());
        let values = read_column::<ByteArrayType>(reader, rows, Some(&mut defs), Some(&mut reps))?;
        Ok((values, defs, reps))
    };
    let (names, name_defs, reps) = levels(keys)?;
    let (values, value_defs, value_reps) = levels(values)?;
    if name_defs.len() != value_defs.len() || reps != value_reps {
        return Err(ColumnarError::Layout("the headers' key and value columns do not line up".into()));
    }
    let (mut names, mut values) = (names.into_iter(), values.into_iter());
    let mut out: Vec<Headers> = Vec::with_capacity(rows);
    for ((def, value_def), rep) in name_defs.into_iter().zip(value_defs).zip(reps) {
        if rep == 0 {
            out.push(Vec::new());
        }
        if def == 0 {
            continue;
        }
        let bad = || ColumnarError::Layout("fewer header values than defined entries".into());
        let name = names.next().ok_or_else(bad)?;
        let name = String::from_utf8(name.data().to_vec()).map_err(|_| ColumnarError::Layout("a header name is not UTF-8".into()))?;
        let value = if value_def == 2 { Some(values.next().ok_or_else(bad)?.data().to_vec()) } else { None };
        out.last_mut().ok_or_else(|| ColumnarError::Layout("a header continues no row".into()))?.push((name, value));
    }
    Ok(out)
}

/// The lines a text file of the same messages would hold (the values, or for a record file
/// the record envelopes), each without its `\n`: how every reader (`cat`, `verify`,
/// `replay`, `repartition`) reads a Parquet file.
pub fn lines(stored: &[u8]) -> Result<Vec<Vec<u8>>, ColumnarError> {
    Ok(rows(stored)?.iter().map(Row::line).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet_variant::Variant;

    fn envelope(partition: i32, offset: i64, key: Option<&[u8]>, value: Option<&[u8]>) -> Vec<u8> {
        let value_is_json = value.is_some_and(|v| std::str::from_utf8(v).is_ok_and(crate::routing::is_json));
        let view = crate::record::RecordView {
            partition: Some(partition),
            offset: Some(offset),
            timestamp: Some((1_700_000_000_000 + offset, crate::record::TimestampKind::Create)),
            key,
            value,
            value_is_json,
        };
        let mut out = Vec::new();
        crate::record::encode(&mut out, &view, std::iter::empty());
        out.push(b'\n');
        out
    }

    fn buffer(values: &[Option<&[u8]>]) -> Vec<u8> {
        values.iter().enumerate().flat_map(|(i, v)| envelope(3, 100 + i as i64, Some(b"did-1"), *v)).collect()
    }

    const ODD: &[Option<&[u8]>] = &[
        Some(br#"{"eid":"START","ets":1700000000000,"mid":"m1","context":{"did":"d1"},"edata":{"x":[1,2.5,"s",null,true]}}"#),
        Some(b"not json at all"),
        Some(b"\xff\xfe binary"),
        None,
        Some(b""),
        Some(b"{\"a\":\n1}"),
        Some(br#"{"big":18446744073709551615,"neg":-129,"exp":1e3,"dup":1,"dup":2}"#),
        Some(b"\"just a string\""),
    ];

    #[test]
    fn a_file_reads_back_as_its_messages_and_value_lines() {
        for c in [Compression::Zstd, Compression::Snappy, Compression::None] {
            let sealed = encode(&buffer(ODD), c, 3, &Shred::default(), false).unwrap();
            assert!(is_parquet(&sealed.file));
            // not JSON: the text, the binary, the empty value (the tombstone has no value at all).
            assert_eq!(sealed.not_json, 3);
            let rows = rows(&sealed.file).unwrap();
            assert_eq!(rows.len(), ODD.len());
            for (i, (row, v)) in rows.iter().zip(ODD).enumerate() {
                assert_eq!((row.partition, row.offset, row.timestamp), (3, 100 + i as i64, Some(1_700_000_000_100 + i as i64)));
                assert_eq!(row.key.as_deref(), Some(&b"did-1"[..]));
                assert_eq!(row.value.as_deref(), *v);
            }
            let lines = lines(&sealed.file).unwrap();
            assert_eq!(lines[5], b"{\"a\": 1}");
            assert_eq!(lines[3], b"");
        }
    }

    #[test]
    fn a_record_file_reads_back_as_the_record_lines_it_was_sealed_from() {
        use crate::record::{RecordView, TimestampKind};
        type Case<'a> = (Option<(i64, TimestampKind)>, Vec<(&'a str, Option<&'a [u8]>)>, Option<&'a [u8]>);
        let cases: Vec<Case> = vec![
            (Some((1_700_000_000_000, TimestampKind::Create)), vec![], Some(br#"{"eid":"START","mid":"m1"}"#)),
            (
                Some((1_700_000_000_001, TimestampKind::LogAppend)),
                vec![("trace", Some(b"abc")), ("empty", None), ("trace", Some(b"\xff"))],
                Some(b"not json"),
            ),
            (None, vec![("only", Some(b""))], None),
            (Some((5, TimestampKind::Create)), vec![], Some(b"\xff\xfe")),
            (Some((6, TimestampKind::Create)), vec![("k", None)], Some(b"{\"a\":\n1}")),
        ];
        let mut buffer = Vec::new();
        let mut want = Vec::new();
        for (i, (timestamp, headers, value)) in cases.iter().enumerate() {
            let value_is_json = value.is_some_and(|v| std::str::from_utf8(v).is_ok_and(crate::routing::is_json));
            let view =
                RecordView { partition: Some(2), offset: Some(40 + i as i64), timestamp: *timestamp, key: Some(b"k1"), value: *value, value_is_json };
            let mut line = Vec::new();
            crate::record::encode(&mut line, &view, headers.iter().copied());
            buffer.extend_from_slice(&line);
            buffer.push(b'\n');
            want.push(line);
        }
        for shred in [Shred::default(), Shred::new(&[("eid".to_string(), ShredType::String)].into()).unwrap()] {
            let sealed = encode(&buffer, Compression::Zstd, 3, &shred, true).unwrap();
            assert_eq!(lines(&sealed.file).unwrap(), want, "byte for byte the record lines");
            let rows = rows(&sealed.file).unwrap();
            assert_eq!(rows[1].record.as_ref().unwrap().headers.len(), 3);
            assert_eq!(rows[2].record.as_ref().unwrap().timestamp_type, None);
            // The columns Spark sees: a list of (key, value) structs.
            let (defs, keys) = column::<ByteArrayType>(&sealed.file, "headers.list.element.key");
            assert_eq!(defs, [0, 1, 1, 1, 1, 0, 1]);
            assert_eq!(keys.iter().map(|k| k.data()).collect::<Vec<_>>(), [&b"trace"[..], b"empty", b"trace", b"only", b"k"]);
            let schema = SerializedFileReader::new(Bytes::from(sealed.file)).unwrap().metadata().file_metadata().schema().clone();
            let headers = schema.get_fields().iter().find(|f| f.name() == "headers").unwrap();
            assert_eq!(headers.get_basic_info().logical_type_ref(), Some(&LogicalType::List));
        }
        // A value file has neither column, and reads back as values.
        let plain = encode(&buffer, Compression::Zstd, 3, &Shred::default(), false).unwrap().file;
        assert!(rows(&plain).unwrap().iter().all(|r| r.record.is_none()));
        assert_eq!(lines(&plain).unwrap()[1], b"not json");
    }

    #[test]
    fn sealing_is_deterministic_and_names_no_crate_version() {
        let a = encode(&buffer(ODD), Compression::Zstd, 3, &Shred::default(), false).unwrap().file;
        let b = encode(&buffer(ODD), Compression::Zstd, 3, &Shred::default(), false).unwrap().file;
        assert_eq!(a, b);
        let footer = SerializedFileReader::new(Bytes::from(a)).unwrap();
        assert_eq!(footer.metadata().file_metadata().created_by(), Some(CREATED_BY));
    }

    #[test]
    fn the_event_column_is_a_variant_of_spec_version_one() {
        let file = encode(&buffer(ODD), Compression::Zstd, 3, &Shred::default(), false).unwrap().file;
        let r = SerializedFileReader::new(Bytes::from(file)).unwrap();
        let schema = r.metadata().file_metadata().schema();
        let event = schema.get_fields().iter().find(|f| f.name() == "event").unwrap();
        // Spark 4.1 refuses the annotation without its version (VARIANT(0)).
        assert_eq!(event.get_basic_info().logical_type_ref(), Some(&LogicalType::variant(Some(1))));
        // The first event decodes to the same document.
        let rg = r.get_row_group(0).unwrap();
        let metadata = read_optional::<ByteArrayType>(rg.get_column_reader(5).unwrap(), ODD.len()).unwrap();
        let value = read_optional::<ByteArrayType>(rg.get_column_reader(6).unwrap(), ODD.len()).unwrap();
        let (m, v) = (metadata[0].as_ref().unwrap(), value[0].as_ref().unwrap());
        let variant = Variant::new(m.data(), v.data());
        let obj = variant.as_object().unwrap();
        assert_eq!(obj.get("eid"), Some(Variant::from("START")));
        assert_eq!(obj.get("ets"), Some(Variant::from(1_700_000_000_000i64)));
        assert_eq!(obj.get("context").unwrap().as_object().unwrap().get("did"), Some(Variant::from("d1")));
        // The rows that are not JSON have no event.
        assert!(metadata[1].is_none() && metadata[2].is_none() && metadata[3].is_none() && metadata[4].is_none());
        assert!(metadata[7].is_some());
    }

    /// A leaf column by its dotted path: definition levels, and the values of defined entries.
    fn column<T: parquet::data_type::DataType>(file: &[u8], path: &str) -> (Vec<i16>, Vec<T::T>) {
        let r = SerializedFileReader::new(Bytes::copy_from_slice(file)).unwrap();
        let columns = r.metadata().file_metadata().schema_descr().columns().to_vec();
        let i = columns.iter().position(|c| c.path().string() == path).unwrap_or_else(|| panic!("no column {path}"));
        let rg = r.get_row_group(0).unwrap();
        let mut reader = typed::<T>(rg.get_column_reader(i).unwrap()).unwrap();
        let (mut defs, mut reps, mut values) = (Vec::new(), Vec::new(), Vec::new());
        let repeated = columns[i].max_rep_level() > 0;
        reader.read_records(1000, Some(&mut defs), repeated.then_some(&mut reps), &mut values).unwrap();
        (defs, values)
    }

    fn json_of(metadata: &[u8], value: &[u8]) -> String {
        let v = Variant::new(metadata, value);
        let mut out = String::new();
        write_json(&v, &mut out);
        out
    }

    /// Enough of Variant-to-JSON for these tests (objects, strings, integers, null).
    fn write_json(v: &Variant<'_, '_>, out: &mut String) {
        match v {
            Variant::Object(o) => {
                out.push('{');
                for (i, (k, f)) in o.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&format!("{k:?}:"));
                    write_json(&f, out);
                }
                out.push('}');
            }
            Variant::Null => out.push_str("null"),
            other => match (other.as_string(), other.as_int64()) {
                (Some(s), _) => out.push_str(&format!("{s:?}")),
                (_, Some(i)) => out.push_str(&i.to_string()),
                _ => out.push_str(&format!("{other:?}")),
            },
        }
    }

    /// The shredding spec's cases (parquet-format's VariantShredding.md, "Objects"): present
    /// and of the type, present of another type, present and null, missing, nested, partially
    /// shredded, not an object, not JSON.
    #[test]
    fn shredded_fields_follow_the_variant_shredding_spec() {
        let paths: std::collections::BTreeMap<String, ShredType> =
            [("eid", ShredType::String), ("ets", ShredType::Int64), ("context.did", ShredType::String)]
                .into_iter()
                .map(|(p, t)| (p.to_string(), t))
                .collect();
        let shred = Shred::new(&paths).unwrap();
        let docs: &[Option<&[u8]>] = &[
            Some(br#"{"eid":"START","ets":1700000000000,"context":{"did":"d1","x":1},"y":2}"#),
            Some(br#"{"eid":5,"ets":"soon"}"#),
            Some(br#"{"eid":null,"context":"flat"}"#),
            Some(br#"{}"#),
            Some(br#""just a string""#),
            Some(b"not json"),
        ];
        let file = encode(&buffer(docs), Compression::Zstd, 1, &shred, false).unwrap().file;
        // Readers see the same messages.
        assert_eq!(
            rows(&file).unwrap().iter().map(|r| r.value.clone()).collect::<Vec<_>>(),
            docs.iter().map(|d| d.map(<[u8]>::to_vec)).collect::<Vec<_>>()
        );
        let (_, metadata) = column::<ByteArrayType>(&file, "event.metadata");
        let meta = |row: usize| metadata[row].data().to_vec();
        // event.value: the fields not shredded (none left: null), or the whole non-object.
        let (defs, values) = column::<ByteArrayType>(&file, "event.value");
        assert_eq!(defs, [2, 1, 1, 1, 2, 0]);
        assert_eq!(json_of(&meta(0), values[0].data()), r#"{"y":2}"#);
        assert_eq!(json_of(&meta(4), values[1].data()), r#""just a string""#);
        // eid: typed where it is a string; another type, or null, in its value.
        let (defs, values) = column::<ByteArrayType>(&file, "event.typed_value.eid.typed_value");
        assert_eq!(defs, [3, 2, 2, 2, 1, 0]);
        assert_eq!(values[0].data(), b"START");
        let (defs, values) = column::<ByteArrayType>(&file, "event.typed_value.eid.value");
        assert_eq!(defs, [2, 3, 3, 2, 1, 0], "missing (row 3) is null in both columns; present and null is a Variant null");
        assert_eq!(json_of(&meta(1), values[0].data()), "5");
        assert_eq!(json_of(&meta(2), values[1].data()), "null");
        let (defs, values) = column::<Int64Type>(&file, "event.typed_value.ets.typed_value");
        assert_eq!((defs, values), (vec![3, 2, 2, 2, 1, 0], vec![1_700_000_000_000]));
        // context.did: nested one level deeper; context not an object keeps it in its value.
        let (defs, values) = column::<ByteArrayType>(&file, "event.typed_value.context.typed_value.did.typed_value");
        assert_eq!(defs, [4, 2, 2, 2, 1, 0]);
        assert_eq!(values[0].data(), b"d1");
        let (defs, values) = column::<ByteArrayType>(&file, "event.typed_value.context.value");
        assert_eq!(defs, [3, 2, 3, 2, 1, 0]);
        assert_eq!(json_of(&meta(0), values[0].data()), r#"{"x":1}"#);
        assert_eq!(json_of(&meta(2), values[1].data()), r#""flat""#);
        // Every field name is in the metadata, shredded or not.
        let first = meta(0);
        let m = parquet_variant::VariantMetadata::new(&first);
        let names: Vec<&str> = m.iter().collect();
        assert_eq!(names, ["context", "did", "eid", "ets", "x", "y"]);
    }

    #[test]
    fn shred_paths_that_conflict_or_are_empty_are_refused() {
        let of = |p: &[(&str, ShredType)]| Shred::new(&p.iter().map(|(p, t)| (p.to_string(), *t)).collect());
        assert!(of(&[("context", ShredType::String), ("context.did", ShredType::String)]).is_err());
        assert!(of(&[("a..b", ShredType::String)]).is_err());
        assert!(of(&[("", ShredType::Int64)]).is_err());
        assert!(of(&[("a.b", ShredType::String), ("a.c", ShredType::Int64), ("d", ShredType::Int64)]).is_ok());
    }

    #[test]
    fn large_buffers_span_row_groups_in_order() {
        let big = vec![b'x'; 1 << 20];
        let value = format!("\"{}\"", std::str::from_utf8(&big).unwrap());
        let values: Vec<Option<&[u8]>> = (0..80).map(|_| Some(value.as_bytes())).collect();
        let file = encode(&buffer(&values), Compression::Zstd, 1, &Shred::default(), false).unwrap().file;
        assert!(SerializedFileReader::new(Bytes::from(file.clone())).unwrap().num_row_groups() >= 2);
        let rows = rows(&file).unwrap();
        assert_eq!(rows.iter().map(|r| r.offset).collect::<Vec<_>>(), (100..180).collect::<Vec<_>>());
    }

    #[test]
    fn an_empty_buffer_is_a_valid_empty_file() {
        let file = encode(b"", Compression::Zstd, 1, &Shred::default(), false).unwrap().file;
        assert!(is_parquet(&file));
        assert!(rows(&file).unwrap().is_empty());
    }

    #[test]
    fn damaged_files_are_errors_not_panics() {
        let file = encode(&buffer(ODD), Compression::Zstd, 3, &Shred::default(), false).unwrap().file;
        for cut in [0, 4, 12, file.len() / 2, file.len() - 9, file.len() - 1] {
            assert!(rows(&file[..cut]).is_err(), "cut at {cut}");
        }
        let mut flipped = file.clone();
        let mid = flipped.len() / 3;
        flipped[mid] ^= 0xff;
        let _ = rows(&flipped);
    }
}
