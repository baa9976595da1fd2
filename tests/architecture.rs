//! House rules, read from the sources (non-test code only):
//! - the crate's top-level modules form no import cycle (data flows one way: config and the pure
//!   rules at the bottom, the writer and the commands on top); a module depends on another when
//!   its code names `crate::<other>`;
//! - nothing but `main` imports `cmd` (commands sit on top of the library, never under it), and
//!   no command imports another (what they share is in `cmd.rs`);
//! - only `cmd` reaches into the writer (its entry point, `writer::run`);
//! - the writer's core (`src/writer/core/`; the shells `writer.rs`, `kafka.rs`, `pipeline.rs`,
//!   `ports.rs` and the simulation sit around it) never reads real time, starts threads or
//!   touches tokio, so the simulation drives exactly the code that runs;
//! - the core's state is its own: `Writer`'s fields are private, so the shells and the
//!   simulation go through its methods;
//! - Kafka client settings are built in one place, `consumer.rs`;
//! - the library's face is curated: a module is `pub` only if the binary, the tests or the
//!   examples name it (`kbackup::<module>`); the rest is `pub(crate)`;
//! - a topic's time zone and dates are read from their strings in one place, `config.rs`
//!   (`TopicConfig::output_tz`, `invalid_day`, `completion_start`), and by the router it builds:
//!   no other file parses them again, nor hides a failed parse behind a default;
//! - no circle among the files of one directory (`writer/core/completion.rs`, `files.rs` and
//!   `partition.rs` once imported each other): a file names its siblings through `super::x` or
//!   `crate::<dir>::x`, and those names form no cycle;
//! - messages enter the core one way, `Writer::apply_batch`, which the polling loop and the
//!   simulation both call: no file but the core's `core.rs` applies a single message;
//! - the writer is one `impl Writer`, in `writer/core.rs` (it was nine blocks over as many files,
//!   each reading and writing every field);
//! - the core's owned parts keep their fields to themselves: `Files` (`files.rs`), `Marking`
//!   (`marking.rs`), `Stop` (`stop.rs`), `Cadence` (`cadence.rs`), `Topics` and `Topic` (`topics.rs`), `Budget` (`budget.rs`), `CommitWatch` (`stall.rs`),
//!   `Partitions` and `Partition` (`partition.rs`), `Commits` (`commits.rs`),
//!   `Completion` (`completion.rs`) and `Summary` (`summary.rs`)
//!   declare no field visible outside their file, so the writer goes through their methods;
//! - `run`'s start-up makes its cluster clients once (`consumer::Cluster`) and shares them
//!   between the topic check, the retention look-up and the topics' settings;
//! - the reading tools open a backup one way (`listing::request::Backup`): no command but
//!   `run` and `check` (which probe the writer's storage) opens storage itself, nor does `audit`;
//! - one module-file convention: a module with children is `x.rs` beside `x/`, never `x/mod.rs`;
//! - the README's code layout names every top-level module and only paths that exist, and the
//!   number of sabotage rules it states is the number the simulation's test breaks; its line for
//!   the writer names every file of the core.
//!
//! Each rule is a function over (path, code) pairs, and a test shows it catching a violation.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every source file under `src/`: its path relative to `src` (with `/`) and its non-test code.
fn code_files() -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let rel = f.strip_prefix(&src).unwrap().to_string_lossy().replace('\\', "/");
            let text = std::fs::read_to_string(&f).unwrap();
            // Unit tests may build their inputs from anything.
            let code = text.split("#[cfg(test)]\nmod tests").next().unwrap().to_string();
            (rel, code)
        })
        .collect()
}

/// Top-level module → the top-level modules its non-test code uses.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    graph_of(&code_files())
}

fn top_module(rel: &str) -> String {
    rel.split('/').next().unwrap().trim_end_matches(".rs").to_string()
}

fn graph_of(files: &[(String, String)]) -> BTreeMap<String, BTreeSet<String>> {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, code) in files {
        let top = top_module(rel);
        if top == "main" || top == "lib" {
            continue;
        }
        let deps = g.entry(top.clone()).or_default();
        for (i, _) in code.match_indices("crate::") {
            let name: String = code[i + 7..].chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect();
            if !name.is_empty() && name != top {
                deps.insert(name);
            }
        }
    }
    g
}

