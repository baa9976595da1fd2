//! The deployment pack: the Helm chart lints and renders with each of its CI value sets, and what
//! it renders is what kbackup accepts (the ConfigMap's config passes `check --offline`, the grace
//! period outlasts the shutdown bound, no secret sits in a ConfigMap); the alert rules pass
//! promtool's check and unit tests; every kbackup metric the rules and the dashboard query is one
//! a running writer exports.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_yaml_ng::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> PathBuf {
    root().join("deploy/helm/kbackup")
}

/// A tool the dev stack builds (`scripts/devstack tools`), or `None` (skipped) outside CI.
fn tool(var: &str) -> Option<PathBuf> {
    let path = std::env::var_os(var).map(PathBuf::from).filter(|p| p.is_file());
    if path.is_none() {
        let msg = format!("{var} is not set to a built binary: run `scripts/devstack tools` and `eval \"$(scripts/devstack env)\"`");
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg} (CI=true: missing tools are a failure)");
        eprintln!("SKIPPED: {msg}");
    }
    path
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let o = cmd.output().unwrap();
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into(), String::from_utf8_lossy(&o.stderr).into())
}

fn value_sets() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(chart().join("ci")).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"].as_str() == Some(kind)).collect()
}

/// `helm template` of the chart with a values file, as YAML documents.
fn template(helm: &Path, values: &Path) -> Vec<Value> {
    let (code, out, err) = run(Command::new(helm).arg("template").arg("rel").arg(chart()).arg("--values").arg(values));
    assert_eq!(code, 0, "{}: {err}", values.display());
    out.split("\n---").filter_map(|doc| serde_yaml_ng::from_str::<Value>(doc).ok()).filter(|d| !d.is_null()).collect()
}

#[test]
fn the_chart_version_follows_cargo() {
    let cargo: toml::Value = toml::from_str(&std::fs::read_to_string(root().join("Cargo.toml")).unwrap()).unwrap();
    let version = cargo["package"]["version"].as_str().unwrap();
    let chart: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(chart().join("Chart.yaml")).unwrap()).unwrap();
    assert_eq!(chart["version"].as_str(), Some(version), "Chart.yaml version");
    assert_eq!(chart["appVersion"].as_str(), Some(version), "Chart.yaml appVersion");
}

