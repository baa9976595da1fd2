//! The exactly-once protocol rests on create-only writes. `check` and `run` prove them before
//! anything is consumed: against the real servers the probe passes; behind a proxy that plays a
//! store answering a second create as written, `check` fails and `run` refuses (exit 2) unless
//! `storage.accept_overwriting_store` says to run anyway (logged, and a gauge at 0).

mod common;

use std::time::Duration;

use common::proxy::Faults;
use common::*;

fn out(stack: &Stack, args: &[&str]) -> (i32, String, String) {
    let o = kbackup(stack, args).output().unwrap();
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into(), String::from_utf8_lossy(&o.stderr).into())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_create_only_probe_passes_on_real_stores_and_refuses_an_overwriting_one() {
    let Some(stack) = stack() else { return };
    let topic = unique("probe");
    stack.create_topic(&topic, 1).await;
    let producer = stack.producer();
    for i in 0..5 {
        stack.produce(&producer, &topic, 0, None, format!(r#"{{"mid":"p-{i}","syncts":1580495400000}}"#).as_bytes()).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let container = unique("c");
    let section = topic_section(&topic, "unique/raw", "");

    // The real server honours create-only writes.
    let real = write_config(dir.path(), &config(&stack, &container, &unique("g"), &section, 3600));
    let (code, stdout, err) = out(&stack, &["check", "--config", real.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{err}");
    assert!(stdout.contains("create-only writes proven (4 requests"), "{stdout}");

    // A store that answers a second create as written.
    let faults = Faults { accept_second_create: true, ..Default::default() };
    let (_proxy, via) = stack.through_proxy(faults, 24).await;
    let sub = dir.path().join("overwriting");
    std::fs::create_dir_all(&sub).unwrap();
    let group = unique("g");
    let text = config(&via, &container, &group, &section, 3600);
    let cfg = write_config(&sub, &text);
    let (code, stdout, _) = out(&via, &["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("create-only writes: FAILED") && stdout.contains("storage.accept_overwriting_store"), "{stdout}");
    let (code, _, err) = out(&via, &["run", "--config", cfg.to_str().unwrap(), "--until-caught-up", "--metrics-addr", "off"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("does not honour conditional creates") && err.contains("zombie"), "{err}");
    assert_eq!(stack.committed(&group, &topic, 1), vec![-1], "refused before consuming anything");

    // The explicit setting runs anyway, says so, and the gauge shows it.
    let accepted = sub.join("accepted");
    std::fs::create_dir_all(&accepted).unwrap();
    let cfg = write_config(&accepted, &text.replace("[writer]", "accept_overwriting_store = true\n[writer]"));
    let (code, stdout, _) = out(&via, &["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("WARNING") && stdout.contains("accepted by storage.accept_overwriting_store"), "{stdout}");
    let mut run = Running::start(&via, &cfg, accepted.join("run.log"), &[]);
    run.wait_live(Duration::from_secs(30));
    wait_for("the create-only gauge at 0", Duration::from_secs(60), || {
        (metric_with(&run.metrics_page()?, "kbackup_storage_create_only", &[]) == Some(0.0)).then_some(())
    });
    run.wait_consumed_to(&topic, 0..1, 5, "the writer to consume the topic");
    assert_eq!(run.terminate(Duration::from_secs(60)), 0);
    assert_eq!(stack.committed(&group, &topic, 1), vec![5]);
}