/// A cycle through `start`, if any (depth-first search).
fn cycle_from(g: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    fn walk(g: &BTreeMap<String, BTreeSet<String>>, start: &str, at: &str, path: &mut Vec<String>, seen: &mut BTreeSet<String>) -> bool {
        for next in g.get(at).into_iter().flatten() {
            if next == start {
                path.push(next.clone());
                return true;
            }
            if g.contains_key(next) && seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(g, start, next, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    walk(g, start, start, &mut path, &mut BTreeSet::new()).then_some(path)
}

#[test]
fn modules_form_no_import_cycle() {
    let g = graph();
    assert!(g.len() > 20 && g["writer"].contains("config"), "the graph was not read: {g:?}");
    let cycles: Vec<String> = g.keys().filter_map(|m| cycle_from(&g, m)).map(|c| c.join(" → ")).collect();
    assert!(cycles.is_empty(), "import cycles between modules:\n{}", cycles.join("\n"));
}

#[test]
fn the_check_finds_a_cycle() {
    let mut g = BTreeMap::new();
    g.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    g.insert("b".to_string(), BTreeSet::from(["a".to_string()]));
    g.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(cycle_from(&g, "a"), Some(vec!["a".to_string(), "b".to_string(), "a".to_string()]));
    assert_eq!(cycle_from(&g, "c"), None);
}

/// Files outside `cmd/` (and `main.rs`) that name `crate::cmd`.
fn cmd_imported_by(files: &[(String, String)]) -> Vec<String> {
    files
        .iter()
        .filter(|(rel, code)| top_module(rel) != "cmd" && rel != "main.rs" && code.contains("crate::cmd"))
        .map(|(rel, _)| rel.clone())
        .collect()
}

/// Command files that import another command (shared arguments live in `cmd.rs`).
fn commands_importing_commands(files: &[(String, String)]) -> Vec<String> {
    let mut found = Vec::new();
    for (rel, code) in files.iter().filter(|(rel, _)| rel.starts_with("cmd/") && rel != "cmd.rs") {
        for (i, _) in code.match_indices("crate::cmd::") {
            let rest = &code[i + "crate::cmd::".len()..];
            let name: String = rest.chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect();
            if !name.is_empty() && rest[name.len()..].starts_with("::") {
                found.push(format!("{rel}: crate::cmd::{name}"));
            }
        }
    }
    found
}

/// Files outside `writer/` and `cmd/` that reach into the writer.
fn writer_reached_by(files: &[(String, String)]) -> Vec<String> {
    files
        .iter()
        .filter(|(rel, code)| !matches!(top_module(rel).as_str(), "writer" | "cmd" | "main" | "lib") && code.contains("crate::writer"))
        .map(|(rel, _)| rel.clone())
        .collect()
}

/// The writer's core files: the state machine the simulation drives.
fn is_writer_core(rel: &str) -> bool {
    rel == "writer/core.rs" || rel.starts_with("writer/core/")
}

/// The fields of `struct Writer` (in `writer/core.rs`) declared visible outside the core.
fn public_writer_fields(files: &[(String, String)]) -> Vec<String> {
    let Some((_, code)) = files.iter().find(|(rel, _)| rel == "writer/core.rs") else { return vec!["writer/core.rs is missing".into()] };
    visible_fields(code, "Writer").unwrap_or_else(|| vec!["struct Writer is missing".into()])
}

/// The fields of `struct name` in `code` declared with a visibility (`None`: no such struct).
fn visible_fields(code: &str, name: &str) -> Option<Vec<String>> {
    let start = code.find(&format!("struct {name} {{"))?;
    let body = &code[start..];
    let body = &body[..body.find("\n}").unwrap_or(body.len())];
    Some(body.lines().skip(1).map(str::trim).filter(|l| l.starts_with("pub")).map(str::to_string).collect())
}

/// (file, what) for each use of real time, threads or tokio in the writer's core.
fn real_world_in_core(files: &[(String, String)]) -> Vec<String> {
    // Time comes from the `Clock` port, the broker from the `Broker` port, uploads from `UploadQueue`.
    const FORBIDDEN: &[&str] = &["Instant::now", "SystemTime::now", "std::thread", "thread::sleep", "tokio::", "rayon::", "rdkafka::"];
    let mut found = Vec::new();
    for (rel, code) in files.iter().filter(|(rel, _)| is_writer_core(rel)) {
        // Comments may name them.
        let code: String = code.lines().map(|l| l.split("//").next().unwrap_or_default()).collect::<Vec<_>>().join("\n");
        for f in FORBIDDEN {
            if code.contains(f) {
                found.push(format!("{rel}: {f}"));
            }
        }
    }
    found
}

/// Files other than `consumer.rs` that build a Kafka client's settings themselves.
fn kafka_settings_built_by(files: &[(String, String)]) -> Vec<String> {
    files
        .iter()
        .filter(|(rel, code)| {
            rel != "consumer.rs" && (code.contains("ClientConfig::new") || code.contains("ClientConfig::default") || code.contains("ClientConfig {"))
        })
        .map(|(rel, _)| rel.clone())
        .collect()
}

/// Files other than `config.rs` and the router that parse a topic's time zone or dates from
/// their config strings.
fn topic_strings_parsed_by(files: &[(String, String)]) -> Vec<String> {
    let reads = [
        ".output_timezone.parse",
        "&t.output_timezone)",
        "(&topic.output_timezone",
        ".invalid_date, \"%Y-%m-%d\"",
        "completion_start_date.as_deref().and_then",
    ];
    let mut out = Vec::new();
    for (rel, code) in files.iter().filter(|(rel, _)| rel != "config.rs" && rel != "routing.rs") {
        out.extend(reads.iter().filter(|r| code.contains(*r)).map(|r| format!("{rel}: {r}")));
    }
    out
}

/// The `pub mod`s of `lib` that none of `users` (the binary's, the tests' and the examples'
/// code) names as `kbackup::<module>`.
fn needlessly_public(lib: &str, users: &[String]) -> Vec<String> {
    lib.lines()
        .filter_map(|l| l.strip_prefix("pub mod ")?.strip_suffix(';'))
        .filter(|m| !users.iter().any(|code| code.contains(&format!("kbackup::{m}::")) || code.contains(&format!("kbackup::{m};"))))
        .map(str::to_string)
        .collect()
}

/// The code outside the library that uses it: `src/main.rs`, `tests/` and `examples/`.
fn library_users() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("src/main.rs")];
    for dir in ["tests", "examples"] {
        sources(&root.join(dir), &mut files);
    }
    files.iter().map(|p| std::fs::read_to_string(p).unwrap()).collect()
}

/// Files that import all of their parent module (`use super::*;` outside a test module): a
/// stage then reaches whatever its parent holds, and nothing says what it depends on.
fn glob_imports_of_parent(files: &[(String, String)]) -> Vec<String> {
    files.iter().filter(|(_, code)| code.lines().any(|l| l.starts_with("use super::*;"))).map(|(rel, _)| rel.clone()).collect()
}

#[test]
fn no_file_imports_all_of_its_parent() {
    let found = glob_imports_of_parent(&code_files());
    assert!(found.is_empty(), "`use super::*;` outside tests (import what is used): {found:?}");
}

/// The sibling modules a file names: `super::x` (or `super::{x, y::Z}`) and `crate::<dir>::x`,
/// where `x` is a file beside it.
fn sibling_uses(rel: &str, code: &str, siblings: &BTreeSet<String>) -> BTreeSet<String> {
    let dir = rel.rsplit_once('/').map_or("", |(d, _)| d);
    let ident = |t: &str| t.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>();
    let mut found = BTreeSet::new();
    let mut heads = vec!["super::".to_string()];
    if !dir.is_empty() {
        heads.push(format!("crate::{}::", dir.replace('/', "::")));
    }
    for head in &heads {
        for (i, _) in code.match_indices(head.as_str()) {
            let rest = &code[i + head.len()..];
            let names: Vec<String> = match rest.strip_prefix('{') {
                Some(inner) => inner[..inner.find('}').unwrap_or(inner.len())].split(',').map(|n| ident(n.trim())).collect(),
                None => vec![ident(rest)],
            };
            found.extend(names.into_iter().filter(|n| siblings.contains(n)));
        }
    }
    found
}

/// Directory → its files' sibling imports (file stem → stems it names).
fn sibling_graphs(files: &[(String, String)]) -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let mut stems: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, _) in files {
        let (dir, file) = rel.rsplit_once('/').unwrap_or(("", rel));
        stems.entry(dir.to_string()).or_default().insert(file.trim_end_matches(".rs").to_string());
    }
    let mut out: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (rel, code) in files {
        let (dir, file) = rel.rsplit_once('/').unwrap_or(("", rel));
        let stem = file.trim_end_matches(".rs").to_string();
        let mut uses = sibling_uses(rel, code, &stems[dir]);
        uses.remove(&stem);
        out.entry(dir.to_string()).or_default().insert(stem, uses);
    }
    out
}

