//! Opening the blob store: `az://container[/root]` (Azure Blob Storage, Azurite),
//! `s3://bucket[/root]` (AWS S3 and S3-compatible stores), `gs://bucket[/root]` (Google Cloud
//! Storage) or `file:///dir`.
//!
//! Explicit config wins over the environment. Azure: `storage.account`/`access_key`/`sas_token`/
//! `endpoint`, then `storage.connection_string` (else env `AZURE_STORAGE_CONNECTION_STRING`), then
//! `object_store`'s own environment (managed identity, workload identity, CLI). S3:
//! `storage.region`/`endpoint`/`access_key_id`/`secret_access_key`/`session_token`, then the
//! standard `AWS_*` variables, profiles, web identity and instance metadata through
//! `object_store`. GCS: `storage.service_account_key`/`service_account_path`, then
//! `GOOGLE_SERVICE_ACCOUNT(_KEY/_PATH)` and application default credentials; a key is checked
//! before use (`gcs_key`). No secret is ever part of an error or log message.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, S3ConditionalPut};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig};

use crate::config::StorageConfig;
pub use crate::storage_url::{StorageUrl, UrlError};

mod gcs_key;

/// What [`Storage::ensure_container`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    Existed,
    /// Missing, and created (`storage.create_container = true`).
    Created,
}

/// A storage error, safe to print (no credentials inside).
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error("bucket `{bucket}` does not exist: create it first (kbackup does not create S3 or GCS buckets; storage.create_container is for Azure)")]
    MissingBucket { bucket: String },
    #[error("storage connection string: {0}")]
    ConnectionString(String),
    #[error("storage setup: {0}")]
    Setup(String),
    #[error("container `{container}` does not exist (set storage.create_container = true to create it)")]
    MissingContainer { container: String },
    #[error("{op} failed: {message}")]
    Op { op: &'static str, message: String },
}

/// The parts of an Azure connection string kbackup uses.
#[derive(Clone, PartialEq, Default)]
pub struct ConnectionString {
    pub account: Option<String>,
    pub key: Option<String>,
    pub sas: Option<String>,
    /// `BlobEndpoint`, or one built from protocol + account + `EndpointSuffix`.
    pub blob_endpoint: Option<String>,
}

impl std::fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionString")
            .field("account", &self.account)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("sas", &self.sas.as_ref().map(|_| "<redacted>"))
            .field("blob_endpoint", &self.blob_endpoint)
            .finish()
    }
}

impl ConnectionString {
    /// Parses `Key=Value;...` (keys case-insensitive, values may contain `=`).
    pub fn parse(s: &str) -> Result<ConnectionString, StorageError> {
        let mut fields = BTreeMap::new();
        for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            // Only the key is ever named in an error: values may be secrets.
            let (k, v) = part.split_once('=').ok_or_else(|| StorageError::ConnectionString("a part is not of the form Key=Value".into()))?;
            fields.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
        if fields.get("usedevelopmentstorage").map(|v| v.eq_ignore_ascii_case("true")) == Some(true) {
            return Ok(ConnectionString {
                account: Some("devstoreaccount1".into()),
                key: Some(AZURITE_KEY.into()),
                sas: None,
                blob_endpoint: Some("http://127.0.0.1:10000/devstoreaccount1".into()),
            });
        }
        let account = fields.get("accountname").cloned();
        let blob_endpoint = fields.get("blobendpoint").cloned().or_else(|| {
            let proto = fields.get("defaultendpointsprotocol").map(String::as_str).unwrap_or("https");
            let suffix = fields.get("endpointsuffix").map(String::as_str).unwrap_or("core.windows.net");
            account.as_ref().map(|a| format!("{proto}://{a}.blob.{suffix}"))
        });
        let cs =
            ConnectionString { account, key: fields.get("accountkey").cloned(), sas: fields.get("sharedaccesssignature").cloned(), blob_endpoint };
        if cs.key.is_some() && cs.account.is_none() {
            return Err(StorageError::ConnectionString("AccountKey is given without AccountName".into()));
        }
        if cs.key.is_none() && cs.sas.is_none() {
            return Err(StorageError::ConnectionString("needs AccountName and AccountKey, or SharedAccessSignature".into()));
        }
        if cs.blob_endpoint.is_none() {
            return Err(StorageError::ConnectionString("needs AccountName or BlobEndpoint".into()));
        }
        Ok(cs)
    }
}