#[test]
fn the_chart_lints_and_renders_what_kbackup_accepts() {
    let Some(helm) = tool("KBACKUP_HELM") else { return };
    let kbackup = env!("CARGO_BIN_EXE_kbackup");
    let dir = tempfile::tempdir().unwrap();
    // What the credentials Secret gives the pod (s3-sasl.yaml reads the SASL password from it).
    std::env::set_var("KAFKA_SASL_PASSWORD", "from-the-secret");
    for values in value_sets() {
        let name = values.file_stem().unwrap().to_string_lossy().to_string();
        let (code, out, err) = run(Command::new(&helm).arg("lint").arg(chart()).arg("--values").arg(&values).arg("--strict"));
        assert_eq!(code, 0, "helm lint {name}: {out}{err}");
        let docs = template(&helm, &values);

        // The config in the ConfigMap is one kbackup accepts, offline.
        let cm = kind(&docs, "ConfigMap");
        assert_eq!(cm.len(), 1, "{name}: one ConfigMap");
        let data = cm[0]["data"].as_mapping().unwrap();
        let out_dir = dir.path().join(&name);
        std::fs::create_dir_all(&out_dir).unwrap();
        for (file, content) in data {
            std::fs::write(out_dir.join(file.as_str().unwrap()), content.as_str().unwrap()).unwrap();
        }
        let deploy = kind(&docs, "Deployment");
        assert_eq!(deploy.len(), 1, "{name}");
        let pod = &deploy[0]["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        let args: Vec<String> = container["args"].as_sequence().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect();
        let config_args: Vec<String> = args[1..args.iter().position(|a| a == "--metrics-addr").unwrap()]
            .iter()
            .map(|a| a.replace("/config/", &format!("{}/", out_dir.display())))
            .collect();
        let mut check = Command::new(kbackup);
        check.arg("check").arg("--offline").args(&config_args).env("KAFKA_SASL_PASSWORD", "from-the-secret");
        let (code, out, err) = run(&mut check);
        assert_eq!(code, 0, "{name}: the rendered config is refused: {out}{err}");

        // The grace period outlasts the shutdown bound; memory follows the budget.
        let config = if data.contains_key("kbackup.toml") {
            kbackup::config::Config::parse(data["kbackup.toml"].as_str().unwrap(), &name).unwrap()
        } else {
            let files: Vec<PathBuf> = config_args.iter().filter(|a| !a.starts_with("--")).map(PathBuf::from).collect();
            kbackup::secor::map(&kbackup::secor::load(&files, &[]).unwrap().props).unwrap().config
        };
        let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
        assert!(grace > config.writer.shutdown_timeout_secs, "{name}: grace {grace} <= shutdown bound {}", config.writer.shutdown_timeout_secs);
        let memory = container["resources"]["limits"]["memory"].as_str().unwrap();
        assert_eq!(memory, format!("{}Mi", config.writer.memory_limit_bytes / 1048576 + 128), "{name}");
        assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true), "{name}");
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"].as_bool(), Some(true), "{name}");
        assert_eq!(container["livenessProbe"]["httpGet"]["path"].as_str(), Some("/health/live"), "{name}");
        assert_eq!(container["readinessProbe"]["httpGet"]["path"].as_str(), Some("/health/ready"), "{name}");
        assert_eq!(kind(&docs, "PodDisruptionBudget").len(), 1, "{name}");
        assert_eq!(kind(&docs, "Service").len(), 1, "{name}");

        // No secret in any ConfigMap: no credential key is set there (they come from the Secret).
        for (file, content) in data {
            let (file, content) = (file.as_str().unwrap(), content.as_str().unwrap());
            if file.ends_with(".toml") {
                let t: toml::Value = toml::from_str(content).unwrap();
                for key in ["access_key", "sas_token", "connection_string", "secret_access_key", "session_token", "service_account_key"] {
                    assert!(t["storage"].get(key).is_none(), "{name}: the ConfigMap sets storage.{key}");
                }
                if let Some(props) = t["kafka"].get("properties").and_then(|p| p.as_table()) {
                    for key in props.keys() {
                        assert!(!["password", "secret", "jaas"].iter().any(|w| key.contains(w)), "{name}: the ConfigMap sets kafka.properties.{key}");
                    }
                }
            } else {
                for key in ["secor.azure.account.key", "aws.secret.key", "aws.session.token", "password"] {
                    assert!(!content.contains(key), "{name}: {file} in the ConfigMap holds {key}");
                }
            }
        }
        assert!(!serde_yaml_ng::to_string(&docs).unwrap().contains("from-the-secret"), "{name}: a secret value was rendered");

        // The daily audit: an Indexed Job, one shard per index, every topic.
        if let Some(cron) = kind(&docs, "CronJob").first() {
            let job = &cron["spec"]["jobTemplate"]["spec"];
            assert_eq!(job["completionMode"].as_str(), Some("Indexed"), "{name}");
            let shards = job["completions"].as_u64().unwrap();
            let script = serde_yaml_ng::to_string(&job["template"]["spec"]["containers"][0]["args"]).unwrap();
            assert!(script.contains(&format!("--shards {shards}")) && script.contains("--from yesterday"), "{name}: {script}");
            for t in &config.topics {
                assert!(script.contains(&t.name), "{name}: the audit skips {}", t.name);
            }
        }
    }
    // Secrets in values are refused, naming the key.
    for (set, key) in [("config.storage.access_key=x", "config.storage.access_key"), ("config.kafka.properties.sasl\\.password=x", "sasl.password")] {
        let (code, _, err) = run(Command::new(&helm).arg("template").arg("rel").arg(chart()).arg("--set-string").arg(set));
        assert_ne!(code, 0, "{set} was accepted");
        assert!(err.contains(key) && err.contains("Secret"), "{set}: {err}");
    }
}