/// The sibling cycles, as `dir: a → b → a`.
fn sibling_cycles(files: &[(String, String)]) -> Vec<String> {
    let mut found = Vec::new();
    for (dir, g) in sibling_graphs(files) {
        if dir.is_empty() {
            continue; // the top level is `modules_form_no_import_cycle`'s
        }
        for start in g.keys() {
            if let Some(c) = cycle_from(&g, start) {
                found.push(format!("{dir}: {}", c.join(" → ")));
            }
        }
    }
    found
}

#[test]
fn no_circle_among_the_files_of_a_directory() {
    let files = code_files();
    let graphs = sibling_graphs(&files);
    assert!(graphs["writer/core"]["files"].contains("partition"), "the sibling imports were read: {:?}", graphs["writer/core"]);
    assert_eq!(sibling_cycles(&files), Vec::<String>::new());
}

/// Files other than the core's `core.rs` that apply a message themselves.
fn message_applied_by(files: &[(String, String)]) -> Vec<String> {
    files.iter().filter(|(rel, code)| rel != "writer/core.rs" && code.contains(".on_message(")).map(|(rel, _)| rel.clone()).collect()
}

/// Every `impl Writer` block of the crate, as `file:line` (the writer has one, in `core.rs`).
fn writer_impls(files: &[(String, String)]) -> Vec<String> {
    let mut found = Vec::new();
    for (rel, code) in files {
        for (i, line) in code.lines().enumerate() {
            let l = line.trim_start();
            if l.starts_with("impl Writer ") || l.starts_with("impl<") && l.contains("> Writer ") {
                found.push(format!("{rel}:{}", i + 1));
            }
        }
    }
    found
}

