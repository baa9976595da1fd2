//! Every command against the dev stack's SASL_SSL listener only (TLS with the devstack's
//! self-signed CA; SCRAM-SHA-512 and PLAIN users): `check`, `run`, `verify`, `replay` and
//! `plan --mode job-manager`, a 2 MB event that needs `message.max.bytes` on the producer too,
//! and a wrong password that fails clearly without showing it. The test harness itself sets up
//! topics and reads results over the plain listener.

mod common;

use common::*;

struct Secured {
    brokers: String,
    ca: String,
    scram: (String, String),
    plain: (String, String),
}

/// The SASL_SSL listener's settings from `scripts/devstack env`, or `None` (skipped) outside CI.
fn secured() -> Option<Secured> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let got = (|| {
        Some(Secured {
            brokers: var("KAFKA_SASL_BROKERS")?,
            ca: var("KAFKA_SASL_CA")?,
            scram: (var("KAFKA_SCRAM_USER")?, var("KAFKA_SCRAM_PASSWORD")?),
            plain: (var("KAFKA_PLAIN_USER")?, var("KAFKA_PLAIN_PASSWORD")?),
        })
    })();
    if got.is_none() {
        let msg = "KAFKA_SASL_BROKERS and friends are not set: run with `eval \"$(scripts/devstack env)\"`";
        if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
            panic!("{msg} (CI=true: missing services are a failure)");
        }
        eprintln!("SKIPPED: {msg}");
    }
    got
}

fn kafka_section(s: &Secured, group: &str, mechanism: &str, user: &str, password: &str) -> String {
    format!(
        "[kafka]\nbrokers = \"{}\"\ngroup_id = \"{group}\"\n[kafka.properties]\n\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"{mechanism}\"\n\"sasl.username\" = \"{user}\"\n\"sasl.password\" = \"{password}\"\n\"ssl.ca.location\" = \"{}\"\n\"message.max.bytes\" = \"3000000\"\n\"session.timeout.ms\" = \"10000\"\n",
        s.brokers, s.ca
    )
}

fn run_cmd(stack: &Stack, args: &[&str]) -> (i32, String) {
    let o = kbackup(stack, args).output().unwrap();
    (o.status.code().unwrap_or(-1), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_command_works_over_sasl_ssl_and_a_wrong_password_is_clear() {
    let Some(stack) = stack() else { return };
    let Some(s) = secured() else { return };
    let big = [("max.message.bytes", "3000000")];
    let topic = unique("secured");
    stack.create_topic_with(&topic, 2, &big).await;
    let producer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &stack.brokers)
        .set("message.max.bytes", "3000000")
        .create::<rdkafka::producer::FutureProducer>()
        .unwrap();
    for i in 0..60 {
        let v = format!(r#"{{"mid":"s-{i}","context":{{"did":"d-{}"}},"syncts":{}}}"#, i % 7, 1_580_495_400_000i64 + i);
        stack.produce(&producer, &topic, (i % 2) as i32, None, v.as_bytes()).await;
    }
    // 2 MB: above librdkafka's default message.max.bytes, so the replaying producer needs the
    // config's properties too.
    let huge = format!(r#"{{"mid":"s-huge","syncts":1580495400000,"pad":"{}"}}"#, "x".repeat(2_000_000));
    stack.produce(&producer, &topic, 0, None, huge.as_bytes()).await;

    let dir = tempfile::tempdir().unwrap();
    let (container, group) = (unique("c"), unique("g"));
    let storage = stack.storage_section(&container);
    let section = topic_section(&topic, "unique/raw", "").replace("AGE", "3600");
    let scram = kafka_section(&s, &group, "SCRAM-SHA-512", &s.scram.0, &s.scram.1);
    let cfg = write_config(dir.path(), &format!("{scram}{storage}{section}"));
    let c = cfg.to_str().unwrap();

    let (code, out) = run_cmd(&stack, &["check", "--config", c]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("kafka {}: reachable", s.brokers)) && out.contains(&format!("topic {topic}: 2 partitions")), "{out}");

    let (code, out) = run_cmd(&stack, &["run", "--config", c, "--until-caught-up", "--metrics-addr", "off"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(stack.committed(&group, &topic, 2), stack.end_offsets(&topic, 2), "committed over SASL_SSL");

    let (code, out) = run_cmd(&stack, &["verify", "--config", c, "--topic", &topic]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("61 expected, 61 lines") && out.trim_end().ends_with("clean"), "{out}");

    // replay with the PLAIN user: the same [kafka] section reaches the producer.
    let plain_dir = dir.path().join("plain");
    std::fs::create_dir_all(&plain_dir).unwrap();
    let plain = kafka_section(&s, &group, "PLAIN", &s.plain.0, &s.plain.1);
    let plain_cfg = write_config(&plain_dir, &format!("{plain}{storage}{section}"));
    let target = unique("replayed");
    stack.create_topic_with(&target, 2, &big).await;
    let progress = dir.path().join("replay.progress");
    let (code, out) = run_cmd(
        &stack,
        &[
            "replay",
            "--config",
            plain_cfg.to_str().unwrap(),
            "--topic",
            &topic,
            "--from",
            "2020-02-01",
            "--to-topic",
            &target,
            "--key",
            "context.did,mid",
            "--checkpoint",
            progress.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}");
    let replayed = read_topic(&stack, &target);
    assert_eq!(replayed.len(), 61, "{out}");
    assert!(replayed.iter().any(|(p, _, v)| *p == 0 && v.len() > 2_000_000), "the 2 MB event was replayed into its partition");

    let jobs = unique("jobs");
    stack.create_topic(&jobs, 1).await;
    let job = dir.path().join("wfs.json");
    std::fs::write(&job, r#"{"search":{"type":"s3","queries":[{"prefix":"unique/raw/","endDate":"2020-02-01","delta":0}]},"model":"wfs"}"#).unwrap();
    let plan_dir = dir.path().join("plan");
    let (code, out) = run_cmd(
        &stack,
        &[
            "plan",
            "--job-config",
            job.to_str().unwrap(),
            "--mode",
            "job-manager",
            "--config",
            c,
            "--topic",
            &topic,
            "--parallelisation",
            "1",
            "--job-topic",
            &jobs,
            "--out-dir",
            plan_dir.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(read_topic(&stack, &jobs).len(), 2, "one job per partition, published over SASL_SSL: {out}");

    // A wrong password: exit 1, the reason named, the password nowhere.
    let wrong = "not-the-password-7f3a";
    let bad_dir = dir.path().join("bad");
    std::fs::create_dir_all(&bad_dir).unwrap();
    let bad = kafka_section(&s, &group, "SCRAM-SHA-512", &s.scram.0, wrong);
    let bad_cfg = write_config(&bad_dir, &format!("{bad}{storage}{section}"));
    // verify too (it lacked the hint: issue 23).
    for cmd in [
        &["check", "--config", bad_cfg.to_str().unwrap()][..],
        &["run", "--config", bad_cfg.to_str().unwrap(), "--metrics-addr", "off"][..],
        &["verify", "--config", bad_cfg.to_str().unwrap(), "--topic", &topic][..],
    ] {
        let (code, out) = run_cmd(&stack, cmd);
        assert_eq!(code, 1, "{cmd:?}: {out}");
        assert!(out.contains("SASL authentication") && out.contains("sasl.password"), "{cmd:?}: {out}");
        assert!(!out.contains(wrong), "{cmd:?} shows the password: {out}");
    }
}
