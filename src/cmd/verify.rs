//! `kbackup verify`: audit the backups of a topic against what Kafka still retains
//! ([`crate::audit::topic`] does the audit; this prints it).

use crate::audit::topic::{AuditError, Options, PartitionAudit};
use crate::audit::Report;
use crate::cmd::{load_config, ConfigArg, ExitError};
use crate::listing::{parse_partitions, DayArg};
use crate::outln;

/// Arguments of `kbackup verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Topic to audit.
    #[arg(long)]
    pub topic: String,
    /// Only events dated on or after this day: YYYY-MM-DD, `today`, `yesterday` or `-N` days
    /// (in the topic's output time zone).
    #[arg(long, allow_hyphen_values = true)]
    pub from: Option<DayArg>,
    /// Only events dated on or before this day (same forms).
    #[arg(long, allow_hyphen_values = true)]
    pub to: Option<DayArg>,
    /// Only these Kafka partitions, e.g. 0,3,5-7.
    #[arg(long, conflicts_with = "shards")]
    pub partitions: Option<String>,
    /// Audit one of this many shards of the topic's partitions (contiguous ranges): the one
    /// `--shard-index` names, else the Kubernetes Indexed Job's JOB_COMPLETION_INDEX.
    #[arg(long, value_name = "COUNT")]
    pub shards: Option<u32>,
    /// Which shard (0-based) with --shards.
    #[arg(long, env = "JOB_COMPLETION_INDEX")]
    pub shard_index: Option<u32>,
    /// Require every retained message up to the end of the partition, not only up to the
    /// group's committed offset.
    #[arg(long)]
    pub to_end: bool,
    /// Skip files that cannot be read to the end (named in the report; the result is then not
    /// clean) instead of stopping at the first one.
    #[arg(long)]
    pub skip_corrupt: bool,
    /// Not clean when the oldest message above the group's commit is older than this (90s,
    /// 30m, 2h, 1d); default: the topic's max_file_age_secs plus completion_grace_secs.
    #[arg(long, value_name = "DURATION")]
    pub max_lag: Option<String>,
    /// One JSON object per partition on stdout, then one with the totals.
    #[arg(long)]
    pub json: bool,
    /// Which of the topic's outputs to audit, for a topic backed up more than once (one
    /// `[[topic]]` entry per output, e.g. JSON and Parquet): 0 is its first entry.
    #[arg(long, default_value_t = 0)]
    pub output: u8,
}

/// Audits every selected partition; exits 1 unless all are clean.
pub async fn run(a: VerifyArgs) -> anyhow::Result<()> {
    let usage = |m: String| anyhow::Error::from(ExitError { code: 2, message: m });
    let config = load_config(&a.config)?;
    config.topic(&a.topic).ok_or_else(|| usage(format!("topic `{}` is not in the config", a.topic)))?;
    let config = config.with_output(&a.topic, a.output).map_err(|e| usage(e.to_string()))?;
    let topic = config.topic(&a.topic).expect("the output's entry is the topic's");
    // `today` is the calendar day where the topic dates its files.
    let today = topic.today().map_err(|e| usage(e.to_string()))?;
    let shard = match (a.shards, a.shard_index) {
        (Some(0), _) => return Err(usage("--shards must be at least 1".into())),
        (Some(n), Some(i)) => Some((i, n)),
        (Some(_), None) => return Err(usage("--shards needs --shard-index (or JOB_COMPLETION_INDEX, as an Indexed Job sets it)".into())),
        (None, _) => None,
    };
    let opts = Options {
        topic: a.topic.clone(),
        from: a.from.map(|d| d.resolve(today)),
        to: a.to.map(|d| d.resolve(today)),
        partitions: a.partitions.as_deref().map(parse_partitions).transpose().map_err(|e| usage(e.to_string()))?,
        shard,
        to_end: a.to_end,
        skip_corrupt: a.skip_corrupt,
        max_lag: a.max_lag.as_deref().map(crate::wfs::wait::parse_duration).transpose().map_err(|e| usage(format!("--max-lag {e}")))?,
    };
    let audited = crate::audit::topic::audit(&config, &opts, |p| {
        if a.json {
            let line = serde_json::to_string(p).map_err(std::io::Error::other)?;
            writeln(&line)
        } else {
            print_partition(p).map_err(AuditError::Output)
        }
    })
    .await
    .map_err(|e| -> anyhow::Error {
        match e {
            AuditError::Usage(message) => ExitError { code: 2, message }.into(),
            AuditError::Failed(message) => ExitError { code: 1, message }.into(),
            AuditError::Output(io) => io.into(),
        }
    })?;
    let t = &audited.total;
    if a.json {
        let summary = serde_json::json!({
            "topic": audited.topic, "total": true, "clean": audited.problems == 0, "partitions": audited.partitions,
            "unpartitioned_files": audited.unpartitioned_files - audited.strays.len(),
            "stray_files": audited.strays,
            "unpartitioned_lines_unclaimed": audited.unclaimed, "report": t,
        });
        outln!("{summary}");
    } else {
        outln!(
            "total: {} expected, {} lines in {} files; missing {}, duplicated {}, duplicated mids {}, misplaced {}, unverifiable {}, lost {}, corrupt files {}, behind the commit {}",
            t.expected,
            t.found_lines,
            t.files,
            t.missing_offsets.len(),
            t.duplicated_offsets.len(),
            t.duplicated_mids,
            t.misplaced_lines,
            t.unverifiable_lines,
            t.lost_offsets,
            t.corrupt_files.len(),
            t.behind
        );
        if audited.unpartitioned_files > 0 {
            outln!(
                "note: {} file(s) without a Kafka partition in their name were read for every partition audited{}",
                audited.unpartitioned_files,
                match (audited.unclaimed, audited.all_partitions()) {
                    (0, _) => String::new(),
                    (n, true) => format!("; {n} of their lines match no retained message of any partition (unverifiable)"),
                    (n, false) => format!("; {n} of their lines match none of the partitions audited (not judged: they may belong to others)"),
                }
            );
        }
        for key in &audited.strays {
            outln!("  STRAY: {key}: not a backup file name, but under a date that readers of the date read whole; its lines were audited with the files without a partition (remove it, or rename it to what it holds)");
        }
    }
    if audited.problems > 0 {
        return Err(ExitError { code: 1, message: format!("not clean: {} problem(s); see the report above", audited.problems) }.into());
    }
    if !a.json {
        outln!("clean");
    }
    Ok(())
}

