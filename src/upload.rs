//! Uploading sealed files: compression on the blocking pool, then a conditional PUT
//! (`If-None-Match: *`) retried with exponential backoff and jitter until it succeeds.
//!
//! A file that keeps failing is never given up on by itself: it holds back its partition's
//! commit, and the writer pauses consumption when the memory budget fills. Conditional writes
//! make every retry safe: if an earlier attempt did land (the response was lost), the blob is
//! there already and its content is compared instead of being written twice.

use std::io::Read;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;

use crate::health::Health;
use crate::seal;

/// How an existing blob under the same name is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// A new file: an existing blob is ours only if its events are identical, else a conflict.
    Compare,
    /// A file rebuilt under a recorded name: an existing blob is the earlier upload of it if
    /// its events end with ours (retention may have deleted the first few before the rebuild);
    /// anything else under that name is a conflict.
    Rebuilt,
}

/// A sealed file on its way to storage.
#[derive(Debug)]
pub struct UploadJob {
    pub id: u64,
    pub key: String,
    /// For metrics labels.
    pub topic: String,
    pub data: crate::buffer::Memory,
    /// How the file is encoded (shared by the topic's jobs).
    pub sealing: Arc<seal::Sealing>,
    pub existing: Existing,
}

/// What happened to an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Written now.
    Stored,
    /// Already there with the same events (an earlier attempt or an earlier owner wrote it).
    AlreadyThere,
    /// Another blob with different content has this name; the file needs a new name.
    Conflict,
}

/// The report the writer gets for each job.
#[derive(Debug)]
pub struct UploadDone {
    pub id: u64,
    pub outcome: Outcome,
    pub stored_bytes: u64,
    pub attempts: u32,
    pub elapsed: Duration,
}

/// Backoff between attempts: 200 ms doubling to 30 s, with jitter, without limit.
pub fn backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(30))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
}

/// Runs upload jobs on a tokio runtime, at most `concurrency` at once.
#[derive(Clone)]
pub struct Uploader {
    store: Arc<dyn ObjectStore>,
    rt: Handle,
    permits: Arc<Semaphore>,
    done: Sender<UploadDone>,
    health: Arc<Health>,
}

impl Uploader {
    /// An uploader reporting each finished file on `done`.
    pub fn new(store: Arc<dyn ObjectStore>, rt: Handle, concurrency: usize, done: Sender<UploadDone>, health: Arc<Health>) -> Uploader {
        Uploader { store, rt, permits: Arc::new(Semaphore::new(concurrency)), done, health }
    }

    /// Starts uploading a job; its completion arrives on the `done` channel.
    pub fn submit(&self, job: UploadJob) {
        let this = self.clone();
        self.rt.spawn(async move {
            let _permit = this.permits.clone().acquire_owned().await.expect("semaphore is never closed");
            let started = Instant::now();
            let UploadJob { id, key, topic, data, sealing, existing } = job;
            let sealed = tokio::task::spawn_blocking(move || seal::encode_file(data, &sealing)).await.expect("compression does not panic");
            if sealed.without_variant > 0 {
                metrics::counter!(crate::metrics::PARQUET_EVENTS_WITHOUT_VARIANT, "topic" => topic.clone()).increment(sealed.without_variant);
            }
            let body = sealed.body;
            let stored_bytes = body.len() as u64;
            let retries = metrics::counter!(crate::metrics::UPLOAD_RETRIES, "topic" => topic);
            let health = this.health.clone();
            let (outcome, attempts) = put_new(this.store.as_ref(), &key, body, existing, |ok| {
                health.upload_attempt(ok);
                if !ok {
                    retries.increment(1);
                }
            })
            .await;
            // The receiver is gone only when the writer has exited; nothing is left to tell.
            let _ = this.done.send(UploadDone { id, outcome, stored_bytes, attempts, elapsed: started.elapsed() });
        });
    }
}

/// Writes `body` at `key` unless a blob is there, retrying until there is an answer.
/// `attempt(ok)` is told the result of every attempt.
pub async fn put_new(store: &dyn ObjectStore, key: &str, body: Bytes, existing: Existing, attempt: impl Fn(bool)) -> (Outcome, u32) {
    let path = ObjectPath::from(key);
    let payload = PutPayload::from(body);
    let mut attempts = 0u32;
    let op = || {
        attempts += 1;
        let opts = PutOptions { mode: put_mode(), ..Default::default() };
        let (path, payload) = (&path, payload.clone());
        async move {
            match store.put_opts(path, payload.clone(), opts).await {
                Ok(_) => Ok(Outcome::Stored),
                Err(object_store::Error::AlreadyExists { .. }) => {
                    let theirs = store.get(path).await?.bytes().await?;
                    let ours: Vec<u8> = payload.iter().flat_map(|b| b.iter().copied()).collect();
                    Ok(when_taken(existing, key, &theirs, &ours))
                }
                Err(e) => Err(e),
            }
        }
    };
    let outcome = op
        .retry(backoff())
        .sleep(tokio::time::sleep)
        .notify(|e: &object_store::Error, wait: Duration| {
            attempt(false);
            tracing::warn!(key, error = %e, retry_in_ms = wait.as_millis() as u64, "upload failed; retrying");
        })
        .await
        .expect("retries without a limit only return on success");
    attempt(true);
    (outcome, attempts)
}

