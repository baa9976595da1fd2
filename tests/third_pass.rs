//! No false answers, third pass: each defect a demanding user and operator found, as a test that
//! failed before its fix.

mod common;

use common::*;

/// The base64 body of a fresh RSA key (PKCS#8 PEM), made by openssl for this run.
fn fresh_pem() -> String {
    let out = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
        .output()
        .expect("openssl (the test makes a throwaway GCS key with it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Pieces of a secret long enough to be recognised in a log: every 16 characters at a step of 8.
fn windows(secret: &str) -> Vec<&str> {
    let b = secret.as_bytes();
    (0..b.len().saturating_sub(16)).step_by(8).map(|i| &secret[i..i + 16]).collect()
}

/// A list of numbers as Rust prints bytes (`[80, 82, 73, …]`): a key body dumped as a byte array.
fn has_byte_array(text: &str) -> bool {
    text.split('[').skip(1).any(|rest| {
        let inner = rest.split(']').next().unwrap_or("");
        let parts: Vec<&str> = inner.split(", ").collect();
        parts.len() >= 8 && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()))
    })
}

/// Where a key is given: the source's name, the config's text, environment variables.
type Source<'a> = (&'a str, String, Vec<(&'a str, String)>);

/// Item 8: a GCS key whose private key is malformed — joined into one line, cut short, not
/// base64, or in JSON cut short — given in the config (inline or as a file) or the environment
/// (inline or as a file), is refused by every storage command with a message that names the
/// problem and the source, never with the key's body (it was printed as a byte array).
#[test]
fn a_malformed_gcs_key_is_refused_without_printing_it() {
    let Some(stack) = stack() else { return };
    // Its cases name a GCS store explicitly: one pass covers all.
    if backend() != Backend::Azure {
        return;
    }
    let pem = fresh_pem();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let one_line = pem.replace('\n', "");
    let truncated = pem[..pem.len() / 2].to_string();
    let not_base64 = pem.replace(&body[40..60], "!!!!!!!!!!!!!!!!!!!!");
    let json =
        |key: &str| serde_json::json!({"type": "service_account", "client_email": "a@b.c", "private_key_id": "1", "private_key": key}).to_string();
    let variants: Vec<(&str, String, &str)> = vec![
        ("one line", json(&one_line), "line break"),
        ("truncated", json(&truncated), "END"),
        ("not base64", json(&not_base64), "base64"),
        ("JSON cut short", json(&pem)[..300].to_string(), "JSON"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let bucket = unique("b");
    let head = format!("[kafka]\nbrokers = \"{}\"\n[[topic]]\nname = \"t\"\npath = \"raw\"\n", stack.brokers);
    let storage = format!("[storage]\nurl = \"gs://{bucket}\"\nendpoint = \"{}\"\n", stack.gcs_endpoint);
    let cmds: Vec<Vec<&str>> = vec![
        vec!["check"],
        vec!["run", "--until-caught-up", "--metrics-addr", "off"],
        vec!["ls", "--topic", "t", "--from", "2020-02-01"],
        vec!["cat", "--topic", "t", "--from", "2020-02-01"],
        vec!["verify", "--topic", "t"],
        vec!["replay", "--topic", "t", "--from", "2020-02-01", "--to-topic", "t", "--dry-run"],
    ];
    let mut failures = Vec::new();
    let mut runs = 0;
    for (i, (name, key_json, hint)) in variants.iter().enumerate() {
        let key_file = dir.path().join(format!("key{i}.json"));
        std::fs::write(&key_file, key_json).unwrap();
        let key_path = key_file.to_str().unwrap().to_string();
        let toml_inline = format!("{head}{storage}service_account_key = '{key_json}'\n");
        let toml_path = format!("{head}{storage}service_account_path = \"{key_path}\"\n");
        let plain = format!("{head}{storage}");
        let sources: Vec<Source> = vec![
            ("storage.service_account_key", toml_inline, vec![]),
            ("storage.service_account_path", toml_path, vec![]),
            ("GOOGLE_SERVICE_ACCOUNT_KEY", plain.clone(), vec![("GOOGLE_SERVICE_ACCOUNT_KEY", key_json.clone())]),
            ("GOOGLE_SERVICE_ACCOUNT", plain, vec![("GOOGLE_SERVICE_ACCOUNT", key_path.clone())]),
        ];
        for (j, (source, text, env)) in sources.iter().enumerate() {
            let cfg = dir.path().join(format!("c{i}-{j}.toml"));
            std::fs::write(&cfg, text).unwrap();
            for cmd in &cmds {
                for format in ["text", "json"] {
                    let mut args = vec!["--log-format", format, cmd[0], "--config", cfg.to_str().unwrap()];
                    args.extend(&cmd[1..]);
                    let mut c = kbackup(&stack, &args);
                    c.env("RUST_LOG", "debug");
                    // The dev stack's own key (GOOGLE_SERVICE_ACCOUNT_KEY) would be a second one.
                    c.env_remove("GOOGLE_SERVICE_ACCOUNT_KEY");
                    for (k, v) in env {
                        c.env(k, v);
                    }
                    let o = c.output().unwrap();
                    runs += 1;
                    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
                    let what = format!("{name} via {source}: kbackup {}", args.join(" "));
                    if o.status.code() != Some(2) {
                        failures.push(format!("{what}: exit {:?} (expected 2): {text}", o.status.code()));
                    }
                    if let Some(w) = windows(&body).into_iter().find(|w| text.contains(w)) {
                        failures.push(format!("{what}: printed a piece of the key ({w}): {text}"));
                    }
                    if has_byte_array(&text) {
                        failures.push(format!("{what}: printed a byte array: {text}"));
                    }
                    if !text.contains(source) || !text.contains(hint) {
                        failures.push(format!("{what}: the refusal should name {source} and say `{hint}`: {text}"));
                    }
                }
            }
        }
    }
    eprintln!("{runs} invocations");
    assert!(failures.is_empty(), "{} of {runs} invocations:\n{}", failures.len(), failures.join("\n\n"));
}

const IST_OFFSET_MS: i64 = 19_800_000;

fn ist_today() -> chrono::NaiveDate {
    (chrono::Utc::now() + chrono::Duration::milliseconds(IST_OFFSET_MS)).date_naive()
}

fn ist_midnight(d: chrono::NaiveDate) -> i64 {
    d.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp_millis() - IST_OFFSET_MS
}

fn run_out(stack: &Stack, args: &[&str]) -> (i32, String, String) {
    let o = kbackup(stack, args).output().unwrap();
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into(), String::from_utf8_lossy(&o.stderr).into())
}

async fn newest(stack: &Stack, container: &str, date: chrono::NaiveDate) -> std::collections::BTreeMap<i32, kbackup::completion::Marker> {
    kbackup::completion::read::newest(stack.storage(container).store.as_ref(), "unique/raw", &date.to_string(), None).await.unwrap()
}

/// Items 1–4: a topic of 4 partitions, events of three days ago on partitions 0–2, partition 3
/// empty. One `run --until-caught-up` marks the date on all four (the empty one was never
/// marked); a late event of the date gets its superseding marker from the next
/// `run --until-caught-up` and the daily audit stays clean; `ls --completion` names every
/// partition without a marker, `--from yesterday` and `--from -1` are taken; a marker whose
/// content contradicts its name, or names another topic, fails `verify`.
#[tokio::test(flavor = "multi_thread")]
async fn complete_days_stay_true() {
    let Some(stack) = stack() else { return };
    let topic = unique("days");
    stack.create_topic(&topic, 4).await;
    let day = ist_today() - chrono::Days::new(3);
    let p = stack.producer();
    for part in 0..3 {
        for i in 0..5 {
            let v = format!(r#"{{"mid":"{topic}-{part}-{i}","syncts":{}}}"#, ist_midnight(day) + 3_600_000 + i);
            stack.produce(&p, &topic, part, None, v.as_bytes()).await;
        }
    }
    let container = unique("c");
    let dir = tempfile::tempdir().unwrap();
    let group = unique("g");
    let text = config(&stack, &container, &group, &topic_section(&topic, "unique/raw", "completion_grace_secs = 60"), 3600);
    let cfg = write_config(dir.path(), &text);
    let cfg = cfg.to_str().unwrap();
    let run = |what: &str| {
        let (code, _, err) = run_out(&stack, &["run", "--config", cfg, "--until-caught-up", "--metrics-addr", "off"]);
        assert_eq!(code, 0, "{what}: {err}");
        err
    };
    let day_s = day.to_string();

    // Item 2: the empty partition is complete for the date its siblings are judged for.
    run("first run");
    let m = newest(&stack, &container, day).await;
    assert_eq!(m.keys().copied().collect::<Vec<_>>(), vec![0, 1, 2, 3], "every partition marked for {day}: {m:#?}");
    assert_eq!((m[&3].events, m[&3].files.len()), (0, 0), "the empty partition's marker lists nothing");
    let (code, out, err) = run_out(&stack, &["ls", "--config", cfg, "--topic", &topic, "--from", &day_s, "--completion"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("complete: 0,1,2,3  incomplete (no marker): -"), "{out}");

    // Item 1: a late event of the marked date; the next --until-caught-up run supersedes the
    // marker, and the audit of the date stays clean.
    let v = format!(r#"{{"mid":"{topic}-late","syncts":{}}}"#, ist_midnight(day) + 7_200_000);
    stack.produce(&p, &topic, 1, None, v.as_bytes()).await;
    let err = run("run after the late event");
    let m = newest(&stack, &container, day).await;
    assert_eq!((m[&1].seq, m[&1].events, m[&1].supersedes.is_some()), (2, 6, true), "the superseding marker of partition 1: {m:#?}\n{err}");
    let (code, out, err) = run_out(&stack, &["verify", "--config", cfg, "--topic", &topic, "--from", &day_s, "--to", &day_s]);
    assert_eq!(code, 0, "the daily audit after a late event:\n{out}\n{err}");

    // Item 3: every partition without a marker is named, with or without --partitions; relative
    // dates are taken as the help says.
    let store = stack.storage(&container).store;
    let marker3 = object_store::path::Path::from(format!("unique/raw/_kbackup/complete/{day}/3-000001.json"));
    use object_store::ObjectStoreExt;
    let body3 = store.get(&marker3).await.unwrap().bytes().await.unwrap();
    store.delete(&marker3).await.unwrap();
    let (code, out, err) = run_out(&stack, &["ls", "--config", cfg, "--topic", &topic, "--from", &day_s, "--completion"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("complete: 0,1,2  incomplete (no marker): 3"), "{out}");
    let (code, out, err) = run_out(&stack, &["ls", "--config", cfg, "--topic", &topic, "--from", &day_s, "--completion", "--partitions", "3"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("complete: -  incomplete (no marker): 3"), "{out}");
    for from in ["yesterday", "-1", "today", "-3"] {
        let (code, _, err) = run_out(&stack, &["ls", "--config", cfg, "--topic", &topic, "--from", from]);
        assert_eq!(code, 0, "ls --from {from}: {err}");
        let (code, out, err) = run_out(&stack, &["verify", "--config", cfg, "--topic", &topic, "--from", from]);
        assert!(code != 2 && !err.contains("unexpected argument"), "verify --from {from}: {code}\n{out}\n{err}");
    }
    let (code, out, _) = run_out(&stack, &["ls", "--config", cfg, "--topic", &topic, "--from", "-3", "--to", "-3"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 4, "--from -3 is {day}: its 3 files and the late one: {out}");

    // Item 4: a marker's content must agree with its name and the topic.
    let mut wrong: serde_json::Value = serde_json::from_slice(&body3).unwrap();
    wrong["partition"] = 1.into();
    store.put(&marker3, serde_json::to_vec(&wrong).unwrap().into()).await.unwrap();
    let (code, out, err) = run_out(&stack, &["verify", "--config", cfg, "--topic", &topic, "--from", &day_s, "--to", &day_s]);
    assert_ne!(code, 0, "{out}");
    assert!(format!("{out}{err}").contains("it says partition 1, its name partition 3"), "{out}\n{err}");
    let (code, out, err) = run_out(&stack, &["ls", "--config", cfg, "--topic", &topic, "--from", &day_s, "--completion"]);
    assert!(code != 0 && !out.contains("complete: 0,1,1"), "{out}\n{err}");
    for (field, value, says) in
        [("date", serde_json::json!("2020-01-01"), "it says date 2020-01-01"), ("topic", serde_json::json!("other"), "is about topic other")]
    {
        let mut wrong: serde_json::Value = serde_json::from_slice(&body3).unwrap();
        wrong[field] = value;
        store.put(&marker3, serde_json::to_vec(&wrong).unwrap().into()).await.unwrap();
        let (code, out, err) = run_out(&stack, &["verify", "--config", cfg, "--topic", &topic, "--from", &day_s, "--to", &day_s]);
        assert_ne!(code, 0, "{field}: {out}");
        assert!(format!("{out}{err}").contains(says), "{field}: {out}\n{err}");
    }
    store.put(&marker3, body3.into()).await.unwrap();
    let (code, out, err) = run_out(&stack, &["verify", "--config", cfg, "--topic", &topic, "--from", &day_s, "--to", &day_s]);
    assert_eq!(code, 0, "restored:\n{out}\n{err}");
}

/// Item 10: a duration too long for a deadline is refused, not a panic; an empty
/// `timestamp_fields` is refused naming the key.
#[test]
fn smaller_refusals() {
    let Some(stack) = stack() else { return };
    if backend() != Backend::Azure {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.json");
    std::fs::write(
        &job,
        r#"{"model":"wfs","search":{"type":"azure","queries":[{"prefix":"raw/","startDate":"2026-12-01","endDate":"2026-12-01"}]}}"#,
    )
    .unwrap();
    let good = write_config(
        dir.path(),
        &format!("[kafka]\nbrokers = \"{}\"\n{}[[topic]]\nname = \"t\"\npath = \"raw\"\n", stack.brokers, stack.storage_section(&unique("plan"))),
    );
    let (code, _, err) = run_out(
        &stack,
        &[
            "plan",
            "--job-config",
            job.to_str().unwrap(),
            "--config",
            good.to_str().unwrap(),
            "--topic",
            "t",
            "--wait-complete",
            "--timeout",
            "18446744073709551615s",
            "--mode",
            "job-manager",
            "--job-topic",
            "t",
            "--partitions",
            "2",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--timeout") && err.contains("too long"), "{err}");
    let cfg = write_config(
        dir.path(),
        &format!(
            "[kafka]\nbrokers = \"{}\"\n{}[[topic]]\nname = \"t\"\npath = \"raw\"\ntimestamp_fields = []\n",
            stack.brokers,
            stack.storage_section(&unique("ts"))
        ),
    );
    let (code, _, err) = run_out(&stack, &["check", "--offline", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("topic[0].timestamp_fields"), "{err}");

    // Item 11: `check` says when it created the container (create_container = true).
    let fresh = write_config(
        dir.path(),
        &format!("[kafka]\nbrokers = \"{}\"\n{}[[topic]]\nname = \"t\"\npath = \"raw\"\n", stack.brokers, stack.storage_section(&unique("fresh"))),
    );
    let (code, out, err) = run_out(&stack, &["check", "--config", fresh.to_str().unwrap()]);
    assert!(out.contains("container CREATED (storage.create_container = true)"), "{code}: {out}{err}");
    let (_, out, _) = run_out(&stack, &["check", "--config", fresh.to_str().unwrap()]);
    assert!(out.contains("container ok, write probe ok"), "{out}");

    // A SAS token without the delete right: the writer never deletes, so `check` passes and
    // names the probe blob it could not delete (it failed, and left the blob unnamed).
    let container = unique("nodelete");
    let sas = account_sas("rwlac");
    let text = format!(
        "[kafka]\nbrokers = \"{}\"\n[storage]\nurl = \"az://{container}\"\naccount = \"devstoreaccount1\"\nendpoint = \"{}/devstoreaccount1\"\nsas_token = \"{sas}\"\n[[topic]]\nname = \"t\"\npath = \"raw\"\n",
        stack.brokers,
        stack.blob_upstream()
    );
    // The container, created with the account key.
    let owner = write_config(
        dir.path(),
        &format!("[kafka]\nbrokers = \"{}\"\n{}[[topic]]\nname = \"t\"\npath = \"raw\"\n", stack.brokers, stack.storage_section(&container)),
    );
    run_out(&stack, &["check", "--config", owner.to_str().unwrap()]);
    let cfg = write_config(dir.path(), &text);
    let (code, out, err) = run_out(&stack, &["check", "--config", cfg.to_str().unwrap()]);
    assert!(out.contains("write probe ok") && out.contains("could not be deleted") && out.contains("_kbackup/probe-"), "{code}: {out}{err}");
    assert!(!out.contains("FAILED (") || out.contains("kafka"), "{out}");
    assert!(!format!("{out}{err}").contains(&sas), "the SAS token was printed");

    // A refused SASL login ends a command as soon as librdkafka reports it, not after the
    // 30 s metadata timeout every command waited out.
    let (brokers, ca) = (std::env::var("KAFKA_SASL_BROKERS").unwrap_or_default(), std::env::var("KAFKA_SASL_CA").unwrap_or_default());
    if brokers.is_empty() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "KAFKA_SASL_BROKERS is not set (scripts/devstack env)");
        return;
    }
    let sasl = write_config(
        dir.path(),
        &format!(
            "[kafka]\nbrokers = \"{brokers}\"\n[kafka.properties]\n\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"PLAIN\"\n\"sasl.username\" = \"kbackup-plain\"\n\"sasl.password\" = \"not-the-password\"\n\"ssl.ca.location\" = \"{ca}\"\n{}[[topic]]\nname = \"t\"\npath = \"raw\"\n",
            stack.storage_section(&unique("sasl"))
        ),
    );
    let sasl = sasl.to_str().unwrap();
    for args in [
        vec!["run", "--config", sasl, "--until-caught-up", "--metrics-addr", "off"],
        vec!["verify", "--config", sasl, "--topic", "t"],
        vec!["check", "--config", sasl],
    ] {
        let started = std::time::Instant::now();
        let (code, out, err) = run_out(&stack, &args);
        let took = started.elapsed();
        assert_ne!(code, 0, "{args:?}: {out}{err}");
        assert!(format!("{out}{err}").contains("SASL authentication error"), "{args:?}: {out}{err}");
        assert!(took < std::time::Duration::from_secs(15), "{args:?} waited {took:?} on a refused login (the metadata timeout is 30 s)");
    }
}

/// Item 5: `--offset-order` survives a refusal. The target refuses one 32 KB record (and with
/// it the batch of 100 it travels in), the records after it are delivered; the rerun must not
/// send the refused ones after them: per key, the last value in the target is the source's
/// newest (what compaction keeps).
#[tokio::test(flavor = "multi_thread")]
async fn offset_order_survives_a_refusal() {
    let Some(stack) = stack() else { return };
    let (src, tgt) = (unique("ordsrc"), unique("ordtgt"));
    stack.create_topic_with(&src, 1, &[("cleanup.policy", "compact")]).await;
    let p = stack.producer();
    let mut newest: std::collections::BTreeMap<String, Vec<u8>> = Default::default();
    // Incompressible: the producer's compression must not shrink it below the target's limit.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let pad: String = (0..32 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (b'a' + (x % 26) as u8) as char
        })
        .collect();
    let produced_from = chrono::Utc::now().timestamp_millis();
    for i in 0..600 {
        let key = format!("k{}", i % 10);
        let value = if i == 150 { format!("{{\"i\":{i},\"pad\":\"{pad}\"}}") } else { format!("{{\"i\":{i}}}") };
        stack.produce(&p, &src, 0, Some(&key), value.as_bytes()).await;
        newest.insert(key, value.into_bytes());
    }
    let (container, group) = (unique("c"), unique("g"));
    let dir = tempfile::tempdir().unwrap();
    let topics = topic_section(&src, "records/ord", "format = \"record\"\nmax_file_bytes = 4000");
    // Batches of 100, as the user's producer made them: the refused record takes its batch with it.
    let text =
        config(&stack, &container, &group, &topics, 3600).replace("[kafka.properties]\n", "[kafka.properties]\n\"batch.num.messages\" = \"100\"\n");
    let cfg = write_config(dir.path(), &text);
    let cfg = cfg.to_str().unwrap();
    let (code, _, err) = run_out(&stack, &["run", "--config", cfg, "--until-caught-up", "--metrics-addr", "off"]);
    assert_eq!(code, 0, "{err}");
    stack.create_topic_with(&tgt, 1, &[("max.message.bytes", "16384")]).await;
    let ckpt = dir.path().join("ord.progress");
    let replay = [
        "replay",
        "--config",
        cfg,
        "--topic",
        &src,
        "--to-topic",
        &tgt,
        "--offset-order",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--from",
        "1970-01-01",
        "--to",
        "2099-12-31",
    ];
    let (code, out, err) = run_out(&stack, &replay);
    assert_eq!(code, 1, "the refusal fails the replay:\n{out}\n{err}");
    let first_err = err;
    let delivered = stack.end_offsets(&tgt, 1)[0];
    eprintln!("first replay: {delivered} delivered; {}", first_err.lines().last().unwrap_or_default());
    stack.alter_topic(&tgt, &[("max.message.bytes", "1048576")]).await;
    let (code, out, err) = run_out(&stack, &replay);
    assert_eq!(code, 0, "the rerun:\n{out}\n{err}");
    let got = read_topic(&stack, &tgt);
    let mut last: std::collections::BTreeMap<String, Vec<u8>> = Default::default();
    for (_, k, v) in &got {
        last.insert(String::from_utf8(k.clone().unwrap()).unwrap(), v.clone());
    }
    let short = |v: &Vec<u8>| String::from_utf8_lossy(&v[..v.len().min(12)]).into_owned();
    for (k, v) in &newest {
        assert!(
            last.get(k) == Some(v),
            "key {k}: the target's last value is {:?}, the source's newest {:?} ({} records in the target)",
            last.get(k).map(short),
            short(v),
            got.len()
        );
    }
    assert!(first_err.contains("halted at offset"), "{first_err}");

    // Item 7: a time window alone selects the files (no --from), and a dry run says what
    // --create-topic would create instead of failing on the missing topic.
    let produced_to = chrono::Utc::now().timestamp_millis();
    let missing = unique("ordnew");
    for (from, to, expect) in [(produced_from - 1000, produced_to + 1000, 600), (produced_from - 3 * 3_600_000, produced_from - 2 * 3_600_000, 0)] {
        let (from, to) = (from.to_string(), to.to_string());
        let (code, out, err) = run_out(
            &stack,
            &[
                "replay",
                "--config",
                cfg,
                "--topic",
                &src,
                "--to-topic",
                &missing,
                "--dry-run",
                "--create-topic",
                "--from-time",
                &from,
                "--to-time",
                &to,
            ],
        );
        assert_eq!(code, 0, "{out}\n{err}");
        assert!(out.contains(&format!("would create topic {missing} like {src}: 1 partitions")), "{out}");
        assert!(out.contains(&format!("would send {expect} events")), "window [{from}, {to}): {out}\n{err}");
    }
    let (code, _, err) = run_out(&stack, &["replay", "--config", cfg, "--topic", &src, "--to-topic", &missing, "--dry-run"]);
    assert_eq!(code, 2, "neither --from nor a window: {err}");
    assert!(err.contains("--from is required") && err.contains("--from-time"), "{err}");
}

/// An account SAS of Azurite's dev account for blobs, with these permissions (version
/// 2019-12-12's string to sign).
fn account_sas(permissions: &str) -> String {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let (sv, ss, srt, se, spr) = ("2019-12-12", "b", "sco", "2099-01-01T00:00:00Z", "https,http");
    let to_sign = format!("devstoreaccount1\n{permissions}\n{ss}\n{srt}\n\n{se}\n\n{spr}\n{sv}\n");
    let key = base64::engine::general_purpose::STANDARD.decode(AZURITE_KEY).unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(to_sign.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!("sv={sv}&ss={ss}&srt={srt}&sp={permissions}&se={}&spr={}&sig={}", enc(se), enc(spr), enc(&sig))
}
