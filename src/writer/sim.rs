//! Deterministic simulation of the writer (in the manner of FoundationDB's and TigerBeetle's):
//! the real core — the same `Writer` that `run` drives — against a simulated consumer group,
//! object store and clock, with several writer instances, crashes and restarts at any step,
//! zombies that wake after their session expired, graceful stops, storage and broker faults
//! and a producer, all from one seed.
//!
//! A seed that fails prints itself; `KBACKUP_SIM_SEED=<seed> cargo test --lib sim::` replays
//! it exactly. `KBACKUP_SIM_SEEDS=<n>` sets how many seeds the main test runs.
//!
//! What is simplified: a rebalance completes at once (cooperative-sticky: only the
//! partitions that move are revoked and assigned); a member that misses a rebalance is expelled
//! (it becomes a zombie until it learns so); fetches are never refused.

mod check;
mod group;
mod schedule;
mod world;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use check::Ledger;
use group::Sim;
use world::{lock, Faults, World};

use crate::config::Config;
use crate::sabotage::{self, Rule};

/// The topics: `t` as Sunbird's telemetry (value format, plain), `u` with prefix routing,
/// whole records and gzip.
const TOPICS: [&str; 2] = ["t", "u"];
const PARTITIONS: usize = 3;
/// Messages one poll takes at most.
const BATCH: usize = 8;

/// One record in the simulated log (the world holds them; the ledger checks what is stored
/// against them).
struct Record {
    payload: Vec<u8>,
    timestamp_ms: i64,
}

/// The slot of a topic's partition.
fn slot(topic: &str, partition: i32) -> usize {
    let t = TOPICS.iter().position(|n| *n == topic).expect("a simulated topic");
    t * PARTITIONS + partition as usize
}

/// The topic and partition of a slot.
fn unslot(s: usize) -> (&'static str, i32) {
    (TOPICS[s / PARTITIONS], (s % PARTITIONS) as i32)
}
/// The buffer budget each writer gets: small, so sealing for memory and pausing happen.
const BUDGET: u64 = 6_000;

const CONFIG: &str = "
[kafka]
brokers = 'simulated:9092'
group_id = 'sim'
[storage]
url = 'file:///simulated'
[writer]
memory_limit_bytes = 1048576
commit_interval_ms = 300
revoke_timeout_secs = 5
shutdown_timeout_secs = 8
commit_metadata_limit = 1500
[[topic]]
name = 't'
path = 'backup/t'
error_path = 'backup/errors'
output_timezone = 'Asia/Kolkata'
compression = 'none'
max_file_bytes = 700
max_file_age_secs = 2
completion_grace_secs = 60
";

/// The second topic, in the wide world.
const TOPIC_U: &str = "
[[topic]]
name = 'u'
path = 'backup/u'
error_path = 'backup/u-errors'
output_timezone = 'Asia/Kolkata'
format = 'record'
compression = 'gzip'
prefix_field = 'eid'
prefix_map = { LOG = 'logs', DEFAULT = 'events' }
max_file_bytes = 900
max_file_age_secs = 3
completion_grace_secs = 60
";

/// Topic `t`'s second output, in the outputs world: the same routing, Parquet files under
/// their own path, and a size and age of their own (so the two outputs' files of one range
/// are sealed, recorded and uploaded at different times).
const TOPIC_T_PARQUET: &str = "
[[topic]]
name = 't'
path = 'columns/t'
error_path = 'columns/errors'
output_timezone = 'Asia/Kolkata'
file_format = 'parquet'
max_file_bytes = 1100
max_file_age_secs = 3
completion_grace_secs = 60
";

/// Which topics a seed's world has. The narrow world (`t` alone) concentrates traffic on
/// three partitions, which the rarest schedules need (two owners' files of one route
/// overlapping, two owners' clocks giving one name); the wide one adds topic `u`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Width {
    Narrow,
    Wide,
    /// The narrow world with topic `t` in stock Secor's layout and SequenceFiles: names that
    /// are the same for every owner of a file (its first offset), and binary framing.
    Stock,
    /// The narrow world with topic `t` in Parquet files: files transcoded at seal time, whose
    /// rebuilt copies must hold the same rows.
    Parquet,
    /// The narrow world with topic `t` backed up twice in one read: as text files and as
    /// Parquet files (two outputs), each holding every message once.
    Outputs,
    /// The wide world with topic `u`'s records (headers, timestamp types) in Parquet files.
    WideParquet,
}

