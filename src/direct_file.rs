//! The `file://` store: object_store's `LocalFileSystem`, except that new files are written
//! with `O_DIRECT`, around the page cache.
//!
//! A backup file is written once and not read back soon, so copying it into the page cache
//! only costs CPU: on the 2-core benchmark machine buffered writes took ~2.3 CPU-seconds per GB
//! (the kernel's copy, plus writeback later) against ~0.05 with `O_DIRECT` (`dd` and
//! `scripts/bench`'s PUT ceiling). Everything else — reads, lists, deletes, multipart — is
//! object_store's. Files appear atomically as before: written under a staging name
//! (`<name>#<n>`, which object_store's listing hides), then linked (create-only) or renamed
//! into place. File systems without `O_DIRECT` (tmpfs) get object_store's buffered write.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload,
    PutResult, RenameOptions, Result,
};

/// `O_DIRECT` needs buffers, offsets and lengths aligned to the device's logical block; 4 KiB
/// covers every common device.
const ALIGN: usize = 4096;
/// Bytes copied into the aligned bounce buffer per write.
const CHUNK: usize = 1 << 20;

/// A local directory store that writes new files around the page cache.
#[derive(Debug)]
pub struct DirectFileStore {
    inner: LocalFileSystem,
}

impl DirectFileStore {
    /// Wraps a `LocalFileSystem` rooted at the store's directory.
    pub fn new(inner: LocalFileSystem) -> DirectFileStore {
        DirectFileStore { inner }
    }
}

impl fmt::Display for DirectFileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DirectFileStore({})", self.inner)
    }
}

fn io_err(path: &FsPath, source: std::io::Error) -> object_store::Error {
    object_store::Error::Generic { store: "DirectFileStore", source: format!("{}: {source}", path.display()).into() }
}