#[test]
fn the_writer_has_one_impl() {
    let impls = writer_impls(&code_files());
    assert_eq!(impls.len(), 1, "one `impl Writer`, in writer/core.rs: {impls:?}");
    assert!(impls[0].starts_with("writer/core.rs:"), "{impls:?}");
}

#[test]
fn messages_enter_the_core_one_way() {
    let files = code_files();
    for shell in ["writer/pipeline.rs", "writer/sim/group.rs"] {
        assert!(files.iter().any(|(rel, code)| rel == shell && code.contains(".apply_batch(")), "{shell} applies batches");
    }
    assert_eq!(message_applied_by(&files), Vec::<String>::new());
}

/// The writer core's owned parts: (file, struct).
const OWNED_PARTS: &[(&str, &str)] = &[
    ("writer/core/files.rs", "Files"),
    ("writer/core/marking.rs", "Marking"),
    ("writer/core/stop.rs", "Stop"),
    ("writer/core/cadence.rs", "Cadence"),
    ("writer/core/topics.rs", "Topics"),
    ("writer/core/topics.rs", "Topic"),
    ("writer/core/budget.rs", "Budget"),
    ("writer/core/stall.rs", "CommitWatch"),
    ("writer/core/partition.rs", "Partitions"),
    ("writer/core/partition.rs", "Partition"),
    ("writer/core/commits.rs", "Commits"),
    ("writer/core/completion.rs", "Completion"),
    ("writer/core/summary.rs", "Summary"),
];