impl Width {
    /// Odd seeds are wide, even ones narrow: CI's seeds cover both; the last digit picks the
    /// files' kind (9: `u` in Parquet; 4: stock Secor's; 6: Parquet; 8: two outputs).
    fn of(seed: u64) -> Width {
        if seed % 10 == 9 {
            Width::WideParquet
        } else if seed % 2 == 1 {
            Width::Wide
        } else if seed % 10 == 4 {
            Width::Stock
        } else if seed % 10 == 6 {
            Width::Parquet
        } else if seed % 10 == 8 {
            Width::Outputs
        } else {
            Width::Narrow
        }
    }
}

fn config(width: Width) -> Config {
    let text = match width {
        Width::Narrow => CONFIG.to_string(),
        Width::Wide => format!("{CONFIG}{TOPIC_U}"),
        Width::Stock => format!("{CONFIG}layout = 'secor'\nfile_format = 'sequencefile'\n"),
        Width::Parquet => format!("{CONFIG}file_format = 'parquet'\n"),
        Width::Outputs => format!("{CONFIG}{TOPIC_T_PARQUET}"),
        Width::WideParquet => format!("{CONFIG}{}", TOPIC_U.replace("compression = 'gzip'", "file_format = 'parquet'")),
    };
    Config::parse(&text, "simulation").expect("the simulation's config is valid")
}

/// What one seed did, for the report.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Stats {
    pub(super) produced: u64,
    pub(super) blobs: u64,
    pub(super) crashes: u64,
    pub(super) zombies: u64,
    pub(super) stops: u64,
    pub(super) rebalances: u64,
    /// Turns that ended paused (the memory budget's backpressure).
    pub(super) paused_turns: u64,
    /// `--until-caught-up` members that caught up and stopped.
    pub(super) caught_up: u64,
    /// Rebuilt files compared byte for byte with the upload they rebuild.
    pub(super) rebuilt_identical: u64,
    /// Record lines checked where the release before record dating put them.
    pub(super) earlier_placed: u64,
    /// Completion markers written (each checked against the log), superseding ones among them.
    pub(super) markers: u64,
    pub(super) superseding: u64,
}

/// A world for `seed` and the group in it, with no member yet.
fn new_sim(seed: u64, width: Width) -> (world::Shared, Sim) {
    let config = config(width);
    let ledger = Ledger::new(&config.topics);
    let world = Arc::new(Mutex::new(World::new(seed, config.topic_names().len() * PARTITIONS, ledger)));
    (world.clone(), Sim::new(world, config))
}

/// Runs one seed; returns its stats, or the first violation with the seed's recent history.
pub(super) fn run_seed(seed: u64) -> Result<Stats, String> {
    run_seed_in(seed, Width::of(seed))
}

/// Runs one seed in a world of the given width.
fn run_seed_in(seed: u64, width: Width) -> Result<Stats, String> {
    let (world, mut sim) = new_sim(seed, width);
    // Half of the narrow worlds run without completion markers (see `Sim::markers`).
    sim.markers = seed % 4 != 2;
    for _ in 0..1 + sim.below(3) {
        sim.start_member();
    }
    sim.rebalance();
    // The chaotic phase: every step picks one thing to happen.
    let steps = 150 + sim.below(250);
    for _ in 0..steps {
        sim.random_step();
        sim.check()?;
    }
    // The calm phase: faults end, everyone wakes up, and everything produced must be stored
    // exactly once within a bounded time.
    sim.calm();
    let ends = sim.run_until_committed()?;
    let violation = {
        let mut w = lock(&world);
        w.ledger.all_stored_once(&ends);
        w.ledger.violations.first().cloned()
    };
    if let Some(v) = violation {
        return Err(sim.report(&v));
    }
    let mut stats = sim.stats;
    stats.blobs = lock(&world).blobs().len() as u64;
    stats.rebuilt_identical = lock(&world).rebuilt_identical;
    stats.earlier_placed = lock(&world).ledger.earlier_placed;
    stats.markers = lock(&world).markers;
    stats.superseding = lock(&world).markers_superseding;
    Ok(stats)
}