/// Opens a new staging file next to `dest` with `O_DIRECT`; `Ok(None)` if the file system
/// refuses `O_DIRECT`.
fn open_staging(dest: &FsPath) -> std::io::Result<Option<(File, PathBuf)>> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut n = 1u64;
    loop {
        let mut staging = dest.as_os_str().to_owned();
        staging.push(format!("#{n}"));
        let staging = PathBuf::from(staging);
        match OpenOptions::new().write(true).create_new(true).custom_flags(libc::O_DIRECT).open(&staging) {
            Ok(f) => return Ok(Some((f, staging))),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => n += 1,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let parent = dest.parent().ok_or(e)?;
                std::fs::create_dir_all(parent)?;
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

/// A heap buffer aligned for `O_DIRECT`.
struct Aligned {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let layout = std::alloc::Layout::from_size_align(len, ALIGN).expect("valid layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        Aligned { ptr, layout }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` is a live allocation of `layout.size()` bytes owned by `self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

/// Writes `parts` to `file` (opened with `O_DIRECT`): whole blocks through an aligned buffer,
/// then the unaligned tail with `O_DIRECT` switched off. A single page-aligned part (the
/// writer's plain files: buffer memory is block-aligned) is written straight from its memory,
/// without the copy.
fn write_direct(file: &mut File, parts: &[Bytes]) -> std::io::Result<()> {
    let total: usize = parts.iter().map(Bytes::len).sum();
    let aligned_total = total / ALIGN * ALIGN;
    if let [only] = parts {
        if only.as_ptr() as usize % ALIGN == 0 {
            file.write_all(&only[..aligned_total])?;
            return if aligned_total < total { write_tail(file, std::iter::once(&only[aligned_total..])) } else { Ok(()) };
        }
    }
    let mut bytes = parts.iter().flat_map(|b| b.chunks(CHUNK));
    let (mut written, mut fill) = (0usize, 0usize);
    let mut pending: &[u8] = &[];
    let mut buf = Aligned::new(CHUNK);
    while written < aligned_total {
        // Fill the bounce buffer up to the next chunk or the end of the aligned part.
        let want = (aligned_total - written).min(CHUNK);
        while fill < want {
            if pending.is_empty() {
                pending = bytes.next().expect("enough input for the aligned part");
            }
            let n = (want - fill).min(pending.len());
            buf.as_mut_slice()[fill..fill + n].copy_from_slice(&pending[..n]);
            pending = &pending[n..];
            fill += n;
        }
        file.write_all(&buf.as_mut_slice()[..want])?;
        written += want;
        fill = 0;
    }
    if written < total {
        write_tail(file, std::iter::once(pending).chain(bytes))?;
    }
    Ok(())
}

/// Writes the unaligned end of a file, with `O_DIRECT` switched off.
fn write_tail<'a>(file: &mut File, rest: impl Iterator<Item = &'a [u8]>) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on our own open descriptor.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_DIRECT) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    for part in rest {
        file.write_all(part)?;
    }
    Ok(())
}

fn put_direct(dest: &FsPath, location: &Path, parts: &[Bytes], mode: &PutMode) -> Result<Option<PutResult>> {
    let Some((mut file, staging)) = open_staging(dest).map_err(|e| io_err(dest, e))? else {
        return Ok(None);
    };
    let publish = write_direct(&mut file, parts).and_then(|()| {
        drop(file);
        match mode {
            PutMode::Create => std::fs::hard_link(&staging, dest),
            _ => std::fs::rename(&staging, dest),
        }
    });
    let _ = std::fs::remove_file(&staging);
    match publish {
        Ok(()) => Ok(Some(PutResult { e_tag: None, version: None, extensions: Default::default() })),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Err(object_store::Error::AlreadyExists { path: location.to_string(), source: Box::new(e) }),
        Err(e) => Err(io_err(dest, e)),
    }
}

#[async_trait]
impl ObjectStore for DirectFileStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        let plain = matches!(opts.mode, PutMode::Create | PutMode::Overwrite) && opts.attributes.is_empty();
        if plain {
            let dest = self.inner.path_to_filesystem(location)?;
            let parts: Vec<Bytes> = payload.iter().cloned().collect();
            let (loc, mode) = (location.clone(), opts.mode.clone());
            let done = tokio::task::spawn_blocking(move || put_direct(&dest, &loc, &parts, &mode))
                .await
                .map_err(|e| object_store::Error::Generic { store: "DirectFileStore", source: Box::new(e) })??;
            if let Some(result) = done {
                return Ok(result);
            }
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;

    fn store(dir: &FsPath) -> DirectFileStore {
        DirectFileStore::new(LocalFileSystem::new_with_prefix(dir).unwrap())
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4096) as u8).collect()
    }

    #[tokio::test]
    async fn writes_every_size_exactly_and_lists_no_staging_files() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let sizes = [0, 1, 4095, 4096, 4097, CHUNK - 1, CHUNK, CHUNK + 4096, 3 * CHUNK + 17];
        for (i, len) in sizes.iter().enumerate() {
            let key = Path::from(format!("a/b/file-{i}.json"));
            // Several parts, split off alignment.
            let d = data(*len);
            let cut = len / 3 + 1;
            let payload: PutPayload = if *len > cut {
                vec![Bytes::copy_from_slice(&d[..cut]), Bytes::copy_from_slice(&d[cut..])].into_iter().collect()
            } else {
                PutPayload::from(d.clone())
            };
            let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
            s.put_opts(&key, payload, opts).await.unwrap();
            let back = s.get(&key).await.unwrap().bytes().await.unwrap();
            assert_eq!(back.len(), *len);
            assert!(back[..] == d[..], "content of {len} bytes");
        }
        let listed: Vec<ObjectMeta> = s.list(None).try_collect().await.unwrap();
        assert_eq!(listed.len(), sizes.len(), "{listed:?}");
        let on_disk = std::fs::read_dir(dir.path().join("a/b")).unwrap().count();
        assert_eq!(on_disk, sizes.len(), "staging files left behind");
    }

    #[tokio::test]
    async fn writes_a_single_aligned_part_straight_from_its_memory() {
        // The writer's plain files: one part whose memory starts on a page (buffer memory).
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        for (i, len) in [1, 4095, 4096, 4097, CHUNK + 4096, 3 * CHUNK + 17].into_iter().enumerate() {
            let d = data(len);
            let mut m = crate::buffer::Memory::new();
            m.extend_from_slice(&d);
            let part = Bytes::from_owner(m);
            assert_eq!(part.as_ptr() as usize % ALIGN, 0, "buffer memory is page aligned");
            let key = Path::from(format!("aligned/file-{i}.json"));
            s.put_opts(&key, PutPayload::from(part), PutOptions::default()).await.unwrap();
            let back = s.get(&key).await.unwrap().bytes().await.unwrap();
            assert!(back[..] == d[..], "content of {len} bytes");
        }
    }

    #[tokio::test]
    async fn create_refuses_an_existing_file_and_overwrite_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let key = Path::from("x.json");
        let create = || PutOptions { mode: PutMode::Create, ..Default::default() };
        s.put_opts(&key, PutPayload::from(data(5000)), create()).await.unwrap();
        let err = s.put_opts(&key, PutPayload::from(data(10)), create()).await.unwrap_err();
        assert!(matches!(err, object_store::Error::AlreadyExists { .. }), "{err}");
        assert_eq!(s.get(&key).await.unwrap().bytes().await.unwrap().len(), 5000, "the first file stays");
        s.put_opts(&key, PutPayload::from(data(10)), PutOptions::default()).await.unwrap();
        assert_eq!(s.get(&key).await.unwrap().bytes().await.unwrap()[..], data(10)[..]);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "staging files left behind");
    }
}