/// How every upload writes: create only if absent (`If-None-Match: *`), never overwrite.
pub(crate) fn put_mode() -> PutMode {
    if crate::sabotage::on(crate::sabotage::Rule::UnconditionalPut) {
        return PutMode::Overwrite;
    }
    PutMode::Create
}

/// What the create-only probe proved, and what it cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateOnlyProbe {
    /// Requests made (two creates, a read, a delete).
    pub requests: u32,
    pub elapsed: Duration,
}

/// Why the probe did not prove create-only writes.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The store accepted a second create-only write of one name: it overwrites.
    #[error("a second create-only write of {key} was accepted{replaced}: the store does not honour conditional creates (If-None-Match: * / x-goog-if-generation-match: 0)")]
    Overwrites { key: String, replaced: &'static str },
    /// The store could not be asked (unreachable, refused, unsupported).
    #[error("{op} {key}: {message}")]
    Failed { op: &'static str, key: String, message: String },
}

/// Proves, before anything is consumed, the one property the exactly-once protocol rests on:
/// a create-only write of a name that exists is refused. Writes a probe object the way uploads
/// are written, writes it again with other content, requires "already exists", reads it back
/// (still the first content) and deletes it. Four requests, once per start.
pub async fn probe_create_only(store: &dyn ObjectStore) -> Result<CreateOnlyProbe, ProbeError> {
    // A passing fault (a 500 after object_store's own retries) is no verdict: try again with a
    // fresh name, a few times. A store that overwrites is a verdict at once.
    let mut attempt = 0;
    loop {
        attempt += 1;
        match probe_once(store).await {
            Err(ProbeError::Failed { .. }) if attempt < 3 => tokio::time::sleep(Duration::from_millis(500 * attempt)).await,
            outcome => return outcome,
        }
    }
}

const FIRST: &[u8] = b"kbackup create-only probe: first";

async fn probe_once(store: &dyn ObjectStore) -> Result<CreateOnlyProbe, ProbeError> {
    let started = Instant::now();
    let key = format!("_kbackup/create-only-probe-{:016x}", rand::random::<u64>());
    let path = ObjectPath::from(key.as_str());
    let failed = |op: &'static str, key: &str| {
        let key = key.to_string();
        move |e: object_store::Error| ProbeError::Failed { op, key, message: e.to_string() }
    };
    let read = || async { store.get(&path).await.map_err(failed("reading", &key))?.bytes().await.map_err(failed("reading", &key)) };
    let create = || PutOptions { mode: put_mode(), ..Default::default() };
    match store.put_opts(&path, PutPayload::from_static(FIRST), create()).await {
        Ok(_) => {}
        // Our own first attempt landed and its answer was lost: the retry found it.
        Err(object_store::Error::AlreadyExists { .. }) if &read().await?[..] == FIRST => {}
        Err(e) => return Err(failed("writing", &key)(e)),
    }
    let second = store.put_opts(&path, PutPayload::from_static(b"kbackup create-only probe: second"), create()).await;
    let outcome = match second {
        // Refused, as it must be; and the first content is what is there.
        Err(object_store::Error::AlreadyExists { .. }) => match &read().await?[..] {
            FIRST => Ok(CreateOnlyProbe { requests: 4, elapsed: started.elapsed() }),
            _ => Err(ProbeError::Overwrites { key: key.clone(), replaced: " (refused, yet the content changed)" }),
        },
        Ok(_) => {
            let replaced = if &read().await?[..] == FIRST { " (it said written)" } else { " and replaced the first" };
            Err(ProbeError::Overwrites { key: key.clone(), replaced })
        }
        Err(e) => Err(failed("writing again", &key)(e)),
    };
    // Best effort: a probe left behind is a few bytes under `_kbackup/`, which no reader reads.
    if let Err(e) = store.delete(&path).await {
        tracing::warn!(key, error = %e, "could not delete the create-only probe");
    }
    outcome
}