fn seeds() -> Vec<u64> {
    if let Ok(s) = std::env::var("KBACKUP_SIM_SEED") {
        return vec![s.parse().expect("KBACKUP_SIM_SEED is a number")];
    }
    let n: u64 = std::env::var("KBACKUP_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1000);
    (1..=n).collect()
}

/// The first `count` seeds ending in `last`.
fn ending_in(last: u64, count: u64) -> impl Iterator<Item = u64> {
    (0..count).map(move |i| last + 10 * i)
}

/// Runs `seeds`, each of the world `width`; panics at the first that fails.
fn every_seed_of(width: Width, seeds: impl IntoIterator<Item = u64>, what: &str) {
    for seed in seeds {
        assert_eq!(Width::of(seed), width);
        if let Err(e) = run_seed(seed) {
            panic!("seed {seed} ({what}): {e}");
        }
    }
}

/// Stock Secor's layout under the same schedules: every owner names a file by its first
/// offset (so a rebuilt file and a zombie's meet the same name) and frames SequenceFiles.
#[test]
fn stock_secor_layout_schedules_keep_every_event_exactly_once() {
    every_seed_of(Width::Stock, ending_in(4, 200), "stock Secor's layout");
}

/// One read, two outputs (text and Parquet) under the same schedules: each output holds every
/// message once, and no commit passes a message either output has not stored.
#[test]
fn two_output_schedules_keep_every_event_exactly_once_in_each() {
    every_seed_of(Width::Outputs, ending_in(8, 100), "two outputs");
}

/// Seeds of the two-output world where a partition's record filled with both outputs' intents
/// while its rebuilt files waited for messages, and the budget's pause (for the uploads of files
/// whose intents had no room) kept those messages from being read: commits never moved again
/// (1308, 1918, 3828, 8398). Not pausing at all during a recovery ran over the budget (4308,
/// 6578): only the files waiting for room in their record are left out of the pause.
#[test]
fn recovery_reads_on_while_uploads_wait_for_room_in_the_record() {
    every_seed_of(Width::Outputs, [1308, 1918, 3828, 8398, 4308, 6578], "two outputs, a recovery and a full record");
    let _broken = sabotage::break_rule(Rule::PauseDuringRecovery);
    let e = run_seed(1308).expect_err("the rule before: paused while the recovery needed messages");
    assert!(e.contains("no progress"), "{e}");
}

/// Record files in Parquet (topic `u` of the wide world) under the same schedules.
#[test]
fn record_parquet_schedules_keep_every_event_exactly_once() {
    every_seed_of(Width::WideParquet, ending_in(9, 50), "records in Parquet");
}

/// Parquet files under the same schedules: each file is transcoded when sealed, and a file
/// rebuilt after a crash or met under its recorded name must hold the same rows.
#[test]
fn parquet_schedules_keep_every_event_exactly_once() {
    every_seed_of(Width::Parquet, ending_in(6, 100), "Parquet files");
}

#[test]
fn simulated_schedules_keep_every_event_exactly_once() {
    let started = std::time::Instant::now();
    let mut total = Stats::default();
    let seeds = seeds();
    // Seeds are independent: split them over the cores, each result keyed by its seed.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(seeds.len().max(1));
    let results: Vec<(u64, Result<Stats, String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|k| {
                let mine: Vec<u64> = seeds.iter().copied().skip(k).step_by(workers).collect();
                s.spawn(move || mine.into_iter().map(|seed| (seed, run_seed(seed))).collect::<Vec<_>>())
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("a simulation worker panicked")).collect()
    });
    let mut failed: Vec<(u64, String)> = Vec::new();
    for (seed, r) in results {
        match r {
            Ok(s) => {
                total.produced += s.produced;
                total.blobs += s.blobs;
                total.crashes += s.crashes;
                total.zombies += s.zombies;
                total.stops += s.stops;
                total.rebalances += s.rebalances;
                total.paused_turns += s.paused_turns;
                total.caught_up += s.caught_up;
                total.rebuilt_identical += s.rebuilt_identical;
                total.earlier_placed += s.earlier_placed;
                total.markers += s.markers;
                total.superseding += s.superseding;
            }
            Err(e) => failed.push((seed, e)),
        }
    }
    failed.sort_by_key(|f| f.0);
    if let Some((seed, e)) = failed.first() {
        let all: Vec<String> = failed.iter().map(|f| f.0.to_string()).collect();
        panic!(
            "simulation: {} of {} seeds failed ({}); the first, replayed by KBACKUP_SIM_SEED={seed} cargo test --lib simulated_schedules:\n{e}",
            failed.len(),
            seeds.len(),
            all.join(", ")
        );
    }
    eprintln!(
        "simulation: {} seeds in {:.1} s: {} events, {} blobs, {} crashes, {} zombies, {} graceful stops, {} rebalances, {} paused turns, {} caught-up stops, {} rebuilt files identical to their upload, {} record lines where the earlier release put them, {} completion markers ({} superseding)",
        seeds.len(),
        started.elapsed().as_secs_f64(),
        total.produced,
        total.blobs,
        total.crashes,
        total.zombies,
        total.stops,
        total.rebalances,
        total.paused_turns,
        total.caught_up,
        total.rebuilt_identical,
        total.earlier_placed,
        total.markers,
        total.superseding
    );
    assert!(total.produced > 0 && total.rebalances > 0, "the simulation exercised nothing");
    // Over many seeds only: one replayed seed need not pause or catch up.
    assert!(seeds.len() < 100 || (total.paused_turns > 0 && total.caught_up > 0), "the simulation never paused or never caught up");
    assert!(seeds.len() < 100 || total.earlier_placed > 0, "no record was ever filed by the release before record dating");
    assert!(seeds.len() < 100 || total.superseding > 0, "no completion marker was ever superseded");
}

