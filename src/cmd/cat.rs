//! `kbackup cat`: stream the events of selected backup files to stdout, decompressed.

use std::io::{Read, Write};

use crate::cmd::ExitError;
use crate::cmd::SelectArgs;

/// Arguments of `kbackup cat`.
#[derive(Debug, clap::Args)]
pub struct CatArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// Skip corrupt or truncated files (named on stderr) instead of stopping at the first one.
    #[arg(long)]
    pub skip_corrupt: bool,
    /// Print every line in this form, whatever the file holds: `value` (the message value, as
    /// Secor stores it) or `record` (the record envelope; from value files only the partition
    /// and value are known). Default: each file's lines as stored.
    #[arg(long, value_enum)]
    pub format: Option<CatFormat>,
}

/// The form `cat --format` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CatFormat {
    Value,
    Record,
}

/// Writes every line of every selected file, in (date, partition, timestamp) order.
pub async fn run(a: CatArgs) -> anyhow::Result<()> {
    let (storage, listed, left_out) = a.select.resolve().await?;
    if left_out > 0 {
        tracing::warn!("{left_out} old-name file(s) without a Kafka partition were left out; add --include-unpartitioned");
    }
    let twice = crate::listing::repartitioned_twice(&listed);
    if twice > 0 {
        tracing::warn!(
            "{twice} old-name file(s) are selected together with the files `kbackup repartition` split them into: their events are printed twice; select with --partitions (without --include-unpartitioned) to read each once"
        );
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    let mut corrupt = 0;
    for l in &listed {
        let raw = storage.read(&l.key).await?;
        let convert = match a.format {
            Some(CatFormat::Value) => l.name.records,
            Some(CatFormat::Record) => !l.name.records,
            None => false,
        };
        let result = if convert {
            convert_lines(&l.key, &raw, l.name.records, l.kafka_partition, &mut out)
        } else {
            copy(&mut crate::seal::reader(&l.key, &raw), &mut out)
        };
        match result {
            Ok(()) => {}
            // A closed pipe (`kbackup cat | head`) is returned as it is: `main` exits 141, quietly.
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
                tracing::warn!(key = %l.key, error = %e, "corrupt or truncated; skipped the rest of it");
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

/// Prints a file's lines in the other form: a record's value, or a value as a record.
fn convert_lines(key: &str, stored: &[u8], records: bool, partition: Option<i32>, w: &mut dyn Write) -> Result<(), CopyError> {
    let mut line_out = Vec::new();
    for (n, line) in crate::seal::lines(key, stored).enumerate() {
        let line = line.map_err(CopyError::Input)?;
        line_out.clear();
        if records {
            let r = crate::record::decode(&line)
                .map_err(|e| CopyError::Input(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("line {}: {e}", n + 1))))?;
            line_out.extend_from_slice(&r.value_line());
        } else {
            // The whole line is validated: only JSON may be embedded in the envelope as is.
            let is_json = std::str::from_utf8(&line).is_ok_and(crate::routing::is_json);
            let view = crate::record::RecordView { partition, value: Some(&line), value_is_json: is_json, ..Default::default() };
            crate::record::encode(&mut line_out, &view, []);
        }
        line_out.push(b'\n');
        w.write_all(&line_out).map_err(CopyError::Output)?;
    }
    Ok(())
}

/// Copies a file's lines as stored. A file whose last line lacks its `\n` (not one kbackup
/// wrote) gets one, so its last event and the next file's first stay two lines, as every line
/// reader sees them.
fn copy(r: &mut dyn Read, w: &mut dyn Write) -> Result<(), CopyError> {
    let mut buf = vec![0u8; 1 << 16];
    let mut last = b'\n';
    loop {
        let n = r.read(&mut buf).map_err(CopyError::Input)?;
        if n == 0 {
            if last != b'\n' {
                w.write_all(b"\n").map_err(CopyError::Output)?;
            }
            return Ok(());
        }
        last = buf[n - 1];
        w.write_all(&buf[..n]).map_err(CopyError::Output)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_final_newline_never_joins_two_events() {
        let mut out = Vec::new();
        for file in [&b"{\"n\":1}\n{\"n\":2}"[..], b"{\"n\":3}\n", b"", b"{\"n\":4}"] {
            assert!(copy(&mut &file[..], &mut out).is_ok());
        }
        assert_eq!(out, b"{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n{\"n\":4}\n");
    }

    /// Value lines shown as records: JSON is embedded, anything else (here a line that starts
    /// like JSON but is not) becomes a string, and every output line is JSON.
    #[test]
    fn value_lines_convert_to_valid_records_and_back() {
        let stored = b"{\"mid\":\"a\"}\n{\"mid\": not json\nplain\n".to_vec();
        let mut out = Vec::new();
        assert!(convert_lines("x/2020-02-01-3-1.json", &stored, false, Some(3), &mut out).is_ok());
        let lines: Vec<&[u8]> = out.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), 3);
        for l in &lines {
            let v: serde_json::Value = serde_json::from_slice(l).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(l)));
            assert_eq!(v["partition"], 3);
        }
        let mut back = Vec::new();
        assert!(convert_lines("x/2020-02-01-3-1.records.json", &out, true, Some(3), &mut back).is_ok());
        assert_eq!(back, stored, "and back to the value lines");
    }
}