/// Where an Azure store's account, credential and endpoint come from.
#[derive(Debug, Clone, PartialEq)]
struct AzureAccess {
    account: Option<String>,
    key: Option<String>,
    sas: Option<String>,
    endpoint: Option<String>,
    /// For `check`: where the credential came from (never the credential).
    credential: String,
}

/// Explicit config wins over the environment, always, and a credential is taken whole from one
/// place: the config's own `access_key` or `sas_token`; else a connection string — the
/// config's, else `AZURE_STORAGE_CONNECTION_STRING` unless it names another account than
/// `storage.account`; else object_store's environment (`AZURE_STORAGE_ACCOUNT_KEY`,
/// managed identity, ...). The endpoint likewise: `storage.endpoint`, then one derived from
/// Secor's settings, then the connection string's.
fn azure_access(cfg: &StorageConfig, env_cs: Option<&str>) -> Result<AzureAccess, StorageError> {
    let (cs, origin) = match (&cfg.connection_string, env_cs) {
        (Some(c), _) => (Some(ConnectionString::parse(c)?), "storage.connection_string"),
        (None, Some(c)) => {
            let cs = ConnectionString::parse(c)?;
            // Another account's connection string says nothing about this account.
            let other_account = cfg.account.is_some() && cs.account.is_some() && cs.account != cfg.account;
            (if other_account { None } else { Some(cs) }, "AZURE_STORAGE_CONNECTION_STRING")
        }
        (None, None) => (None, ""),
    };
    let cs = cs.unwrap_or_default();
    let (key, sas, credential) = match (&cfg.access_key, &cfg.sas_token) {
        (Some(k), _) => (Some(k.clone()), None, "account key from storage.access_key".to_string()),
        (None, Some(s)) => (None, Some(s.clone()), "SAS token from storage.sas_token".to_string()),
        (None, None) => match (&cs.key, &cs.sas) {
            (Some(_), _) => (cs.key.clone(), None, format!("account key from {origin}")),
            (None, Some(_)) => (None, cs.sas.clone(), format!("SAS token from {origin}")),
            (None, None) => (
                None,
                None,
                "object_store's Azure environment (AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_SAS_KEY, workload or managed identity, ...)".to_string(),
            ),
        },
    };
    Ok(AzureAccess {
        account: cfg.account.clone().or(cs.account),
        key,
        sas,
        endpoint: cfg.endpoint.clone().or(cfg.fallback_endpoint.clone()).or(cs.blob_endpoint),
        credential,
    })
}

/// The `<prefix>*` environment variables object_store's `from_env` reads, as its config keys,
/// less those `decided` says the config already settled.
fn env_settings<K: FromStr>(prefix: &str, decided: impl Fn(&K) -> bool) -> Vec<(K, String)> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with(prefix))
        .filter_map(|(k, v)| Some((k.to_ascii_lowercase().parse::<K>().ok()?, v)))
        .filter(|(k, _)| !decided(k))
        .collect()
}

/// Azurite's published development key; valid only against the emulator.
const AZURITE_KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// An opened blob store plus what is needed to manage its container.
#[derive(Clone)]
pub struct Storage {
    /// Keys are relative to the URL's root.
    pub store: Arc<dyn ObjectStore>,
    /// A printable description without secrets, e.g. `az://telemetry-data-store (http://127.0.0.1:10000/devstoreaccount1)`.
    pub describe: String,
    /// Where the credential came from, for `check` (never the secret itself).
    pub credential: String,
    container: Option<ContainerAdmin>,
    /// The S3 or GCS bucket, for a clear error when it is missing.
    bucket: Option<String>,
    file_dir: Option<PathBuf>,
}

/// What creating or checking an Azure container needs (shared key auth only).
#[derive(Clone)]
struct ContainerAdmin {
    container: String,
    endpoint: String,
    account: Option<String>,
    key: Option<String>,
    timeout: Duration,
}

/// Retry and timeout settings of every storage request.
pub fn client_options(request_timeout: Duration) -> (ClientOptions, RetryConfig) {
    let opts = ClientOptions::new().with_timeout(request_timeout).with_connect_timeout(Duration::from_secs(10));
    // object_store retries individual requests briefly; the upload stage retries whole files
    // for as long as it takes, so this stays short.
    let retry = RetryConfig {
        max_retries: 3,
        retry_timeout: request_timeout,
        backoff: object_store::BackoffConfig { init_backoff: Duration::from_millis(100), max_backoff: Duration::from_secs(5), base: 2.0 },
    };
    (opts, retry)
}