/// What a user is told when the probe finds an overwriting store (`check`, and `run`'s exit 2).
pub fn overwriting_store_message(describe: &str, e: &ProbeError) -> String {
    format!(
        "storage {describe}: {e}. kbackup's exactly-once uploads rest on create-only writes: on this store a writer that lost its partitions (a zombie) could replace a file another writer uploaded, and the events only that file held would be lost. Use a store that honours conditional writes, or set storage.accept_overwriting_store = true to run anyway (docs/exactly-once.md, \"Stores that overwrite\")"
    )
}

/// What an upload's outcome is when its name is already taken by `theirs`.
pub(crate) fn when_taken(existing: Existing, key: &str, theirs: &[u8], ours: &[u8]) -> Outcome {
    let same = match existing {
        Existing::Compare => same_events(key, theirs, ours),
        Existing::Rebuilt => crate::sabotage::on(crate::sabotage::Rule::TrustRecordedName) || ends_with_events(key, theirs, ours),
    };
    if same {
        Outcome::AlreadyThere
    } else {
        Outcome::Conflict
    }
}

/// A blob's lines: the bytes themselves, or inflated for a `.gz` name.
fn inflate(key: &str, x: &[u8]) -> Option<Vec<u8>> {
    if !key.ends_with(".gz") {
        return Some(x.to_vec());
    }
    let mut v = Vec::new();
    crate::seal::reader(key, x).read_to_end(&mut v).ok().map(|_| v)
}

/// A SequenceFile's messages (a rebuilt one has other sync markers, a recompressed one other
/// bytes: its records are what count).
fn sequence_messages(x: &[u8]) -> Option<Vec<crate::seqfile::Record>> {
    crate::seqfile::Reader::new(x).ok()?.collect::<std::io::Result<Vec<_>>>().ok()
}

/// A Parquet file's messages (another codec or kbackup version writes other bytes for them:
/// the rows are what count).
fn parquet_messages(x: &[u8]) -> Option<Vec<crate::columnar::Row>> {
    crate::columnar::rows(x).ok()
}

/// True if two blobs hold the same events: equal bytes, or equal once decompressed (a
/// different gzip implementation or level writes different bytes for the same lines).
fn same_events(key: &str, a: &[u8], b: &[u8]) -> bool {
    if a == b {
        return true;
    }
    if crate::seqfile::is_sequence_file(a) || crate::seqfile::is_sequence_file(b) {
        return matches!((sequence_messages(a), sequence_messages(b)), (Some(x), Some(y)) if x == y);
    }
    if crate::columnar::is_parquet(a) || crate::columnar::is_parquet(b) {
        return matches!((parquet_messages(a), parquet_messages(b)), (Some(x), Some(y)) if x == y);
    }
    key.ends_with(".gz") && matches!((inflate(key, a), inflate(key, b)), (Some(x), Some(y)) if x == y)
}

