//! `/metrics` and the health probes while `run` backs up a stream, through a storage outage.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::proxy::Faults;
use common::*;

const IST_MIDNIGHT: i64 = 1_580_495_400_000;

async fn get(url: &str) -> (u16, String) {
    match reqwest::get(url).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
}

/// Sum of every sample of `name` (across labels) in a Prometheus text page.
fn metric(page: &str, name: &str) -> Option<f64> {
    let vals: Vec<f64> = page
        .lines()
        .filter(|l| !l.starts_with('#') && (l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{"))))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!vals.is_empty()).then(|| vals.iter().sum())
}

async fn wait_async<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "timed out after {secs}s waiting for {what}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_and_readiness_through_a_storage_outage() {
    let Some(stack) = stack() else { return };
    let (proxy, via_proxy) = stack.through_proxy(Faults::default(), 1).await;
    let topic = unique("ops");
    stack.create_topic(&topic, 2).await;
    let producer = stack.producer();
    let mut expected = Vec::new();
    let mut n = 0;
    let mut produce = |count: usize| {
        let (stack, producer, topic) = (stack.clone(), producer.clone(), topic.clone());
        let start = n;
        n += count;
        async move {
            let mut out = Vec::new();
            for i in start..start + count {
                let line = format!(r#"{{"mid":"o-{i}","syncts":{}}}"#, IST_MIDNIGHT + i as i64);
                let p = (i % 2) as i32;
                stack.produce(&producer, &topic, p, None, line.as_bytes()).await;
                out.push(Expect { line: line.into_bytes(), partition: p, date: "2020-02-01".into(), dir: String::new() });
            }
            out
        }
    };
    expected.extend(produce(200).await);

    let container = unique("c");
    let group = unique("g");
    let dir = tempfile::tempdir().unwrap();
    let text = config(&via_proxy, &container, &group, &topic_section(&topic, "unique/raw", ""), 1)
        .replace("create_container = true", "create_container = true\nrequest_timeout_secs = 3");
    let cfg = write_config(dir.path(), &text);
    let mut run = Running::start(&via_proxy, &cfg, dir.path().join("run.log"), &[]);
    run.wait_live(Duration::from_secs(30));
    let base = format!("http://{}", run.metrics_addr());

    // Healthy: ready, files uploaded, lag down to 0 on both partitions.
    assert_eq!(get(&format!("{base}/health/live")).await.0, 200);
    wait_async("ready", 60, || async { (get(&format!("{base}/health/ready")).await.0 == 200).then_some(()) }).await;
    let uploaded_before = wait_async("lag 0 and files uploaded", 60, || async {
        let (_, page) = get(&format!("{base}/metrics")).await;
        let files = metric(&page, "kbackup_files_uploaded_total")?;
        let lag = metric(&page, "kbackup_consumer_lag")?;
        let parts = page.lines().filter(|l| l.starts_with("kbackup_consumer_lag{")).count();
        (files > 0.0 && lag == 0.0 && parts == 2).then_some(files)
    })
    .await;
    let (_, page) = get(&format!("{base}/metrics")).await;
    for name in [
        "kbackup_events_consumed_total",
        "kbackup_bytes_uploaded_total",
        "kbackup_upload_duration_seconds_count",
        "kbackup_commits_total",
        "kbackup_build_info",
        "kbackup_buffered_bytes",
        "kbackup_inflight_bytes",
        "kbackup_buffer_pool_bytes",
        "kbackup_oldest_buffer_age_seconds",
        "kbackup_rebalances_total",
    ] {
        assert!(metric(&page, name).is_some(), "{name} missing from:\n{page}");
    }
    assert_eq!(metric(&page, "kbackup_events_consumed_total"), Some(200.0));
    assert!(!page.contains("AccountKey") && !page.contains(AZURITE_KEY));

    // Storage unreachable: uploads retry, readiness turns 503, lag grows.
    proxy.down.store(true, Ordering::Relaxed);
    expected.extend(produce(200).await);
    wait_async("ready to turn 503", 60, || async { (get(&format!("{base}/health/ready")).await.0 == 503).then_some(()) }).await;
    wait_async("lag to grow and retries to be counted", 60, || async {
        let (_, page) = get(&format!("{base}/metrics")).await;
        (metric(&page, "kbackup_consumer_lag")? > 0.0 && metric(&page, "kbackup_upload_retries_total")? > 0.0).then_some(())
    })
    .await;
    assert_eq!(get(&format!("{base}/health/live")).await.0, 200, "still live while storage is down");

    // Storage back: everything recovers.
    proxy.down.store(false, Ordering::Relaxed);
    wait_async("ready again", 90, || async { (get(&format!("{base}/health/ready")).await.0 == 200).then_some(()) }).await;
    wait_async("lag back to 0 and more files", 90, || async {
        let (_, page) = get(&format!("{base}/metrics")).await;
        (metric(&page, "kbackup_consumer_lag")? == 0.0 && metric(&page, "kbackup_files_uploaded_total")? > uploaded_before).then_some(())
    })
    .await;
    assert_eq!(run.terminate(Duration::from_secs(60)), 0);
    assert_exactly_once(&read_all(&stack.storage(&container)).await, "unique/raw", &expected);
    assert!(proxy.stats.refused_while_down.load(Ordering::Relaxed) > 0);
}

/// Kafka deleting what was never backed up is the loudest event kbackup knows: an error with
/// the exact count, a counter, readiness failing, a non-zero exit, and `verify` reporting it.
/// Before it happens, the retention headroom gauge says how close it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn offsets_deleted_before_backup_are_loud() {
    let Some(stack) = stack() else { return };
    let topic = unique("lost");
    let retention_ms = 86_400_000i64;
    stack.create_topic_with(&topic, 2, &[("retention.ms", &retention_ms.to_string())]).await;
    let producer = stack.producer();
    let produce = |from: usize, to: usize, partition: i32| {
        let (stack, producer, topic) = (stack.clone(), producer.clone(), topic.clone());
        async move {
            for i in from..to {
                let v = format!(r#"{{"mid":"l-{i}","syncts":{}}}"#, IST_MIDNIGHT + i as i64);
                stack.produce(&producer, &topic, partition, None, v.as_bytes()).await;
            }
        }
    };
    produce(0, 50, 0).await;
    produce(50, 100, 1).await;
    let container = unique("c");
    let group = unique("g");
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &config(&stack, &container, &group, &topic_section(&topic, "unique/raw", ""), 2));
    let mut first = Running::start(&stack, &cfg, dir.path().join("first.log"), &["--until-caught-up"]);
    assert_eq!(first.wait(Duration::from_secs(90)), 0, "{}", first.log_text());
    assert_eq!(stack.committed(&group, &topic, 2), vec![50, 50]);

    // The writer is stopped while 50 more events arrive and retention deletes 30 of them.
    produce(100, 150, 0).await;
    stack.delete_records(&topic, 0, 80).await;

    let verify = kbackup(&stack, &["verify", "--config", cfg.to_str().unwrap(), "--topic", &topic, "--json"]).output().unwrap();
    let out = String::from_utf8_lossy(&verify.stdout);
    assert_eq!(verify.status.code(), Some(1), "{out}");
    let p0: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!((p0["partition"].as_i64(), p0["lost_offsets"].as_u64(), p0["clean"].as_bool()), (Some(0), Some(30), Some(false)), "{out}");

    let mut run = Running::start(&stack, &cfg, dir.path().join("run.log"), &[]);
    let base = format!("http://{}", run.metrics_addr());
    let page = wait_async("the lost-offsets counter", 60, || {
        let url = format!("{base}/metrics");
        async move {
            let (_, page) = get(&url).await;
            (metric(&page, "kbackup_offsets_lost_total") == Some(30.0)).then_some(page)
        }
    })
    .await;
    assert!(page.contains(&format!("kbackup_offsets_lost_total{{topic=\"{topic}\",partition=\"0\"}} 30")), "{page}");
    let (status, body) = get(&format!("{base}/health/ready")).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("DATA LOST") && body.contains("30 offset(s) [50, 80)"), "{body}");
    // Partition 1 holds nothing uncommitted: its headroom is the whole retention.
    let page = wait_async("the retention headroom gauge", 30, || {
        let url = format!("{base}/metrics");
        async move {
            let (_, page) = get(&url).await;
            page.contains("kbackup_retention_headroom_seconds").then_some(page)
        }
    })
    .await;
    let headroom = page
        .lines()
        .find(|l| l.starts_with(&format!("kbackup_retention_headroom_seconds{{topic=\"{topic}\",partition=\"1\"}}")))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("{page}"));
    assert!(headroom <= retention_ms as f64 / 1000.0 && headroom > retention_ms as f64 / 1000.0 - 120.0, "{headroom}");
    wait_committed(&stack, &group, &topic, 2, &mut run);
    let log_path = run.log.clone();
    let code = run.terminate(Duration::from_secs(60));
    let log = std::fs::read_to_string(log_path).unwrap();
    assert_eq!(code, 1, "a run that lost data does not exit 0:\n{log}");
    assert!(log.contains("ERROR") && log.contains("DATA LOST") && log.contains("lost=30"), "{log}");
    // What Kafka still held was backed up; the report now shows the commit past the gap.
    assert_eq!(stack.committed(&group, &topic, 2), vec![100, 50]);
}
