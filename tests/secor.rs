//! Drop-in Secor configuration: Sunbird's unique and denorm backup properties produce the same
//! blobs as the TOML config.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;

const IST_MIDNIGHT: i64 = 1_580_495_400_000;

/// (directory, date, partition) → the set of lines, ignoring upload timestamps.
fn layout(blobs: &BTreeMap<String, Vec<u8>>) -> BTreeMap<(String, String, Option<i32>), BTreeSet<Vec<u8>>> {
    let mut out: BTreeMap<_, BTreeSet<Vec<u8>>> = BTreeMap::new();
    for (key, data) in blobs {
        let Some(n) = kbackup::naming::parse_name(key) else {
            continue;
        };
        let dir = key.rsplit_once('/').map(|(d, _)| d.to_string()).unwrap_or_default();
        let entry = out.entry((dir, n.date.to_string(), n.kafka_partition)).or_default();
        for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            assert!(entry.insert(line.to_vec()), "duplicate line in {key}");
        }
    }
    out
}

fn properties(stack: &Stack, zookeeper: &str, topic: &str, group: &str, container: &str, path: &str, prefix: bool) -> String {
    let (host, port) = stack.brokers.split_once(':').unwrap();
    let mut p = format!(
        "kafka.seed.broker.host={host}\nkafka.seed.broker.port={port}\nzookeeper.quorum={zookeeper}\n\
         secor.kafka.group={group}\nsecor.kafka.topic_filter={topic}\nsecor.cloud.service=Azure\n\
         secor.azure.account.name=devstoreaccount1\nsecor.azure.account.key={AZURITE_KEY}\n\
         secor.azure.container.name={container}\nsecor.azure.endpoints.protocol=https\nsecor.azure.path={path}\n\
         secor.s3.output_file_pattern={{partition}}-{{kafkaPartition}}-{{currentTimestamp}}.json\n\
         secor.compression.codec=org.apache.hadoop.io.compress.GzipCodec\nsecor.file.extension=.gz\n\
         secor.file.reader.writer.factory=com.pinterest.secor.io.impl.DelimitedTextFileReaderWriterFactory\n\
         message.timestamp.name=syncts\nmessage.fallback.timestamp.name=@timestamp\nmessage.timestamp.input.pattern=yyyy-MM-dd\n\
         secor.message.timezone=UTC\nsecor.parser.timezone=Asia/Kolkata\nsecor.partition.output_dt_format=yyyy-MM-dd\n\
         secor.max.file.size.bytes=100000000\nsecor.max.file.age.seconds=14400\nsecor.local.path=/mnt/secor_data\nsecor.upload.on.shutdown=true\n"
    );
    if prefix {
        p.push_str("secor.partition.prefix.enable=true\nsecor.partition.prefix.identifier=eid\nsecor.partition.prefix.mapping={\"ME_WORKFLOW_SUMMARY\":\"summary\",\"DEFAULT\":\"raw\"}\n");
    }
    p
}

