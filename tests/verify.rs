//! `kbackup verify` finds missing, doubled and misfiled events, and passes a clean backup.

mod common;

use std::time::Duration;

use common::*;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;

const IST_MIDNIGHT: i64 = 1_580_495_400_000;

#[tokio::test(flavor = "multi_thread")]
async fn verify_reports_clean_then_missing_and_duplicated() {
    let Some(stack) = stack() else { return };
    let topic = unique("verify");
    stack.create_topic(&topic, 2).await;
    let producer = stack.producer();
    for i in 0..100 {
        let v = format!(r#"{{"mid":"v-{i}","syncts":{}}}"#, IST_MIDNIGHT + (i % 2) * 1000 - 500);
        stack.produce(&producer, &topic, (i % 2) as i32, None, v.as_bytes()).await;
    }
    let container = unique("c");
    let group = unique("g");
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &config(&stack, &container, &group, &topic_section(&topic, "unique/raw", "max_file_bytes = 800"), 3600));
    let mut run = Running::start(&stack, &cfg, dir.path().join("run.log"), &["--until-caught-up"]);
    assert_eq!(run.wait(Duration::from_secs(90)), 0, "{}", run.log_text());

    let verify = |extra: &[&str]| {
        let mut args = vec!["verify", "--config", cfg.to_str().unwrap(), "--topic", topic.as_str()];
        args.extend_from_slice(extra);
        let out = kbackup(&stack, &args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).to_string())
    };
    let (code, out) = verify(&[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("100 expected, 100 lines"), "{out}");
    assert!(out.trim_end().ends_with("clean"), "{out}");

    // Double one file under another name and delete another: both must be reported.
    let storage = stack.storage(&container);
    let blobs = read_all(&storage).await;
    let mut keys = blobs.keys().filter(|k| k.contains("-0-"));
    let doubled = keys.next().unwrap().clone();
    let deleted = keys.next().unwrap().clone();
    let copy = doubled.replace(".json.gz", "").rsplit_once('-').map(|(a, _)| format!("{a}-1.json.gz")).unwrap();
    let raw = storage.store.get(&ObjectPath::from(doubled.as_str())).await.unwrap().bytes().await.unwrap();
    storage.store.put(&ObjectPath::from(copy.as_str()), raw.to_vec().into()).await.unwrap();
    storage.store.delete(&ObjectPath::from(deleted.as_str())).await.unwrap();
    let doubled_lines = blobs[&doubled].iter().filter(|&&b| b == b'\n').count();
    let deleted_lines = blobs[&deleted].iter().filter(|&&b| b == b'\n').count();

    let (code, out) = verify(&[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&format!("missing {deleted_lines} (offsets")), "{out}");
    assert!(out.contains(&format!("duplicated {doubled_lines} (offsets")), "{out}");
    assert!(out.contains(&format!("duplicated mids {doubled_lines}")), "{out}");
    // Partition 1 is untouched and stays clean.
    let (code, out) = verify(&["--partitions", "1", "--json"]);
    assert_eq!(code, Some(0), "{out}");
    let r: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(r["expected"], 50);
    assert_eq!(r["missing_offsets"].as_array().unwrap().len(), 0);
}