/// Fields of the owned parts declared visible outside their file (or parts not found).
fn open_part_fields(files: &[(String, String)]) -> Vec<String> {
    let mut found = Vec::new();
    for (file, name) in OWNED_PARTS {
        let Some((_, code)) = files.iter().find(|(rel, _)| rel == file) else {
            found.push(format!("{file} is missing"));
            continue;
        };
        match visible_fields(code, name) {
            Some(fields) => found.extend(fields.into_iter().map(|l| format!("{file}: {name}.{l}"))),
            None => found.push(format!("{file}: struct {name} is missing")),
        }
    }
    found
}

#[test]
fn the_cores_parts_keep_their_fields() {
    assert_eq!(open_part_fields(&code_files()), Vec::<String>::new());
}

/// What in `cmd/run.rs` makes its own cluster client instead of sharing the one `Cluster`.
fn startup_clients(files: &[(String, String)]) -> Vec<String> {
    let Some((_, code)) = files.iter().find(|(rel, _)| rel == "cmd/run.rs") else { return vec!["cmd/run.rs is missing".into()] };
    let mut found: Vec<String> = ["lookup_partition_count", "lookup_retention_ms", "metadata_client(", "AdminClient"]
        .iter()
        .filter(|w| code.contains(**w))
        .map(|w| format!("cmd/run.rs: {w}"))
        .collect();
    let made = code.matches("Cluster::connect(").count();
    if made != 1 {
        found.push(format!("cmd/run.rs: Cluster::connect made {made} times"));
    }
    found
}

#[test]
fn startup_shares_one_cluster_client() {
    assert_eq!(startup_clients(&code_files()), Vec::<String>::new());
}

/// Reading tools that open storage themselves instead of through `Backup`.
fn storage_opened_by(files: &[(String, String)]) -> Vec<String> {
    files
        .iter()
        .filter(|(rel, _)| (rel.starts_with("cmd/") && rel != "cmd/run.rs" && rel != "cmd/check.rs") || top_module(rel) == "audit")
        .filter(|(_, code)| code.contains("Storage::open("))
        .map(|(rel, _)| rel.clone())
        .collect()
}

#[test]
fn the_reading_tools_open_a_backup_one_way() {
    let files = code_files();
    assert!(files.iter().any(|(rel, code)| rel == "listing/request.rs" && code.contains("Storage::open(")), "Backup opens storage");
    assert_eq!(storage_opened_by(&files), Vec::<String>::new());
}

/// Files named `mod.rs` (the older convention; the crate uses `x.rs` beside `x/`).
fn mod_rs_files(files: &[(String, String)]) -> Vec<String> {
    files.iter().filter(|(rel, _)| rel == "mod.rs" || rel.ends_with("/mod.rs")).map(|(rel, _)| rel.clone()).collect()
}

#[test]
fn one_module_file_convention() {
    assert_eq!(mod_rs_files(&code_files()), Vec::<String>::new(), "move x/mod.rs to x.rs");
}

#[test]
fn nothing_but_main_imports_the_commands() {
    let files = code_files();
    assert!(files.iter().any(|(rel, _)| rel == "cmd/run.rs"), "the sources were not read");
    assert_eq!(cmd_imported_by(&files), Vec::<String>::new());
}

#[test]
fn no_command_imports_another() {
    assert_eq!(commands_importing_commands(&code_files()), Vec::<String>::new());
}

#[test]
fn only_the_commands_reach_into_the_writer() {
    let files = code_files();
    assert!(files.iter().any(|(rel, code)| rel == "cmd/run.rs" && code.contains("writer::run")), "the run command starts the writer");
    assert_eq!(writer_reached_by(&files), Vec::<String>::new());
}

#[test]
fn the_writer_core_never_uses_real_time_threads_or_tokio() {
    let files = code_files();
    let core: Vec<&str> = files.iter().map(|(rel, _)| rel.as_str()).filter(|r| is_writer_core(r)).collect();
    assert!(core.len() >= 8 && core.contains(&"writer/core.rs"), "the core was not found: {core:?}");
    assert_eq!(real_world_in_core(&files), Vec::<String>::new());
}