impl Storage {
    /// Opens the store described by `[storage]` (no network traffic yet).
    pub fn open(cfg: &StorageConfig) -> Result<Storage, StorageError> {
        match StorageUrl::parse(&cfg.url)? {
            StorageUrl::File { dir } => {
                let store = LocalFileSystem::new_with_prefix(&dir)
                    .or_else(|_| {
                        std::fs::create_dir_all(&dir)?;
                        LocalFileSystem::new_with_prefix(&dir).map_err(std::io::Error::other)
                    })
                    .map_err(|e| StorageError::Setup(format!("cannot open {}: {e}", dir.display())))?
                    .with_automatic_cleanup(true);
                Ok(Storage {
                    store: Arc::new(crate::direct_file::DirectFileStore::new(store)),
                    describe: cfg.url.clone(),
                    credential: "local files (no credential)".to_string(),
                    container: None,
                    bucket: None,
                    file_dir: Some(dir),
                })
            }
            StorageUrl::S3 { bucket, root } => {
                let (opts, retry) = client_options(Duration::from_secs(cfg.request_timeout_secs));
                // Conditional create (If-None-Match: *) is what keeps uploads from overwriting:
                // the exactly-once protocol needs it, so it is set here and not left to options.
                // Keys in the config are the credential, whole: none of the environment's
                // (AWS_SESSION_TOKEN included) is mixed into them.
                let explicit = cfg.access_key_id.is_some() || cfg.secret_access_key.is_some();
                let mut b = AmazonS3Builder::new();
                for (key, value) in env_settings::<AmazonS3ConfigKey>("AWS_", |k| {
                    explicit && matches!(k, AmazonS3ConfigKey::AccessKeyId | AmazonS3ConfigKey::SecretAccessKey | AmazonS3ConfigKey::Token)
                }) {
                    b = b.with_config(key, value);
                }
                let mut b = b.with_bucket_name(&bucket).with_client_options(opts).with_retry(retry).with_conditional_put(S3ConditionalPut::ETagMatch);
                for (k, v) in &cfg.options {
                    let key = AmazonS3ConfigKey::from_str(k).map_err(|_| StorageError::Setup(format!("storage.options: unknown key `{k}`")))?;
                    if key == AmazonS3ConfigKey::ConditionalPut {
                        return Err(StorageError::Setup(format!("storage.options.{k}: kbackup always uses conditional writes")));
                    }
                    b = b.with_config(key, v);
                }
                if let Some(r) = &cfg.region {
                    b = b.with_region(r);
                }
                if let Some(e) = &cfg.endpoint {
                    b = b.with_endpoint(e.trim_end_matches('/'));
                }
                // Client options replace what `from_env` read for the client (AWS_ALLOW_HTTP):
                // an http:// endpoint, from the config or the environment, is itself the choice.
                let endpoint = cfg.endpoint.clone().or_else(|| std::env::var("AWS_ENDPOINT_URL").ok()).or_else(|| std::env::var("AWS_ENDPOINT").ok());
                if endpoint.as_deref().is_some_and(|e| e.starts_with("http://")) || std::env::var("AWS_ALLOW_HTTP").is_ok_and(|v| v == "true") {
                    b = b.with_allow_http(true);
                }
                if let Some(v) = cfg.virtual_hosted_style {
                    b = b.with_virtual_hosted_style_request(v);
                }
                let credential = match (&cfg.access_key_id, &cfg.secret_access_key) {
                    (Some(id), Some(secret)) => {
                        b = b.with_access_key_id(id).with_secret_access_key(secret);
                        if let Some(t) = &cfg.session_token {
                            b = b.with_token(t);
                        }
                        "access key from storage.access_key_id / secret_access_key".to_string()
                    }
                    (None, None) if std::env::var_os("AWS_ACCESS_KEY_ID").is_some() => {
                        "access key from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY".to_string()
                    }
                    (None, None) => "object_store's AWS chain (profile, web identity, container or instance metadata)".to_string(),
                    (Some(_), None) => return Err(StorageError::Setup("storage.access_key_id is set without storage.secret_access_key".into())),
                    (None, Some(_)) => return Err(StorageError::Setup("storage.secret_access_key is set without storage.access_key_id".into())),
                };
                let store = b.build().map_err(|e| StorageError::Setup(scrub(&e.to_string(), &[&cfg.secret_access_key, &cfg.session_token])))?;
                let ep = endpoint.unwrap_or_else(|| format!("AWS {}", cfg.region.as_deref().unwrap_or("(region from the environment)")));
                let store: Arc<dyn ObjectStore> = match &root {
                    Some(r) => Arc::new(PrefixStore::new(store, r.as_str())),
                    None => Arc::new(store),
                };
                Ok(Storage { store, describe: format!("{} ({})", cfg.url, ep), credential, container: None, bucket: Some(bucket), file_dir: None })
            }
            StorageUrl::Gcs { bucket, root } => {
                let (opts, retry) = client_options(Duration::from_secs(cfg.request_timeout_secs));
                // A key in the config is the credential, whole; else the environment's chain.
                let explicit = cfg.service_account_key.is_some() || cfg.service_account_path.is_some();
                let mut b = GoogleCloudStorageBuilder::new();
                for (key, value) in env_settings::<GoogleConfigKey>("GOOGLE_", |k| {
                    explicit
                        && matches!(k, GoogleConfigKey::ServiceAccount | GoogleConfigKey::ServiceAccountKey | GoogleConfigKey::ApplicationCredentials)
                }) {
                    b = b.with_config(key, value);
                }
                for (k, v) in &cfg.options {
                    let key = GoogleConfigKey::from_str(k).map_err(|_| StorageError::Setup(format!("storage.options: unknown key `{k}`")))?;
                    b = b.with_config(key, v);
                }
                // Client options replace what the environment set for the client (GOOGLE_ALLOW_HTTP):
                // an http:// endpoint (an emulator), from the config or the environment, is the choice.
                let endpoint = cfg.endpoint.clone().or_else(|| std::env::var("GOOGLE_BASE_URL").ok());
                let http =
                    endpoint.as_deref().is_some_and(|e| e.starts_with("http://")) || std::env::var("GOOGLE_ALLOW_HTTP").is_ok_and(|v| v == "true");
                let opts = if http { opts.with_allow_http(true) } else { opts };
                b = b.with_bucket_name(&bucket).with_client_options(opts).with_retry(retry);
                if let Some(e) = &cfg.endpoint {
                    b = b.with_base_url(e.trim_end_matches('/'));
                }
                let key = gcs_key::source(cfg.service_account_key.as_deref(), cfg.service_account_path.as_deref(), |k| {
                    std::env::var(k).ok().filter(|v| !v.is_empty())
                });
                if let Some(key) = &key {
                    gcs_key::check(key).map_err(StorageError::Setup)?;
                }
                let env = |k: &str| std::env::var_os(k).is_some();
                let credential = match (&cfg.service_account_key, &cfg.service_account_path) {
                    (Some(k), _) => {
                        b = b.with_service_account_key(k);
                        "service-account key from storage.service_account_key".to_string()
                    }
                    (None, Some(p)) => {
                        b = b.with_service_account_path(p);
                        format!("service-account key file {p} (storage.service_account_path)")
                    }
                    (None, None) if env("GOOGLE_SERVICE_ACCOUNT") || env("GOOGLE_SERVICE_ACCOUNT_PATH") || env("GOOGLE_SERVICE_ACCOUNT_KEY") => {
                        "service-account key from GOOGLE_SERVICE_ACCOUNT(_PATH/_KEY)".to_string()
                    }
                    (None, None) if env("GOOGLE_APPLICATION_CREDENTIALS") => {
                        "application default credentials from GOOGLE_APPLICATION_CREDENTIALS".to_string()
                    }
                    (None, None) => "object_store's GCP chain (application default credentials, workload identity, metadata server)".to_string(),
                };
                let store =
                    b.build().map_err(|e| StorageError::Setup(gcs_key::scrub_key_material(&scrub(&e.to_string(), &[&cfg.service_account_key]))))?;
                let ep = endpoint.unwrap_or_else(|| "https://storage.googleapis.com".to_string());
                let store: Arc<dyn ObjectStore> = match &root {
                    Some(r) => Arc::new(PrefixStore::new(store, r.as_str())),
                    None => Arc::new(store),
                };
                Ok(Storage { store, describe: format!("{} ({})", cfg.url, ep), credential, container: None, bucket: Some(bucket), file_dir: None })
            }
            StorageUrl::Azure { container, root } => {
                let env_cs = std::env::var("AZURE_STORAGE_CONNECTION_STRING").ok().filter(|s| !s.is_empty());
                let AzureAccess { mut account, key, sas, endpoint, credential } = azure_access(cfg, env_cs.as_deref())?;
                let (opts, retry) = client_options(Duration::from_secs(cfg.request_timeout_secs));
                // The environment fills only what the config and connection string leave open:
                // object_store would otherwise prefer AZURE_STORAGE_ACCOUNT_KEY to a SAS token.
                let decided = key.is_some() || sas.is_some();
                let mut b = MicrosoftAzureBuilder::new();
                for (k, v) in env_settings::<AzureConfigKey>("AZURE_", |k| match k {
                    AzureConfigKey::AccountName => account.is_some(),
                    AzureConfigKey::Endpoint | AzureConfigKey::UseEmulator => endpoint.is_some(),
                    _ => decided,
                }) {
                    b = b.with_config(k, v);
                }
                if !decided {
                    if let Ok(msi) = std::env::var("IDENTITY_ENDPOINT") {
                        b = b.with_msi_endpoint(msi);
                    }
                }
                let mut b = b.with_container_name(&container).with_client_options(opts).with_retry(retry);
                for (k, v) in &cfg.options {
                    let key = AzureConfigKey::from_str(k).map_err(|_| StorageError::Setup(format!("storage.options: unknown key `{k}`")))?;
                    b = b.with_config(key, v);
                }
                if let Some(a) = &account {
                    b = b.with_account(a);
                } else if let Some(e) = &endpoint {
                    // object_store needs an account name; a SAS-only endpoint carries it in its host.
                    if let Some(a) = account_from_endpoint(e) {
                        account = Some(a.clone());
                        b = b.with_account(a);
                    }
                }
                if let Some(k) = &key {
                    b = b.with_access_key(k);
                } else if let Some(s) = &sas {
                    b = b.with_config(AzureConfigKey::SasKey, s.trim_start_matches('?'));
                }
                if let Some(e) = &endpoint {
                    if e.starts_with("http://") {
                        b = b.with_allow_http(true);
                    }
                    b = b.with_endpoint(e.trim_end_matches('/').to_string());
                }
                let store = b.build().map_err(|e| StorageError::Setup(scrub(&e.to_string(), &[&key, &sas])))?;
                let ep = endpoint.clone().unwrap_or_else(|| format!("https://{}.blob.core.windows.net", account.as_deref().unwrap_or("<account>")));
                let store: Arc<dyn ObjectStore> = match &root {
                    Some(r) => Arc::new(PrefixStore::new(store, r.as_str())),
                    None => Arc::new(store),
                };
                Ok(Storage {
                    store,
                    describe: format!("{} ({})", cfg.url, ep),
                    credential,
                    container: Some(ContainerAdmin { container, endpoint: ep, account, key, timeout: Duration::from_secs(cfg.request_timeout_secs) }),
                    bucket: None,
                    file_dir: None,
                })
            }
        }
    }