#[test]
fn a_seed_replays_exactly() {
    let a = run_seed(7).expect("seed 7");
    let b = run_seed(7).expect("seed 7 again");
    assert_eq!((a.produced, a.blobs, a.crashes, a.rebalances), (b.produced, b.blobs, b.crashes, b.rebalances));
}

/// The first of `seeds` that fails with `rule` broken, and its violation (an invariant of the
/// world, or one of the writer's own assertions).
fn first_failure(rule: Rule, seeds: u64, width: Width) -> Option<(u64, String)> {
    let _broken = sabotage::break_rule(rule);
    (1..=seeds).find_map(|s| match std::panic::catch_unwind(|| run_seed_in(s, width)) {
        Ok(r) => r.err().map(|e| (s, e)),
        Err(panic) => {
            let what = panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
            Some((s, format!("the writer's assertion failed: {}", what.unwrap_or_default())))
        }
    })
}

/// Each deliberately broken rule is caught, and within how many seeds. Rules are independent
/// (each is broken on its own thread only), so they run side by side.
#[test]
fn the_simulation_catches_broken_rules() {
    // The seeds each rule may take and the world it is looked for in: the rare schedules
    // (overlapping intents of one route, one name from two clocks) need the narrow world and more seeds.
    let rules = [
        (Rule::CommitHighestPending, 2000, Width::Wide),
        (Rule::UploadBeforeIntent, 2000, Width::Wide),
        (Rule::UnconditionalPut, 2000, Width::Wide),
        (Rule::IgnoreRecovery, 2000, Width::Wide),
        (Rule::KeepStaleMessages, 2000, Width::Wide),
        (Rule::TrustRecordedName, 2000, Width::Narrow),
        (Rule::TrustRecordedName, 2000, Width::Parquet),
        (Rule::UnconditionalPut, 2000, Width::Parquet),
        (Rule::ChargeSealingAtSeal, 200, Width::Parquet),
        (Rule::OutputsShareIntents, 2000, Width::Outputs),
        (Rule::IgnoreRecovery, 2000, Width::Outputs),
        (Rule::PlanByFirstOffset, 8000, Width::Narrow),
        (Rule::OverlappingCommits, 2000, Width::Wide),
        (Rule::NoBackpressure, 2000, Width::Wide),
        (Rule::NeverResume, 2000, Width::Wide),
        (Rule::CaughtUpEarly, 2000, Width::Wide),
        (Rule::RebuildFromSecond, 2000, Width::Wide),
        (Rule::IgnoreEarlierPlacement, 4000, Width::Wide),
        (Rule::NoWatermarkRetry, 2000, Width::Wide),
        (Rule::MarkUnsettled, 2000, Width::Narrow),
        (Rule::NoRecordRoomForOpenFiles, 2000, Width::Wide),
        (Rule::FetchFromCommitted, 2000, Width::Wide),
        (Rule::WaitForCommitForever, 2000, Width::Wide),
        (Rule::WatermarksOnLoop, 2000, Width::Wide),
    ];
    // Caught, but too far out for CI's time: looked for only when named below. PlaceBeforeBuild
    // first fails at seed 3323 (about 4 minutes); the unit test
    // `each_intent_is_judged_by_the_rule_of_the_build_that_recorded_it` shows it on its own.
    // PauseDuringRecovery first fails at seed 422 of the outputs world (about 100 s);
    // `recovery_reads_on_while_uploads_wait_for_room_in_the_record` shows it at seed 1308.
    let slow = [(Rule::PlaceBeforeBuild, 4000, Width::Wide), (Rule::PauseDuringRecovery, 2000, Width::Outputs)];
    // `KBACKUP_SIM_RULES=RuleA,RuleB` looks for those only (while working on one rule).
    let only: Option<Vec<String>> = std::env::var("KBACKUP_SIM_RULES").ok().map(|v| v.split(',').map(|r| r.trim().to_string()).collect());
    let named = |r: &Rule| only.as_ref().is_some_and(|o| o.contains(&format!("{r:?}")));
    let rules: Vec<_> =
        rules.into_iter().filter(|(r, _, _)| only.is_none() || named(r)).chain(slow.into_iter().filter(|(r, _, _)| named(r))).collect();
    assert!(!rules.is_empty(), "KBACKUP_SIM_RULES names no rule");
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    // (rule, seeds allowed, the first seed that caught it and what it saw)
    type Caught = (Rule, u64, Width, Option<(u64, String)>);
    let found: Vec<Caught> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|k| {
                let mine: Vec<(Rule, u64, Width)> = rules.iter().copied().skip(k).step_by(workers).collect();
                s.spawn(move || mine.into_iter().map(|(rule, n, w)| (rule, n, w, first_failure(rule, n, w))).collect::<Vec<_>>())
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("a sabotage worker panicked")).collect()
    });
    let mut missed = Vec::new();
    for (rule, n, width, caught) in found {
        match caught {
            Some((seed, e)) => eprintln!("broken rule {rule:?}: caught by seed {seed} ({width:?} world): {}", e.lines().next().unwrap_or_default()),
            None => missed.push(format!("{rule:?} (in {n} seeds of the {width:?} world)")),
        }
    }
    assert!(missed.is_empty(), "broken rules not caught: {}", missed.join(", "));
}