#[test]
fn the_writer_state_is_private_to_its_core() {
    assert_eq!(public_writer_fields(&code_files()), Vec::<String>::new());
}

#[test]
fn kafka_client_settings_are_built_in_one_place() {
    let files = code_files();
    assert!(files.iter().any(|(rel, code)| rel == "consumer.rs" && code.contains("ClientConfig::new")), "consumer.rs builds them");
    assert_eq!(kafka_settings_built_by(&files), Vec::<String>::new());
}

#[test]
fn a_topics_time_zone_and_dates_are_parsed_in_one_place() {
    assert_eq!(topic_strings_parsed_by(&code_files()), Vec::<String>::new());
}

#[test]
fn only_what_is_used_outside_is_public() {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    assert!(lib.contains("pub mod cmd;"), "lib.rs was read");
    assert_eq!(needlessly_public(&lib, &library_users()), Vec::<String>::new(), "make these pub(crate)");
}

/// Each rule catches a file that breaks it (and lets the same code pass where it belongs).
#[test]
fn the_rules_catch_violations() {
    let f = |rel: &str, code: &str| vec![(rel.to_string(), code.to_string())];
    assert_eq!(cmd_imported_by(&f("audit.rs", "use crate::cmd::ExitError;")), ["audit.rs"]);
    assert!(cmd_imported_by(&f("cmd/ls.rs", "use crate::cmd::ExitError;")).is_empty());
    assert_eq!(commands_importing_commands(&f("cmd/repartition.rs", "use crate::cmd::replay::key_of;")), ["cmd/repartition.rs: crate::cmd::replay"]);
    assert!(commands_importing_commands(&f("cmd/repartition.rs", "use crate::cmd::{ExitError, SelectArgs};")).is_empty());
    assert_eq!(writer_reached_by(&f("wfs.rs", "crate::writer::run(&c)")), ["wfs.rs"]);
    assert_eq!(mod_rs_files(&f("writer/core/mod.rs", "")), ["writer/core/mod.rs"]);
    assert_eq!(storage_opened_by(&f("cmd/plan.rs", "let s = crate::storage::Storage::open(&config.storage)?;")), ["cmd/plan.rs"]);
    assert!(storage_opened_by(&f("cmd/run.rs", "let s = Storage::open(&config.storage)?;")).is_empty());
    assert_eq!(
        startup_clients(&f("cmd/run.rs", "let c = Cluster::connect(k)?; crate::consumer::lookup_retention_ms(k, &n)")),
        ["cmd/run.rs: lookup_retention_ms"]
    );
    assert_eq!(startup_clients(&f("cmd/run.rs", "")), ["cmd/run.rs: Cluster::connect made 0 times"]);
    let mut parts: Vec<(String, String)> = Vec::new();
    for (file, name) in OWNED_PARTS {
        let code = format!("pub(super) struct {name} {{\n    x: u64,\n}}\n");
        match parts.iter_mut().find(|(f, _)| f == file) {
            Some((_, c)) => c.push_str(&code),
            None => parts.push((file.to_string(), code)),
        }
    }
    assert!(open_part_fields(&parts).is_empty());
    parts[2].1 = "pub(super) struct Stop {\n    pub(super) fatal: Option<Fatal>,\n}".into();
    assert_eq!(open_part_fields(&parts), ["writer/core/stop.rs: Stop.pub(super) fatal: Option<Fatal>,"]);
    assert_eq!(message_applied_by(&f("writer/sim/group.rs", "m.writer.on_message(&msg, t, route, stamp, now);")), ["writer/sim/group.rs"]);
    assert!(message_applied_by(&f("writer/core.rs", "self.on_message(&r.message, r.topic, r.route, r.generation, now);")).is_empty());
    let two = vec![
        ("writer/core.rs".to_string(), "impl Writer {\n}\n".to_string()),
        ("writer/core/files.rs".to_string(), "impl Writer {\n}\n".to_string()),
    ];
    assert_eq!(writer_impls(&two), ["writer/core.rs:1", "writer/core/files.rs:1"]);
    let circle = vec![
        ("writer/core/partition.rs".to_string(), "use super::completion::Marking;".to_string()),
        ("writer/core/completion.rs".to_string(), "use super::{files::InFlight, Writer};".to_string()),
        ("writer/core/files.rs".to_string(), "use crate::writer::core::partition::PartKey;".to_string()),
    ];
    assert_eq!(
        sibling_cycles(&circle),
        [
            "writer/core: completion → files → partition → completion",
            "writer/core: files → partition → completion → files",
            "writer/core: partition → completion → files → partition"
        ]
    );
    assert!(sibling_cycles(&circle[1..]).is_empty(), "a chain is no circle");
    assert!(mod_rs_files(&f("writer/core.rs", "")).is_empty());
    assert!(writer_reached_by(&f("cmd/run.rs", "crate::writer::run(&c)")).is_empty());
    assert_eq!(real_world_in_core(&f("writer/core/files.rs", "let t = std::time::Instant::now();")), ["writer/core/files.rs: Instant::now"]);
    assert_eq!(real_world_in_core(&f("writer/core/commits.rs", "tokio::spawn(x)")), ["writer/core/commits.rs: tokio::"]);
    assert_eq!(
        real_world_in_core(&f("writer/core/rebalance.rs", "std::thread::sleep(d)")),
        ["writer/core/rebalance.rs: std::thread", "writer/core/rebalance.rs: thread::sleep"]
    );
    assert!(
        real_world_in_core(&f("writer/core.rs", "// librdkafka's rdkafka::Message\nself.clock.sleep(d)")).is_empty(),
        "comments and the clock port"
    );
    assert_eq!(
        public_writer_fields(&f(
            "writer/core.rs",
            "pub(crate) struct Writer {\n    files: Files,\n    pub(super) paused: bool,\n}\nstruct Other {\n    pub x: u8,\n}"
        )),
        ["pub(super) paused: bool,"]
    );
    assert!(real_world_in_core(&f("writer/pipeline.rs", "let t = Instant::now();")).is_empty(), "a shell may");
    assert_eq!(kafka_settings_built_by(&f("cmd/replay.rs", "let c = ClientConfig::new();")), ["cmd/replay.rs"]);
    assert!(kafka_settings_built_by(&f("consumer.rs", "let c = ClientConfig::new();")).is_empty());
    assert_eq!(glob_imports_of_parent(&f("writer/kafka.rs", "use super::*;\n")), ["writer/kafka.rs"]);
    assert!(glob_imports_of_parent(&f("writer/budget.rs", "mod tests {\n    use super::*;\n}")).is_empty(), "tests may");
    assert_eq!(
        topic_strings_parsed_by(&f("writer/core.rs", "tz: t.output_timezone.parse().unwrap_or(chrono_tz::Tz::UTC),")),
        ["writer/core.rs: .output_timezone.parse"]
    );
    assert_eq!(
        topic_strings_parsed_by(&f("audit/topic.rs", "NaiveDate::parse_from_str(&topic.invalid_date, \"%Y-%m-%d\").ok()")),
        ["audit/topic.rs: .invalid_date, \"%Y-%m-%d\""]
    );
    assert!(topic_strings_parsed_by(&f("config.rs", "name.parse::<Tz>() // t.output_timezone.parse")).is_empty());
    let users = vec!["use kbackup::cmd::{self, ExitError};".to_string()];
    assert_eq!(needlessly_public("pub mod cmd;\npub mod bench;\npub(crate) mod audit;\n", &users), ["bench"]);
    let g = graph_of(&[("a.rs".into(), "crate::b::x".into()), ("b.rs".into(), "crate::a::y".into())]);
    assert!(cycle_from(&g, "a").is_some());
}

