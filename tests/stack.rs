//! Foundation tests against the real dev stack: Kafka round trip, the storage layer on Azurite,
//! and `kbackup check`.

mod common;

use std::time::Duration;

use common::*;
use futures::TryStreamExt;
use kbackup::config::StorageConfig;
use kbackup::storage::{Storage, StorageError};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::ClientConfig;

#[tokio::test]
async fn kafka_produce_then_consume_round_trip() {
    let Some(stack) = stack() else { return };
    let topic = unique("roundtrip");
    stack.create_topic(&topic, 2).await;
    let p = stack.producer();
    let off = stack.produce(&p, &topic, 1, Some("did-1"), br#"{"eid":"LOG"}"#).await;
    assert_eq!(off, 0);
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &stack.brokers)
        .set("group.id", unique("g"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    c.subscribe(&[&topic]).unwrap();
    let got = wait_for("the produced message", Duration::from_secs(30), || match c.poll(Duration::from_millis(200)) {
        Some(Ok(m)) => Some((m.partition(), m.key().map(<[u8]>::to_vec), m.payload().map(<[u8]>::to_vec))),
        _ => None,
    });
    assert_eq!(got, (1, Some(b"did-1".to_vec()), Some(br#"{"eid":"LOG"}"#.to_vec())));
}

#[tokio::test]
async fn storage_put_list_get_delete_on_azurite() {
    let Some(stack) = stack() else { return };
    let container = unique("c");
    let storage = stack.storage(&container);
    storage.ensure_container(true).await.unwrap();
    storage.ensure_container(true).await.expect("creating an existing container is a no-op");
    storage.probe_write().await.unwrap();

    let key = ObjectPath::from("unique/raw/2020-02-01-3-1580495403199.json.gz");
    storage.store.put(&key, b"hello\n".to_vec().into()).await.unwrap();
    let listed: Vec<_> = storage.store.list(Some(&ObjectPath::from("unique/raw"))).try_collect().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].location, key);
    assert_eq!(listed[0].size, 6);
    let got = storage.store.get(&key).await.unwrap().bytes().await.unwrap();
    assert_eq!(&got[..], b"hello\n");
    storage.store.delete(&key).await.unwrap();
    let listed: Vec<_> = storage.store.list(None).try_collect().await.unwrap();
    assert!(listed.is_empty(), "probe and blob are gone: {listed:?}");
}

#[tokio::test]
async fn missing_container_is_a_clear_error_without_create() {
    let Some(stack) = stack() else { return };
    let storage = Storage::open(&StorageConfig {
        url: format!("az://{}", unique("nope")),
        connection_string: Some(stack.connection_string.clone()),
        ..Default::default()
    })
    .unwrap();
    let e = storage.ensure_container(false).await.unwrap_err();
    assert!(matches!(e, StorageError::MissingContainer { .. }), "{e}");
    assert!(e.to_string().contains("create_container"), "{e}");
}

#[tokio::test]
async fn wrong_account_key_fails_without_leaking_it() {
    let Some(stack) = stack() else { return };
    let bad_key = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=";
    let cs = stack.connection_string.replace(AZURITE_KEY, bad_key);
    let storage = Storage::open(&StorageConfig {
        url: format!("az://{}", unique("c")),
        connection_string: Some(cs),
        create_container: true,
        ..Default::default()
    })
    .unwrap();
    let e = async {
        storage.ensure_container(true).await?;
        storage.probe_write().await
    }
    .await
    .unwrap_err();
    let text = e.to_string();
    assert!(!text.contains(bad_key) && !text.contains(AZURITE_KEY), "{text}");
}

#[tokio::test]
async fn file_storage_works_too() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(&StorageConfig { url: format!("file://{}/out", dir.path().display()), ..Default::default() }).unwrap();
    storage.ensure_container(true).await.unwrap();
    storage.probe_write().await.unwrap();
    storage.store.put(&ObjectPath::from("a/b.json"), b"x\n".to_vec().into()).await.unwrap();
    assert_eq!(std::fs::read(dir.path().join("out/a/b.json")).unwrap(), b"x\n");
}

fn config_text(stack: &Stack, topics: &[(&str, &str)], container: &str) -> String {
    let mut s = format!("[kafka]\nbrokers = \"{}\"\ngroup_id = \"g\"\n{}", stack.brokers, stack.storage_section(container));
    for (t, path) in topics {
        s.push_str(&format!("[[topic]]\nname = \"{t}\"\npath = \"{path}\"\n"));
    }
    s
}

#[tokio::test]
async fn check_names_a_typo_key_and_exits_2() {
    let Some(stack) = stack() else { return };
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(&stack, &[("t", "unique/raw")], &unique("c")).replace("path =", "paht =");
    let cfg = write_config(dir.path(), &text);
    let out = kbackup(&stack, &["check", "--config", cfg.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("paht"), "{err}");

    let text = config_text(&stack, &[("t", "unique/raw")], &unique("c")).replace("[kafka]", "[kafka]\nbrokerz = \"x\"");
    let cfg = write_config(dir.path(), &text);
    let out = kbackup(&stack, &["check", "--config", cfg.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("brokerz"));
}

#[tokio::test]
async fn check_prints_partition_counts_on_a_good_config() {
    let Some(stack) = stack() else { return };
    let (a, b) = (unique("unique"), unique("denorm"));
    stack.create_topic(&a, 3).await;
    stack.create_topic(&b, 2).await;
    let dir = tempfile::tempdir().unwrap();
    let container = unique("c");
    let cfg = write_config(dir.path(), &config_text(&stack, &[(&a, "unique/raw"), (&b, "denorm")], &container));
    let out = kbackup(&stack, &["check", "--config", cfg.to_str().unwrap()]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("topic {a}: 3 partitions")), "{stdout}");
    assert!(stdout.contains(&format!("topic {b}: 2 partitions")), "{stdout}");
    assert!(stdout.contains("write probe ok"), "{stdout}");
    assert!(!stdout.contains(AZURITE_KEY) && !stdout.contains(S3_SECRET));
    // A missing topic is a failed check (exit 1), not a config error.
    let missing = write_config(dir.path(), &config_text(&stack, &[(&a, "unique/raw"), ("no-such-topic-kb", "x")], &container));
    let out = kbackup(&stack, &["check", "--config", missing.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no-such-topic-kb: NOT FOUND"));
    if backend() == Backend::S3 {
        // moto accepts any signature, so a wrong secret cannot be shown failing here.
        assert!(stdout.contains("credential: access key from storage.access_key_id"), "{stdout}");
        return;
    }
    if backend() == Backend::Gcs {
        // The emulator takes anonymous requests: the credential source is what can be checked.
        assert!(stdout.contains("credential: service-account key from storage.service_account_key"), "{stdout}");
        return;
    }
    assert!(stdout.contains("credential: account key from AZURE_STORAGE_CONNECTION_STRING"), "{stdout}");

    // An explicit key in the config wins over the environment's connection string: a wrong one
    // fails the check (it was silently ignored), and the output says where the key came from.
    let wrong = "d3JvbmcgYnV0IHZhbGlkIGJhc2U2NCBrZXkgZm9yIHRoZSB0ZXN0IG9ubHk=";
    let text = config_text(&stack, &[(&a, "unique/raw")], &container).replace("[storage]", &format!("[storage]\naccess_key = \"{wrong}\""));
    let cfg = write_config(dir.path(), &text);
    let out = kbackup(&stack, &["check", "--config", cfg.to_str().unwrap()]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAILED") && stdout.contains("credential: account key from storage.access_key"), "{stdout}");
    assert!(!stdout.contains(wrong) && !String::from_utf8_lossy(&out.stderr).contains(wrong), "the key never appears");
}

/// The README's `eval "$(scripts/devstack env)"` must reach the commands run after it, so the
/// variables are exported (they were only set in the shell). No services needed.
#[test]
fn devstack_env_exports_its_variables() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/devstack");
    let out = std::process::Command::new("bash")
        .args(["-c", &format!("eval \"$({script} env)\"; env")])
        .env_remove("KAFKA_BROKERS")
        .env_remove("AZURE_STORAGE_CONNECTION_STRING")
        .output()
        .unwrap();
    let env = String::from_utf8_lossy(&out.stdout);
    assert!(env.lines().any(|l| l.starts_with("KAFKA_BROKERS=127.0.0.1:")), "{env}");
    assert!(env.lines().any(|l| l.starts_with("AZURE_STORAGE_CONNECTION_STRING=DefaultEndpointsProtocol=http;")), "{env}");
}

/// The exactly-once protocol rests on this: a file is created only if its name is free. On the
/// backend under test (Azurite, or the S3 server with `KBACKUP_TEST_STORAGE=s3`) a second upload
/// under the same name with other content is a conflict and leaves the first untouched, and the
/// same content is recognised as already there.
#[tokio::test]
async fn uploads_never_overwrite() {
    use kbackup::upload::{put_new, Existing, Outcome};
    let Some(stack) = stack() else { return };
    let container = unique("c");
    let storage = stack.storage(&container);
    storage.ensure_container(true).await.unwrap();
    let key = "unique/raw/2020-02-01-0-1580495403199.json.gz";
    let first = bytes::Bytes::from_static(b"first\n");
    assert_eq!(put_new(storage.store.as_ref(), key, first.clone(), Existing::Compare, |_| {}).await.0, Outcome::Stored);
    assert_eq!(put_new(storage.store.as_ref(), key, first.clone(), Existing::Compare, |_| {}).await.0, Outcome::AlreadyThere);
    let other = bytes::Bytes::from_static(b"second\n");
    assert_eq!(put_new(storage.store.as_ref(), key, other, Existing::Compare, |_| {}).await.0, Outcome::Conflict);
    let got = storage.store.get(&object_store::path::Path::from(key)).await.unwrap().bytes().await.unwrap();
    assert_eq!(&got[..], b"first\n", "{:?}: the first upload must stay", backend());
}