/// One member, assigned everything, that has consumed and written for 20 turns.
fn busy_member(seed: u64) -> (world::Shared, Sim) {
    let (world, mut sim) = new_sim(seed, Width::of(seed));
    sim.start_member();
    sim.rebalance();
    for _ in 0..20 {
        sim.produce(10);
        sim.step_member(0);
    }
    (world, sim)
}

#[test]
fn a_stop_ends_within_its_bound_with_the_broker_frozen() {
    // A busy member, the broker frozen a moment before the signal: every call it makes (commits,
    // reads of committed offsets and watermarks) waits for the broker.
    for seed in 1..=50 {
        let (world, mut sim) = busy_member(seed);
        let now = lock(&world).now_ms;
        lock(&world).faults = Faults { broker_frozen_until_ms: now + 60_000, ..Default::default() };
        sim.step_member(0);
        let took = sim.stop_member(0).expect("the stop keeps its bound");
        assert!(took <= Duration::from_secs(8), "seed {seed}: the stop took {took:?}");
    }
}

#[test]
fn a_stop_ends_within_its_bound_with_storage_frozen() {
    // The invariant is checked inside every graceful stop; this seed family forces frozen
    // storage across stops.
    for seed in 1..=50 {
        let (world, mut sim) = busy_member(seed);
        lock(&world).faults = Faults { storage_frozen_until_ms: u64::MAX, ..Default::default() };
        let took = sim.stop_member(0).expect("the stop keeps its bound");
        assert!(took <= Duration::from_secs(8), "seed {seed}: the stop took {took:?}");
    }
}