/// The README's "Code layout" section.
fn code_layout(readme: &str) -> &str {
    let start = readme.find("## Code layout").expect("the README has a Code layout section");
    let rest = &readme[start + 2..];
    &readme[start..start + 2 + rest.find("\n## ").unwrap_or(rest.len())]
}

/// The `src/...` paths a text names in backticks.
fn named_paths(text: &str) -> Vec<String> {
    text.split('`').skip(1).step_by(2).filter(|s| s.starts_with("src/")).map(str::to_string).collect()
}

/// Top-level modules (declared in `lib.rs`) the layout does not name, and paths it names that
/// do not exist.
fn layout_mismatches(layout: &str, lib: &str, exists: impl Fn(&str) -> bool) -> Vec<String> {
    let named = named_paths(layout);
    let mut out = Vec::new();
    for line in lib.lines() {
        let Some(m) =
            line.trim().strip_prefix("pub mod ").or_else(|| line.trim().strip_prefix("pub(crate) mod ")).or_else(|| line.trim().strip_prefix("mod "))
        else {
            continue;
        };
        let m = m.trim_end_matches(';');
        let (file, dir) = (format!("src/{m}.rs"), format!("src/{m}/"));
        if !named.iter().any(|p| *p == file || p.starts_with(&dir)) {
            out.push(format!("module {m} is not in the README's code layout"));
        }
    }
    for p in &named {
        if !exists(p) {
            out.push(format!("the README's code layout names {p}, which does not exist"));
        }
    }
    out
}

