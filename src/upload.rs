//! Uploading sealed files: compression on the blocking pool, then a PUT retried with
//! exponential backoff and jitter until it succeeds. A file that keeps failing is never given
//! up on by itself: it holds back its partition's commit, and the writer pauses consumption
//! when the memory budget fills.

use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;

use crate::config::Compression;
use crate::seal;

/// A sealed file on its way to storage.
#[derive(Debug)]
pub struct UploadJob {
    pub id: u64,
    pub key: String,
    pub data: Vec<u8>,
    pub compression: Compression,
    pub level: u32,
}

/// The outcome the writer is told about.
#[derive(Debug)]
pub struct UploadDone {
    pub id: u64,
    pub stored_bytes: u64,
    pub attempts: u32,
    pub elapsed: Duration,
}

/// Backoff between whole-file attempts.
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
}

impl Uploader {
    /// An uploader reporting each finished file on `done`.
    pub fn new(store: Arc<dyn ObjectStore>, rt: Handle, concurrency: usize, done: Sender<UploadDone>) -> Uploader {
        Uploader { store, rt, permits: Arc::new(Semaphore::new(concurrency)), done }
    }

    /// Starts uploading a job; its completion arrives on the `done` channel.
    pub fn submit(&self, job: UploadJob) {
        let this = self.clone();
        self.rt.spawn(async move {
            let _permit = this.permits.clone().acquire_owned().await.expect("semaphore is never closed");
            let started = Instant::now();
            let UploadJob { id, key, data, compression, level } = job;
            let body = tokio::task::spawn_blocking(move || seal::encode(&data, compression, level))
                .await
                .expect("compression does not panic");
            let stored_bytes = body.len() as u64;
            let attempts = put_with_retry(this.store.as_ref(), &key, PutPayload::from(body)).await;
            // The receiver is gone only when the writer has exited; nothing is left to tell.
            let _ = this.done.send(UploadDone { id, stored_bytes, attempts, elapsed: started.elapsed() });
        });
    }
}

/// PUTs `payload` at `key` until it succeeds; returns the number of attempts.
pub async fn put_with_retry(store: &dyn ObjectStore, key: &str, payload: PutPayload) -> u32 {
    let path = ObjectPath::from(key);
    let attempts = std::sync::atomic::AtomicU32::new(0);
    let op = || async {
        attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        store.put_opts(&path, payload.clone(), Default::default()).await
    };
    op.retry(backoff())
        .sleep(tokio::time::sleep)
        .notify(|e: &object_store::Error, wait: Duration| {
            tracing::warn!(key, error = %e, retry_in_ms = wait.as_millis() as u64, "upload failed; retrying");
        })
        .await
        .expect("retries without a limit only return on success");
    attempts.into_inner()
}
