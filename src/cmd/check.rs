//! `kbackup check`: validate a config, then prove the broker and the container are usable.

use std::time::Duration;

use crate::cmd::{load_config, ConfigArg, ExitError};
use crate::storage::Storage;

/// Arguments of `kbackup check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Validate the config only (keys, values, librdkafka's verdict on [kafka.properties]);
    /// contact neither Kafka nor storage (for CI and rendered deployment files).
    #[arg(long)]
    pub offline: bool,
}

/// Prints one line per check; fails if any check fails.
pub async fn run(args: CheckArgs) -> anyhow::Result<()> {
    let config = load_config(&args.config)?;
    if !args.config.secor_properties.is_empty() {
        // Every key accounted for: mapped (the TOML), Secor-only with its reason, or unknown.
        if let Ok(loaded) = crate::secor::load(&args.config.secor_properties, &args.config.secor_property) {
            for n in &loaded.notes {
                crate::outln!("# note: {n}");
            }
            if let Ok(mapped) = crate::secor::map(&loaded.props) {
                crate::outln!("{}", crate::secor::account(&mapped).trim_end());
            }
        }
        crate::outln!("{}", crate::secor::to_toml(&config));
    }
    crate::outln!("config {}: ok ({} topic(s))", args.config.describe(), config.topics.len());
    if args.offline {
        // (Credentials usually come from the environment the deployment gives the process.)
        crate::outln!("offline: Kafka and storage not contacted");
        return Ok(());
    }
    if let Some(warning) = crate::consumer::budget_warning(&config) {
        crate::outln!("  warning: {warning}");
    }
    let mut failures = 0;
    let mut kafka_ok = false;

    let names = config.topic_names();
    let counts = crate::consumer::lookup_partition_counts(&config.kafka, &names, Duration::from_secs(15)).await;
    match counts {
        Ok(counts) => {
            kafka_ok = true;
            crate::outln!("kafka {}: reachable", config.kafka.brokers);
            for (topic, n) in counts {
                match n {
                    Some(n) => crate::outln!("  topic {topic}: {n} partitions"),
                    None => {
                        crate::outln!("  topic {topic}: NOT FOUND");
                        failures += 1;
                    }
                }
            }
        }
        Err(e) => {
            crate::outln!("kafka {}: UNREACHABLE ({e})", config.kafka.brokers);
            failures += 1;
        }
    }

    match Storage::open(&config.storage) {
        Ok(storage) => {
            let result = async {
                let ensured = storage.ensure_container(config.storage.create_container).await?;
                Ok::<_, crate::storage::StorageError>((ensured, storage.probe_write().await?))
            }
            .await;
            match result {
                Ok((ensured, left)) => {
                    // check changes nothing, but this: the container the writer would create.
                    let container = match ensured {
                        crate::storage::Ensured::Existed => "container ok",
                        crate::storage::Ensured::Created => "container CREATED (storage.create_container = true)",
                    };
                    crate::outln!("storage {}: {container}, write probe ok (credential: {})", storage.describe, storage.credential);
                    if let Some(left) = left {
                        crate::outln!("  warning: {left}");
                    }
                    match crate::upload::probe_create_only(storage.store.as_ref()).await {
                        Ok(p) => crate::outln!("  create-only writes proven ({} requests, {} ms)", p.requests, p.elapsed.as_millis()),
                        Err(e @ crate::upload::ProbeError::Overwrites { .. }) if config.storage.accept_overwriting_store => {
                            crate::outln!("  WARNING: {e}; accepted by storage.accept_overwriting_store = true: exactly once does not hold against a zombie writer")
                        }
                        Err(e @ crate::upload::ProbeError::Overwrites { .. }) => {
                            crate::outln!("  create-only writes: FAILED: {}", crate::upload::overwriting_store_message(&storage.describe, &e));
                            failures += 1;
                        }
                        Err(e) => {
                            crate::outln!("  create-only writes: FAILED ({e})");
                            failures += 1;
                        }
                    }
                }
                Err(e) => {
                    crate::outln!("storage {}: FAILED ({e}) (credential: {})", storage.describe, storage.credential);
                    failures += 1;
                }
            }
        }
        Err(e) => return Err(ExitError { code: 2, message: e.to_string() }.into()),
    }

    // With a [secor] section, whether `run` would start: every partition's position is
    // kbackup's, or Secor never uploaded it.
    // (Not asked when Kafka did not answer: its failure is already reported.)
    if let (Some(secor), true) = (&config.secor, kafka_ok) {
        match crate::takeover::guard(&config).await {
            Ok(()) => crate::outln!("secor: ZooKeeper {}: no position of Secor's is left to take over", secor.zookeeper),
            Err(e @ crate::takeover::GuardError::NaiveSwitch { .. }) => {
                crate::outln!("secor: NOT TAKEN OVER: {e}: kbackup takeover {}", args.config.as_args());
                failures += 1;
            }
            Err(e) => {
                crate::outln!("secor: FAILED: {e}");
                failures += 1;
            }
        }
    }

    if failures > 0 {
        return Err(ExitError { code: 1, message: format!("{failures} check(s) failed") }.into());
    }
    crate::outln!("all checks passed");
    Ok(())
}