/// True if the events of `theirs` end with those of `ours`, whole lines (records) only.
fn ends_with_events(key: &str, theirs: &[u8], ours: &[u8]) -> bool {
    if theirs == ours {
        return true;
    }
    if crate::seqfile::is_sequence_file(theirs) || crate::seqfile::is_sequence_file(ours) {
        return matches!((sequence_messages(theirs), sequence_messages(ours)), (Some(t), Some(o)) if !o.is_empty() && t.ends_with(&o));
    }
    if crate::columnar::is_parquet(theirs) || crate::columnar::is_parquet(ours) {
        return matches!((parquet_messages(theirs), parquet_messages(ours)), (Some(t), Some(o)) if !o.is_empty() && t.ends_with(&o));
    }
    match (inflate(key, theirs), inflate(key, ours)) {
        (Some(t), Some(o)) if !o.is_empty() && t.ends_with(&o) => t.len() == o.len() || t[t.len() - o.len() - 1] == b'\n',
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Compression;
    use object_store::memory::InMemory;

    fn gz(data: &[u8], level: u32) -> Bytes {
        seal::encode(data.to_vec(), Compression::Gzip, level)
    }

    #[tokio::test]
    async fn conditional_put_accepts_its_own_earlier_attempt() {
        let store = InMemory::new();
        let body = gz(b"a\nb\n", 3);
        assert_eq!(put_new(&store, "x/f.json.gz", body.clone(), Existing::Compare, |_| {}).await.0, Outcome::Stored);
        // The same events again (a retry whose first response was lost): not written twice.
        assert_eq!(put_new(&store, "x/f.json.gz", body.clone(), Existing::Compare, |_| {}).await.0, Outcome::AlreadyThere);
        // Same events compressed differently still count as the same file.
        assert_eq!(put_new(&store, "x/f.json.gz", gz(b"a\nb\n", 9), Existing::Compare, |_| {}).await.0, Outcome::AlreadyThere);
        // Different events under the same name: a conflict, and the blob is untouched.
        assert_eq!(put_new(&store, "x/f.json.gz", gz(b"c\n", 3), Existing::Compare, |_| {}).await.0, Outcome::Conflict);
        // A rebuilt file is the earlier upload when it holds that file's last events (retention
        // deleted the first ones), whole lines only; anything else is a conflict.
        assert_eq!(put_new(&store, "x/f.json.gz", gz(b"b\n", 3), Existing::Rebuilt, |_| {}).await.0, Outcome::AlreadyThere);
        assert_eq!(put_new(&store, "x/f.json.gz", gz(b"a\nb\n", 6), Existing::Rebuilt, |_| {}).await.0, Outcome::AlreadyThere);
        assert_eq!(put_new(&store, "x/f.json.gz", gz(b"c\n", 3), Existing::Rebuilt, |_| {}).await.0, Outcome::Conflict);
        assert_eq!(put_new(&store, "x/f.json.gz", gz(b"\nb\n", 3), Existing::Rebuilt, |_| {}).await.0, Outcome::Conflict);
        let got = store.get(&ObjectPath::from("x/f.json.gz")).await.unwrap().bytes().await.unwrap();
        assert_eq!(&got[..], &body[..]);
    }

    /// The probe proves create-only writes on a store that has them, names one that overwrites
    /// (here: writes sent without the condition), cleans up, and a conflict is still detected
    /// after it passed (the probe checks the store once; every upload still checks itself).
    #[tokio::test]
    async fn the_create_only_probe_proves_or_refuses_and_conflicts_stay_detected() {
        use futures::TryStreamExt;
        let store = InMemory::new();
        let p = probe_create_only(&store).await.unwrap();
        assert_eq!(p.requests, 4);
        assert!(!p.elapsed.is_zero());
        assert!(store.list(None).try_collect::<Vec<_>>().await.unwrap().is_empty(), "the probe cleans up");
        {
            let _broken = crate::sabotage::break_rule(crate::sabotage::Rule::UnconditionalPut);
            let e = probe_create_only(&store).await.unwrap_err();
            assert!(matches!(e, ProbeError::Overwrites { .. }), "{e}");
            let message = overwriting_store_message("s3://bucket (http://gateway)", &e);
            assert!(message.contains("storage.accept_overwriting_store") && message.contains("zombie"), "{message}");
        }
        assert_eq!(put_new(&store, "x/f.json", Bytes::from_static(b"a\n"), Existing::Compare, |_| {}).await.0, Outcome::Stored);
        assert_eq!(put_new(&store, "x/f.json", Bytes::from_static(b"b\n"), Existing::Compare, |_| {}).await.0, Outcome::Conflict);
    }

    #[test]
    fn a_rebuilt_file_matches_only_a_whole_line_suffix() {
        assert!(ends_with_events("a.json", b"x\ny\n", b"y\n"));
        assert!(ends_with_events("a.json", b"x\ny\n", b"x\ny\n"));
        assert!(!ends_with_events("a.json", b"x\nzy\n", b"y\n"), "a partial line is not an event");
        assert!(!ends_with_events("a.json", b"x\n", b""));
    }

    /// SequenceFiles are compared by their records: the same records under other sync markers
    /// or another compression are the same file; a rebuilt file matches a record suffix only.
    #[test]
    fn sequence_files_are_compared_by_their_records() {
        let seq = |first: i64, values: &[&str], gz: bool| -> Vec<u8> {
            let mut b = crate::buffer::Buffer::framed(first, std::time::Instant::now(), crate::buffer::Framing::SequenceFile);
            for (i, v) in values.iter().enumerate() {
                b.append(first + i as i64, v.as_bytes());
            }
            let c = if gz { Compression::Gzip } else { Compression::None };
            seal::encode_file(b.data, &seal::Sealing::plain(crate::config::FileFormat::SequenceFile, c, 1)).body.to_vec()
        };
        let a = seq(10, &["a", "b", "c"], false);
        assert!(same_events("d/1_0_00000000000000000010", &a, &seq(10, &["a", "b", "c"], true)));
        assert!(!same_events("d/1_0_00000000000000000010", &a, &seq(10, &["a", "b", "x"], false)));
        assert!(ends_with_events("d/1_0_00000000000000000010", &a, &seq(11, &["b", "c"], true)), "a rebuilt tail");
        assert!(!ends_with_events("d/1_0_00000000000000000010", &a, &seq(12, &["b", "c"], false)), "other offsets");
        assert!(!ends_with_events("d/1_0_00000000000000000010", &a, b"b\nc\n"));
    }

    #[test]
    fn same_events_on_plain_files_is_byte_equality() {
        assert!(same_events("a.json", b"x\n", b"x\n"));
        assert!(!same_events("a.json", b"x\n", b"y\n"));
        assert!(!same_events("a.json.gz", b"not gzip", b"also not"));
    }
}
