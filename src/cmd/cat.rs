//! `kbackup cat`: stream the events of selected backup files to stdout, decompressed.

use std::io::{Read, Write};

use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;

use crate::cmd::ls::SelectArgs;
use crate::cmd::ExitError;

/// Arguments of `kbackup cat`.
#[derive(Debug, clap::Args)]
pub struct CatArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// Skip corrupt or truncated files (named on stderr) instead of stopping at the first one.
    #[arg(long)]
    pub skip_corrupt: bool,
}

/// Writes every line of every selected file, in (date, partition, timestamp) order.
pub async fn run(a: CatArgs) -> anyhow::Result<()> {
    let (storage, listed, left_out) = a.select.resolve().await?;
    if left_out > 0 {
        eprintln!("note: {left_out} old-name file(s) without a Kafka partition were left out; add --include-unpartitioned");
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    let mut corrupt = 0;
    for l in &listed {
        let raw = storage.store.get(&ObjectPath::from(l.key.as_str())).await?.bytes().await?;
        let result = copy(&mut crate::seal::reader(&l.key, &raw), &mut out);
        match result {
            Ok(()) => {}
            Err(CopyError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(CopyError::Output(e)) => return Err(e.into()),
            Err(CopyError::Input(e)) => {
                corrupt += 1;
                out.flush()?;
                if !a.skip_corrupt {
                    return Err(ExitError {
                        code: 1,
                        message: format!(
                            "{}: corrupt or truncated ({e}); the lines before the damage were printed; --skip-corrupt continues past it",
                            l.key
                        ),
                    }
                    .into());
                }
                eprintln!("warning: {}: corrupt or truncated ({e}); skipped the rest of it", l.key);
            }
        }
    }
    out.flush()?;
    if corrupt > 0 {
        return Err(ExitError { code: 1, message: format!("{corrupt} corrupt file(s) skipped; every other line was printed") }.into());
    }
    Ok(())
}

enum CopyError {
    Input(std::io::Error),
    Output(std::io::Error),
}

fn copy(r: &mut dyn Read, w: &mut dyn Write) -> Result<(), CopyError> {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = r.read(&mut buf).map_err(CopyError::Input)?;
        if n == 0 {
            return Ok(());
        }
        w.write_all(&buf[..n]).map_err(CopyError::Output)?;
    }
}