/// Issue 36 item 9: what kbackup would refuse, `helm lint` and `helm template` refuse first
/// (values.schema.json), naming the value; secrets in Secor's files are refused like the
/// config's; librdkafka properties written as YAML numbers render as the strings kbackup reads.
#[test]
fn the_chart_refuses_bad_values() {
    let Some(helm) = tool("KBACKUP_HELM") else { return };
    let dir = tempfile::tempdir().unwrap();
    let secor = "secorProperties:\n  enabled: true\n  order: [a.properties]\n  files:\n    a.properties: |\n      secor.kafka.group=g\n      ";
    let cases = [
        ("memory as a quantity", "config:\n  writer:\n    memory_limit_bytes: \"512Mi\"\n".to_string(), "/config/writer/memory_limit_bytes"),
        ("a 20-digit number", "config:\n  writer:\n    memory_limit_bytes: 18446744073709551615\n".to_string(), "/config/writer/memory_limit_bytes"),
        ("no brokers", "config:\n  kafka:\n    brokers: \"\"\n".to_string(), "/config/kafka/brokers"),
        ("no topic", "config:\n  topic: []\n".to_string(), "/config/topic"),
        ("no url", "config:\n  storage:\n    url: \"\"\n".to_string(), "/config/storage/url"),
        ("zero shards", "audit:\n  shards: 0\n".to_string(), "/audit/shards"),
        ("config null", "config: null\n".to_string(), "config"),
        ("an account key in Secor's files", format!("{secor}secor.azure.account.key=abc\n"), "secor.azure.account.key"),
        ("an S3 secret in Secor's files", format!("{secor}aws.secret.key = abc\n"), "aws.secret.key"),
        ("a JAAS login in Secor's files", format!("{secor}kafka.new.consumer.sasl.jaas.config=x password=\"p\";\n"), "sasl.jaas.config"),
    ];
    for (what, values, names) in cases {
        let file = dir.path().join("values.yaml");
        std::fs::write(&file, &values).unwrap();
        // The schema fails lint and template alike; a template's `fail` (the secrets) fails
        // template and install, which is where lint only reports it.
        let cmds: &[&str] = if values.starts_with("secorProperties") { &["template"] } else { &["lint", "template"] };
        for &cmd in cmds {
            let mut c = Command::new(&helm);
            c.arg(cmd);
            if cmd == "template" {
                c.arg("rel");
            }
            let (code, out, err) = run(c.arg(chart()).arg("--values").arg(&file));
            assert_ne!(code, 0, "helm {cmd} accepted {what}:\n{values}\n{out}");
            assert!(format!("{out}{err}").contains(names), "helm {cmd}, {what}: the refusal should name {names}:\n{out}{err}");
            assert!(!format!("{out}{err}").contains("nil pointer"), "helm {cmd}, {what}: {err}");
        }
    }
    // Numbers where librdkafka wants strings render as strings, which kbackup accepts.
    let file = dir.path().join("numbers.yaml");
    std::fs::write(&file, "config:\n  kafka:\n    properties:\n      session.timeout.ms: 30000\n      fetch.max.bytes: 52428800\n").unwrap();
    let docs = template(&helm, &file);
    let toml_text = kind(&docs, "ConfigMap")[0]["data"]["kbackup.toml"].as_str().unwrap().to_string();
    assert!(toml_text.contains("\"session.timeout.ms\" = \"30000\"") && toml_text.contains("\"fetch.max.bytes\" = \"52428800\""), "{toml_text}");
    let cfg = dir.path().join("kbackup.toml");
    std::fs::write(&cfg, &toml_text).unwrap();
    let (code, out, err) = run(Command::new(env!("CARGO_BIN_EXE_kbackup")).args(["check", "--offline", "--config"]).arg(&cfg));
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn the_alert_rules_pass_promtool() {
    let Some(promtool) = tool("KBACKUP_PROMTOOL") else { return };
    let rules = root().join("deploy/prometheus");
    let (code, out, err) = run(Command::new(&promtool).arg("check").arg("rules").arg(rules.join("kbackup-rules.yaml")));
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run(Command::new(&promtool).arg("test").arg("rules").arg(rules.join("kbackup-rules.test.yaml")));
    assert_eq!(code, 0, "{out}{err}");
    // Every alert of the rules file has a firing case in the unit tests, and a runbook section.
    let file = std::fs::read_to_string(rules.join("kbackup-rules.yaml")).unwrap();
    let tests = std::fs::read_to_string(rules.join("kbackup-rules.test.yaml")).unwrap();
    let runbook = std::fs::read_to_string(root().join("docs/runbook.md")).unwrap().to_lowercase();
    for alert in file.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")) {
        assert!(tests.contains(&format!("alertname: {alert}")), "{alert} is not tested");
    }
    for anchor in file.lines().filter_map(|l| l.split("runbook.md#").nth(1)).map(|a| a.trim_end_matches('"')) {
        assert!(runbook.contains(&format!("### {anchor}")), "docs/runbook.md has no section for #{anchor}");
    }
}

