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
    let run = Running::start(&via_proxy, &cfg, dir.path().join("run.log"), &[]);
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