#[tokio::test(flavor = "multi_thread")]
async fn sunbird_secor_properties_write_what_the_toml_config_writes() {
    let Some(stack) = stack() else { return };
    // The properties name a ZooKeeper: `run` checks there that Secor never uploaded this group.
    let Some(zk) = zookeeper() else { return };
    let (unique_t, denorm_t) = (unique("unique"), unique("denorm"));
    stack.create_topic(&unique_t, 3).await;
    stack.create_topic(&denorm_t, 2).await;
    let producer = stack.producer();
    for i in 0..120 {
        let eid = if i % 4 == 0 { "ME_WORKFLOW_SUMMARY" } else { "IMPRESSION" };
        // syncts around IST midnight; @timestamp-only events use the date part (Secor's input pattern).
        let v = match i % 5 {
            0 => format!(r#"{{"eid":"{eid}","mid":"s-{i}","@timestamp":"2020-01-31T20:00:00.000Z"}}"#),
            1 => format!("not json {i}"),
            _ => format!(r#"{{"eid":"{eid}","mid":"s-{i}","syncts":{}}}"#, IST_MIDNIGHT + (i as i64 % 3 - 1) * 60_000),
        };
        stack.produce(&producer, &unique_t, i % 3, Some("k"), v.as_bytes()).await;
        stack.produce(&producer, &denorm_t, i % 2, Some("k"), v.as_bytes()).await;
    }
    let dir = tempfile::tempdir().unwrap();

    // The TOML way: one process, both topics.
    let toml_container = unique("toml");
    let toml = config(
        &stack,
        &toml_container,
        &unique("g"),
        &format!(
            "{}{}",
            topic_section(&unique_t, "unique/raw", "timestamp_input_pattern = \"%Y-%m-%d\""),
            topic_section(&denorm_t, "telemetry-denormalized", "timestamp_input_pattern = \"%Y-%m-%d\"\nprefix_field = \"eid\"\nprefix_map = { ME_WORKFLOW_SUMMARY = \"summary\", DEFAULT = \"raw\" }")
        ),
        14400,
    );
    let cfg = write_config(dir.path(), &toml);
    let mut run = Running::start(&stack, &cfg, dir.path().join("toml.log"), &["--until-caught-up"]);
    assert_eq!(run.wait(Duration::from_secs(90)), 0, "{}", run.log_text());

    // The Secor way: one process per topic, as Sunbird deployed them, from .properties files.
    // Secor does not create containers; neither does a config mapped from its properties.
    let secor_container = unique("secor");
    stack.storage(&secor_container).ensure_container(true).await.unwrap();
    for (topic, path, prefix, name) in [(&unique_t, "unique/raw", false, "unique"), (&denorm_t, "telemetry-denormalized", true, "denorm")] {
        let props = dir.path().join(format!("{name}.properties"));
        std::fs::write(&props, properties(&stack, &zk, topic, &unique("g"), &secor_container, path, prefix)).unwrap();
        let log = dir.path().join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let status = kbackup(&stack, &["run", "--secor-properties", props.to_str().unwrap(), "--until-caught-up", "--metrics-addr", "off"])
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .status()
            .unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(status.success(), "{text}");
        assert!(!text.contains(AZURITE_KEY), "the account key must not be logged");
    }
    let toml_blobs = read_all(&stack.storage(&toml_container)).await;
    let secor_blobs = read_all(&stack.storage(&secor_container)).await;
    let (a, b) = (layout(&toml_blobs), layout(&secor_blobs));
    assert!(a.keys().any(|(d, _, _)| d == "telemetry-denormalized/summary"), "{:?}", a.keys());
    assert!(a.keys().any(|(d, date, _)| d == "unique/raw" && date == "1970-01-01"), "{:?}", a.keys());
    assert!(a.keys().any(|(_, date, _)| date == "2020-01-31"), "@timestamp date part: {:?}", a.keys());
    assert_eq!(a, b);
}

#[tokio::test]
async fn a_typo_in_secor_properties_is_reported() {
    let Some(stack) = stack() else { return };
    let dir = tempfile::tempdir().unwrap();
    let props = dir.path().join("typo.properties");
    let text =
        properties(&stack, "127.0.0.1:1", "t", "g", "cont1", "unique/raw", false).replace("secor.max.file.age.seconds", "secor.max.file.age.secnds");
    std::fs::write(&props, text).unwrap();
    let out = kbackup(&stack, &["check", "--secor-properties", props.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("secor.max.file.age.secnds"), "{err}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("[[topic]]") && stdout.contains("output_timezone = \"Asia/Kolkata\""), "{stdout}");
    assert!(!stdout.contains(AZURITE_KEY), "{stdout}");

    let bad = dir.path().join("bad.properties");
    std::fs::write(
        &bad,
        // Secor keeps a key's first value, so the codec goes in place of the gzip one.
        properties(&stack, "127.0.0.1:1", "t", "g", "cont1", "unique/raw", false)
            .replace("org.apache.hadoop.io.compress.GzipCodec", "org.apache.hadoop.io.compress.SnappyCodec"),
    )
    .unwrap();
    let out = kbackup(&stack, &["check", "--secor-properties", bad.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("secor.compression.codec"));
}