/// The number of sabotage rules the README says the simulation's test breaks, against the
/// rules that test lists.
fn stated_rule_count(readme: &str) -> Option<usize> {
    const WORDS: [&str; 31] = [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
        "twenty",
        "twenty-one",
        "twenty-two",
        "twenty-three",
        "twenty-four",
        "twenty-five",
        "twenty-six",
        "twenty-seven",
        "twenty-eight",
        "twenty-nine",
        "thirty",
    ];
    let at = readme.find("breaks each of ")? + "breaks each of ".len();
    let word = readme[at..].split_whitespace().next()?;
    WORDS.iter().position(|w| *w == word)
}

#[test]
fn the_readme_layout_matches_the_tree() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
    let problems = layout_mismatches(code_layout(&readme), &lib, |p| root.join(p.trim_end_matches('/')).exists());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The rules the simulation's test breaks: those of its default list.
    let sim = std::fs::read_to_string(root.join("src/writer/sim.rs")).unwrap();
    let list = sim.split("let rules = [").nth(1).and_then(|r| r.split("];").next()).expect("the sabotage test's list of rules");
    // Distinct rules: a rule may be looked for in more than one world.
    let listed = list.split("(Rule::").skip(1).filter_map(|r| r.split(',').next()).collect::<std::collections::BTreeSet<_>>().len();
    assert_eq!(stated_rule_count(&readme), Some(listed), "the README states how many rules the simulation's test breaks");
}

/// Files of `src/writer/core/` the README's line for the writer does not name (it lists the
/// core's parts one by one, so a part added or removed shows here).
fn core_files_unnamed(layout: &str, core_files: &[String]) -> Vec<String> {
    let line = layout.lines().find(|l| l.starts_with("| `src/writer.rs`")).unwrap_or_default();
    core_files.iter().filter(|f| !line.contains(&format!("`{f}`"))).map(|f| format!("the README's writer line does not name core/{f}")).collect()
}

#[test]
fn the_readme_names_every_part_of_the_writer_core() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mut files: Vec<String> =
        std::fs::read_dir(root.join("src/writer/core")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    files.sort();
    assert!(files.len() >= 10, "the core's files were read: {files:?}");
    assert_eq!(core_files_unnamed(code_layout(&readme), &files), Vec::<String>::new());
    let stale = "| `src/writer.rs` | the writer: `files.rs` (open files) |\n";
    assert_eq!(core_files_unnamed(stale, &["files.rs".into(), "parts.rs".into()]), ["the README's writer line does not name core/parts.rs"]);
}

#[test]
fn the_layout_check_catches_a_stale_readme() {
    let lib = "pub mod a;\npub mod b;\npub(crate) mod c;\n";
    let layout = "## Code layout\n| `src/a.rs` | a |\n| `src/b/` | b |\n| `src/core.rs` | gone |\n";
    let exists = |p: &str| p != "src/core.rs";
    assert_eq!(
        layout_mismatches(layout, lib, exists),
        vec![
            "module c is not in the README's code layout".to_string(),
            "the README's code layout names src/core.rs, which does not exist".to_string()
        ]
    );
    assert_eq!(stated_rule_count("A test breaks each of nineteen rules on purpose"), Some(19));
}