    /// The whole stored blob `key` (what every reader of backup files starts from).
    pub async fn read(&self, key: &str) -> Result<bytes::Bytes, object_store::Error> {
        use object_store::ObjectStoreExt;
        self.store.get(&ObjectPath::from(key)).await?.bytes().await
    }

    /// Makes sure the container exists: creates it when `create` is set, else fails clearly.
    pub async fn ensure_container(&self, create: bool) -> Result<Ensured, StorageError> {
        if let Some(dir) = &self.file_dir {
            if !dir.is_dir() {
                if !create {
                    return Err(StorageError::MissingContainer { container: dir.display().to_string() });
                }
                std::fs::create_dir_all(dir).map_err(|e| StorageError::Setup(format!("cannot create {}: {e}", dir.display())))?;
                return Ok(Ensured::Created);
            }
            return Ok(Ensured::Existed);
        }
        if let Some(bucket) = &self.bucket {
            return match self.store.list_with_delimiter(Some(&ObjectPath::from("_kbackup_probe_"))).await {
                Ok(_) => Ok(Ensured::Existed),
                Err(e) if e.to_string().contains("NoSuchBucket") || matches!(e, object_store::Error::NotFound { .. }) => {
                    Err(StorageError::MissingBucket { bucket: bucket.clone() })
                }
                Err(e) => Err(StorageError::Op { op: "listing the bucket", message: e.to_string() }),
            };
        }
        let Some(admin) = &self.container else {
            return Ok(Ensured::Existed);
        };
        match self.store.list_with_delimiter(Some(&ObjectPath::from("_kbackup_probe_"))).await {
            Ok(_) => Ok(Ensured::Existed),
            Err(e) if is_container_missing(&e) => {
                if !create {
                    return Err(StorageError::MissingContainer { container: admin.container.clone() });
                }
                admin.create().await.map(|()| Ensured::Created)
            }
            Err(e) => Err(StorageError::Op { op: "listing the container", message: e.to_string() }),
        }
    }