fn writeln(line: &str) -> Result<(), AuditError> {
    use std::io::Write as _;
    writeln!(std::io::stdout().lock(), "{line}")?;
    Ok(())
}

fn print_partition(a: &PartitionAudit) -> std::io::Result<()> {
    let (p, low, c, high, r): (i32, i64, Option<i64>, i64, &Report) = (a.partition, a.low, a.committed, a.high, &a.report);
    let show = |v: &[i64]| {
        let head: Vec<String> = v.iter().take(10).map(i64::to_string).collect();
        if v.len() > 10 {
            format!("{} …", head.join(","))
        } else {
            head.join(",")
        }
    };
    let committed = match (c, r.behind_secs) {
        (Some(c), Some(age)) => format!("{c} ({} behind the end, the oldest {age} s old)", r.behind),
        (Some(c), None) => c.to_string(),
        (None, _) => "none".to_string(),
    };
    outln!(
        "partition {p}: kafka [{low}, {high}) committed {committed}; {} expected, {} lines in {} files; missing {}{}; duplicated {}{}; duplicated mids {}; misplaced {}; unverifiable {}",
        r.expected,
        r.found_lines,
        r.files,
        r.missing_offsets.len(),
        if r.missing_offsets.is_empty() { String::new() } else { format!(" (offsets {})", show(&r.missing_offsets)) },
        r.duplicated_offsets.len(),
        if r.duplicated_offsets.is_empty() { String::new() } else { format!(" (offsets {})", show(&r.duplicated_offsets)) },
        r.duplicated_mids,
        r.misplaced_lines,
        r.unverifiable_lines,
    );
    if r.unverifiable_lines > 0 {
        if low == 0 {
            outln!("  {} stored line(s) match no message of partition {p}, although Kafka still holds it from offset 0: they are not from this partition", r.unverifiable_lines);
        } else {
            outln!("  {} stored line(s) match no message Kafka still holds (it deleted offsets below {low}): older than retention, or not from this partition; narrow --from/--to to retained dates", r.unverifiable_lines);
        }
    }
    if r.lost_offsets > 0 {
        outln!(
            "  LOST: {} offset(s) [{}, {low}) were deleted by Kafka before the group committed them: never backed up",
            r.lost_offsets,
            low - r.lost_offsets as i64
        );
    }
    if r.lagging {
        let since = r.oldest_behind_ms.and_then(chrono::DateTime::from_timestamp_millis).map(|d| d.to_rfc3339()).unwrap_or_default();
        outln!(
            "  BEHIND: {} message(s) above the group's commit, the oldest from {since} ({} s old, over the limit: --max-lag, else max_file_age_secs + completion_grace_secs): the writer is stalled or far behind, and nothing above the commit is proven backed up",
            r.behind,
            r.behind_secs.unwrap_or_default()
        );
    }
    if r.never_committed {
        outln!("  the group has never committed an offset for partition {p}: nothing is proven backed up (wrong group_id? or use --to-end)");
    }
    for k in &r.corrupt_files {
        outln!("  corrupt: {k}");
    }
    if r.markers > 0 {
        outln!("  completion markers: {} checked, {} error(s)", r.markers, r.marker_errors.len());
    }
    for e in &r.marker_errors {
        outln!("  MARKER: {e}");
    }
    Ok(())
}