/// The kbackup metric names an expression uses (histograms by their base name).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("kbackup_") {
        let start = i + pos;
        let end = start + bytes[start..].iter().take_while(|b| b.is_ascii_alphanumeric() || **b == b'_').count();
        let name = &text[start..end];
        let base = name.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count");
        // Not metric names: chart and job names in the rules' prose.
        if !matches!(base, "kbackup_" | "kbackup_x") {
            out.insert(base.to_string());
        }
        i = end.max(start + 1);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn every_metric_the_rules_and_dashboard_use_is_exported() {
    let Some(stack) = stack() else { return };
    let rules = std::fs::read_to_string(root().join("deploy/prometheus/kbackup-rules.yaml")).unwrap();
    let dashboard = std::fs::read_to_string(root().join("deploy/grafana/kbackup.json")).unwrap();
    serde_json::from_str::<serde_json::Value>(&dashboard).expect("the dashboard is JSON");
    let used: BTreeSet<String> = metric_names(&rules).into_iter().chain(metric_names(&dashboard)).collect();
    assert!(used.len() > 15, "{used:?}");

    let topic = unique("metrics");
    stack.create_topic_with(&topic, 2, &[("retention.ms", "604800000")]).await;
    let producer = stack.producer();
    for i in 0..40 {
        let v = format!(r#"{{"mid":"m-{i}","syncts":1580495400000}}"#);
        stack.produce(&producer, &topic, i % 2, None, v.as_bytes()).await;
    }
    let dir = tempfile::tempdir().unwrap();
    // Files that roll within a second, so uploads (and their histogram) happen during the test.
    // Markers from two days ago (always past its grace), so the completion gauge is set.
    let start = (chrono::Utc::now() - chrono::Duration::days(2)).date_naive();
    let extra = format!("completion_start_date = \"{start}\"");
    // A second output in Parquet: its counter is on the dashboard too.
    let sections = format!("{}{}", topic_section(&topic, "unique/raw", &extra), topic_section(&topic, "unique/parquet", "file_format = \"parquet\""));
    let cfg = write_config(dir.path(), &config(&stack, &unique("c"), &unique("g"), &sections, 1));
    let mut run = Running::start(&stack, &cfg, dir.path().join("run.log"), &[]);
    run.wait_live(Duration::from_secs(30));
    // Some appear with the first upload or the first statistics report (every 5 s): wait for
    // all, and name the missing ones if any never appear.
    let missing = |page: &str| -> Vec<String> {
        let series = |l: &str, m: &str| {
            let rest = l.strip_prefix(m).unwrap_or("_");
            let rest = ["_bucket", "_sum", "_count"].iter().find_map(|s| rest.strip_prefix(s)).unwrap_or(rest);
            rest.starts_with(['{', ' '])
        };
        used.iter().filter(|m| !page.lines().any(|l| series(l, m))).cloned().collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let mut last = (Vec::new(), String::new());
    while std::time::Instant::now() < deadline {
        if let Some(page) = run.metrics_page() {
            last = (missing(&page), page);
            if last.0.is_empty() {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(last.0.is_empty(), "used by the rules or the dashboard, not exported by kbackup: {:?}\n{}", last.0, last.1);
    assert_eq!(run.terminate(Duration::from_secs(60)), 0);
}

/// The audit's shards: with `--shards N`, each Indexed Job index (JOB_COMPLETION_INDEX) audits
/// its own contiguous range of partitions, and together they audit every one once.
#[tokio::test(flavor = "multi_thread")]
async fn verify_shards_split_the_partitions_by_job_index() {
    let Some(stack) = stack() else { return };
    let topic = unique("shards");
    stack.create_topic(&topic, 5).await;
    let producer = stack.producer();
    for i in 0..25 {
        stack.produce(&producer, &topic, i % 5, None, format!(r#"{{"mid":"s-{i}","syncts":1580495400000}}"#).as_bytes()).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &config(&stack, &unique("c"), &unique("g"), &topic_section(&topic, "unique/raw", ""), 3600));
    let mut run = Running::start(&stack, &cfg, dir.path().join("run.log"), &["--until-caught-up"]);
    assert_eq!(run.wait(Duration::from_secs(90)), 0, "{}", run.log_text());
    let mut audited = Vec::new();
    for index in 0..3 {
        let o = kbackup(&stack, &["verify", "--config", cfg.to_str().unwrap(), "--topic", &topic, "--shards", "3", "--json"])
            .env("JOB_COMPLETION_INDEX", index.to_string())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "shard {index}: {}", String::from_utf8_lossy(&o.stderr));
        let parts: Vec<i64> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["partition"].as_i64())
            .collect();
        audited.push(parts);
    }
    assert_eq!(audited, vec![vec![0], vec![1, 2], vec![3, 4]]);
    let o = kbackup(&stack, &["verify", "--config", cfg.to_str().unwrap(), "--topic", &topic, "--shards", "3"])
        .env_remove("JOB_COMPLETION_INDEX")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "no index: a usage error");
    // `yesterday` is a day like any other: in the topic's time zone, nothing of it is stored here.
    let o =
        kbackup(&stack, &["verify", "--config", cfg.to_str().unwrap(), "--topic", &topic, "--from", "yesterday", "--to", "today"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stdout));
}