    /// [`ensure_container`](Self::ensure_container), riding out a store that fails for a while
    /// (server errors, timeouts, refused connections) until `patience` has passed: a service
    /// that starts while its store has a bad minute starts a minute later, instead of exiting
    /// on the store client's few quick retries. A missing container or bucket, or a refused
    /// credential, is an answer, not a fault: returned at once.
    pub async fn ensure_container_patiently(&self, create: bool, patience: std::time::Duration) -> Result<Ensured, StorageError> {
        let deadline = std::time::Instant::now() + patience;
        let mut wait = std::time::Duration::from_millis(500);
        loop {
            match self.ensure_container(create).await {
                Err(StorageError::Op { op, message }) if is_transient(&message) && std::time::Instant::now() + wait < deadline => {
                    tracing::warn!(error = %message, retry_in_ms = wait.as_millis() as u64, "{op} failed; trying again");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_secs(8));
                }
                other => return other,
            }
        }
    }

    /// Writes, reads back and deletes a small probe blob: proves the credentials can write.
    /// A probe that could not be deleted is no failure (kbackup never deletes, so its
    /// credential need not allow it): it is named in the returned note, to delete by hand.
    pub async fn probe_write(&self) -> Result<Option<String>, StorageError> {
        let path = ObjectPath::from(format!("_kbackup/probe-{:016x}", rand::random::<u64>()));
        let op = |op: &'static str| move |e: object_store::Error| StorageError::Op { op, message: e.to_string() };
        self.store.put(&path, b"kbackup probe".to_vec().into()).await.map_err(op("writing a probe blob"))?;
        let read = async { self.store.get(&path).await.map_err(op("reading the probe blob"))?.bytes().await.map_err(op("reading the probe blob")) };
        let read = read.await;
        let left = self.store.delete(&path).await.err().map(|e| {
            format!(
                "the probe blob {path} could not be deleted ({}): delete it by hand (kbackup never deletes, so its credential needs no delete right)",
                gcs_key::scrub_key_material(&e.to_string())
            )
        });
        if &read?[..] != b"kbackup probe" {
            return Err(StorageError::Op { op: "probe", message: "read back different bytes".into() });
        }
        Ok(left)
    }
}

