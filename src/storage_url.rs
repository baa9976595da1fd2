//! The grammar of `storage.url`: which store, which container or bucket, which root. Pure, so
//! config validation can use it without depending on the storage clients.

use std::path::PathBuf;

/// A `storage.url` that names no store kbackup can open.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UrlError {
    #[error("storage.url `{0}`: expected az://<container>[/<root>], s3://<bucket>[/<root>], gs://<bucket>[/<root>] or file:///<dir>")]
    BadUrl(String),
    #[error("storage.url `{0}`: S3 bucket names are 3-63 lowercase letters, digits, dots and dashes")]
    BadBucket(String),
    #[error("storage.url `{0}`: GCS bucket names are 3-63 lowercase letters, digits, dots, dashes and underscores")]
    BadGcsBucket(String),
    #[error("storage.url `{0}`: container names are 3-63 lowercase letters, digits and single dashes")]
    BadContainer(String),
}

/// The target named by `storage.url`.
#[derive(Debug, Clone, PartialEq)]
pub enum StorageUrl {
    Azure { container: String, root: Option<String> },
    S3 { bucket: String, root: Option<String> },
    Gcs { bucket: String, root: Option<String> },
    File { dir: PathBuf },
}

impl StorageUrl {
    /// Parses `az://container[/root]`, `azure://...`, `s3://bucket[/root]`, `gs://bucket[/root]`
    /// or `file:///dir`.
    pub fn parse(url: &str) -> Result<StorageUrl, UrlError> {
        let bad = || UrlError::BadUrl(url.to_string());
        let split = |rest: &str| -> (String, Option<String>) {
            match rest.split_once('/') {
                Some((b, r)) => (b.to_string(), Some(r.trim_matches('/').to_string()).filter(|r| !r.is_empty())),
                None => (rest.to_string(), None),
            }
        };
        if let Some(rest) = url.strip_prefix("gs://") {
            let (bucket, root) = split(rest);
            let b = bucket.as_bytes();
            let valid = (3..=63).contains(&b.len())
                && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'.' | b'_'))
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric();
            if !valid {
                return Err(UrlError::BadGcsBucket(url.to_string()));
            }
            return Ok(StorageUrl::Gcs { bucket, root });
        }
        if let Some(rest) = url.strip_prefix("az://").or_else(|| url.strip_prefix("azure://")) {
            let (container, root) = match rest.split_once('/') {
                Some((c, r)) => (c, Some(r.trim_matches('/').to_string()).filter(|r| !r.is_empty())),
                None => (rest, None),
            };
            // Azure container names: 3-63 chars of lowercase letters, digits and single dashes.
            let valid = (3..=63).contains(&container.len())
                && container.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !container.starts_with('-')
                && !container.ends_with('-')
                && !container.contains("--");
            if !valid {
                return Err(UrlError::BadContainer(url.to_string()));
            }
            return Ok(StorageUrl::Azure { container: container.to_string(), root });
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, root) = match rest.split_once('/') {
                Some((b, r)) => (b, Some(r.trim_matches('/').to_string()).filter(|r| !r.is_empty())),
                None => (rest, None),
            };
            let valid = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
                && bucket.as_bytes()[0].is_ascii_alphanumeric()
                && bucket.as_bytes()[bucket.len() - 1].is_ascii_alphanumeric();
            if !valid {
                return Err(UrlError::BadBucket(url.to_string()));
            }
            return Ok(StorageUrl::S3 { bucket: bucket.to_string(), root });
        }
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(bad());
            }
            return Ok(StorageUrl::File { dir: PathBuf::from(path) });
        }
        Err(bad())
    }
}