/// A store's error that may pass: a server error (5xx), a timeout, a connection that failed.
/// Refusals (401, 403, 404, 409, 412) are answers.
fn is_transient(message: &str) -> bool {
    let server = ["status code: 5", "500 Internal", "502 Bad", "503 Service", "504 Gateway"];
    let network = ["timed out", "error sending request", "connection", "Connection", "reset by peer", "broken pipe"];
    server.iter().chain(&network).any(|s| message.contains(s))
}

fn is_container_missing(e: &object_store::Error) -> bool {
    let s = e.to_string();
    matches!(e, object_store::Error::NotFound { .. }) || s.contains("ContainerNotFound") || s.contains("404")
}

fn account_from_endpoint(e: &str) -> Option<String> {
    let host = url::Url::parse(e).ok()?.host_str()?.to_string();
    let (account, rest) = host.split_once('.')?;
    rest.starts_with("blob.").then(|| account.to_string())
}

/// Removes any secret value that might have crept into a message.
fn scrub(msg: &str, secrets: &[&Option<String>]) -> String {
    let mut out = msg.to_string();
    for s in secrets.iter().filter_map(|s| s.as_deref()).filter(|s| s.len() >= 4) {
        out = out.replace(s, "<redacted>");
    }
    out
}

impl ContainerAdmin {
    /// Creates the container, retrying transient failures a few times.
    async fn create(&self) -> Result<(), StorageError> {
        use backon::Retryable;
        (|| self.create_once())
            .retry(crate::upload::backoff().with_max_times(5).with_max_delay(Duration::from_secs(5)))
            .sleep(tokio::time::sleep)
            .when(|e| matches!(e, StorageError::Op { .. }))
            .notify(|e, wait| tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "creating the container failed; retrying"))
            .await
    }

    /// `PUT ?restype=container`, signed with the account key (the one call object_store lacks).
    async fn create_once(&self) -> Result<(), StorageError> {
        use base64::Engine;
        use hmac::{Hmac, Mac};
        let (Some(account), Some(key)) = (&self.account, &self.key) else {
            return Err(StorageError::Setup(format!(
                "creating container `{}` needs an account key; create it with your Azure tooling or use a key",
                self.container
            )));
        };
        let url = format!("{}/{}?restype=container", self.endpoint.trim_end_matches('/'), self.container);
        let parsed = url::Url::parse(&url).map_err(|e| StorageError::Setup(format!("endpoint: {e}")))?;
        let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        let version = "2021-08-06";
        // Shared Key string-to-sign: verb, 11 standard headers (empty here), x-ms-* headers,
        // then the canonical resource `/<account><path>` and sorted query parameters.
        let to_sign = format!("PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{account}{}\nrestype:container", parsed.path());
        let secret =
            base64::engine::general_purpose::STANDARD.decode(key).map_err(|_| StorageError::Setup("the account key is not valid base64".into()))?;
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&secret).expect("HMAC takes any key length");
        mac.update(to_sign.as_bytes());
        let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let client = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| StorageError::Setup(e.without_url().to_string()))?;
        let resp = client
            .put(parsed)
            .header("x-ms-date", date)
            .header("x-ms-version", version)
            .header("Authorization", format!("SharedKey {account}:{sig}"))
            .header("Content-Length", "0")
            .send()
            .await
            .map_err(|e| StorageError::Op { op: "creating the container", message: e.without_url().to_string() })?;
        let status = resp.status();
        // 409 ContainerAlreadyExists: another process created it first, which is fine.
        if status.is_success() || status.as_u16() == 409 {
            tracing::info!(container = %self.container, "created container");
            Ok(())
        } else {
            let body = resp.text().await.unwrap_or_default();
            let code = body.split("<Code>").nth(1).and_then(|s| s.split("</Code>").next()).unwrap_or("").to_string();
            Err(StorageError::Op { op: "creating the container", message: format!("HTTP {status} {code}") })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_and_broken_connections_pass_refusals_do_not() {
        assert!(is_transient(
            "Error performing GET http://x in 515ms, after 3 retries - Server returned non-2xx status code: 500 Internal Server Error"
        ));
        assert!(is_transient("Server returned non-2xx status code: 503 Service Unavailable"));
        assert!(is_transient("error sending request for url (http://127.0.0.1:1/): client error (Connect)"));
        assert!(is_transient("operation timed out"));
        assert!(!is_transient("Server returned non-2xx status code: 403 Forbidden: AuthorizationFailure"));
        assert!(!is_transient("Server returned non-2xx status code: 401 Unauthorized"));
        assert!(!is_transient("Server returned non-2xx status code: 404 Not Found"));
    }

    #[test]
    fn urls() {
        assert_eq!(
            StorageUrl::parse("az://telemetry-data-store").unwrap(),
            StorageUrl::Azure { container: "telemetry-data-store".into(), root: None }
        );
        assert_eq!(
            StorageUrl::parse("az://backups/env/dev/").unwrap(),
            StorageUrl::Azure { container: "backups".into(), root: Some("env/dev".into()) }
        );
        assert_eq!(StorageUrl::parse("file:///tmp/x").unwrap(), StorageUrl::File { dir: "/tmp/x".into() });
        assert_eq!(
            StorageUrl::parse("gs://telemetry_data.store/backups/").unwrap(),
            StorageUrl::Gcs { bucket: "telemetry_data.store".into(), root: Some("backups".into()) }
        );
        for bad in ["gs://ab", "gs://Upper", "gs://-a-b", "gs://"] {
            assert!(StorageUrl::parse(bad).is_err(), "{bad}");
        }
        for bad in ["s3://b", "az://", "az://Upper", "az://a--b", "az://ab", "file://rel", "telemetry"] {
            assert!(StorageUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn azurite_connection_string() {
        let cs = ConnectionString::parse(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=abc==;BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;",
        )
        .unwrap();
        assert_eq!(cs.account.as_deref(), Some("devstoreaccount1"));
        assert_eq!(cs.key.as_deref(), Some("abc=="), "values keep their `=`");
        assert_eq!(cs.blob_endpoint.as_deref(), Some("http://127.0.0.1:10000/devstoreaccount1"));
        let dev = ConnectionString::parse("UseDevelopmentStorage=true").unwrap();
        assert_eq!(dev.account.as_deref(), Some("devstoreaccount1"));
    }

    #[test]
    fn cloud_connection_strings() {
        let cs = ConnectionString::parse("DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=k;EndpointSuffix=core.windows.net").unwrap();
        assert_eq!(cs.blob_endpoint.as_deref(), Some("https://acct.blob.core.windows.net"));
        let sas = ConnectionString::parse("BlobEndpoint=https://acct.blob.core.windows.net;SharedAccessSignature=sv=2020&sig=SECRET").unwrap();
        assert_eq!(sas.sas.as_deref(), Some("sv=2020&sig=SECRET"));
        assert_eq!(account_from_endpoint("https://acct.blob.core.windows.net"), Some("acct".into()));
    }

    #[test]
    fn explicit_azure_settings_win_over_the_environment() {
        let env = "DefaultEndpointsProtocol=http;AccountName=acct;AccountKey=ENVKEY;BlobEndpoint=http://127.0.0.1:10000/acct";
        let cfg = |f: &dyn Fn(&mut StorageConfig)| {
            let mut c = StorageConfig { url: "az://c".into(), ..Default::default() };
            f(&mut c);
            c
        };
        // A SAS token in the config is the credential, whatever key the environment holds.
        let a = azure_access(
            &cfg(&|c| {
                c.account = Some("acct".into());
                c.sas_token = Some("sv=CONFIG".into());
                c.endpoint = Some("https://acct.example".into());
            }),
            Some(env),
        )
        .unwrap();
        assert_eq!((a.key, a.sas.as_deref(), a.endpoint.as_deref()), (None, Some("sv=CONFIG"), Some("https://acct.example")));
        assert_eq!(a.credential, "SAS token from storage.sas_token");
        // Nothing in the config: the environment's connection string, whole.
        let a = azure_access(&cfg(&|_| {}), Some(env)).unwrap();
        assert_eq!((a.account.as_deref(), a.key.as_deref()), (Some("acct"), Some("ENVKEY")));
        assert_eq!(
            (a.endpoint.as_deref(), a.credential.as_str()),
            (Some("http://127.0.0.1:10000/acct"), "account key from AZURE_STORAGE_CONNECTION_STRING")
        );
        // The same account: the environment may still say where it is, never which credential.
        let a = azure_access(
            &cfg(&|c| {
                c.account = Some("acct".into());
                c.access_key = Some("CONFIGKEY".into());
            }),
            Some(env),
        )
        .unwrap();
        assert_eq!((a.key.as_deref(), a.endpoint.as_deref()), (Some("CONFIGKEY"), Some("http://127.0.0.1:10000/acct")));
        // Another account's connection string is ignored entirely.
        let a = azure_access(&cfg(&|c| c.account = Some("other".into())), Some(env)).unwrap();
        assert_eq!((a.account.as_deref(), a.key, a.endpoint), (Some("other"), None, None));
        assert!(a.credential.starts_with("object_store's Azure environment"), "{}", a.credential);
        // An endpoint Secor's settings derive (http) is config too.
        let a = azure_access(
            &cfg(&|c| {
                c.account = Some("acct".into());
                c.fallback_endpoint = Some("http://acct.blob.core.windows.net".into());
            }),
            Some(env),
        )
        .unwrap();
        assert_eq!(a.endpoint.as_deref(), Some("http://acct.blob.core.windows.net"));
        // The config's own connection string beats the environment's.
        let a = azure_access(&cfg(&|c| c.connection_string = Some("AccountName=mine;AccountKey=MINE".into())), Some(env)).unwrap();
        assert_eq!(
            (a.account.as_deref(), a.key.as_deref(), a.credential.as_str()),
            (Some("mine"), Some("MINE"), "account key from storage.connection_string")
        );
    }

    #[test]
    fn connection_string_errors_never_show_values() {
        for bad in ["AccountKey=SECRETSECRET", "AccountName=a", "garbageSECRETSECRET", "AccountName=a;SECRETSECRET"] {
            let e = ConnectionString::parse(bad).unwrap_err().to_string();
            assert!(!e.contains("SECRETSECRET"), "{e}");
        }
        let cs = ConnectionString::parse("AccountName=a;AccountKey=SECRETSECRET").unwrap();
        assert!(!format!("{cs:?}").contains("SECRETSECRET"));
    }
}
