//! Per-partition WFS job planning: split partitions into groups and give each group's job
//! config a `"partitions"` filter on every fetcher query (what Sunbird's submit script does).

pub mod launch;
pub mod wait;

use serde_json::{json, Value};

/// A planning error.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    #[error("the job config has no fetcher queries (search.queries) to add partitions to")]
    NoQueries,
    #[error("--parallelisation must be at least 1")]
    ZeroParallelisation,
    #[error("the topic has no partitions")]
    NoPartitions,
}

/// Partitions `0..count` in consecutive groups of `n` (the last may be smaller).
pub fn groups(count: i32, n: usize) -> Result<Vec<Vec<i32>>, PlanError> {
    if n == 0 {
        return Err(PlanError::ZeroParallelisation);
    }
    if count <= 0 {
        return Err(PlanError::NoPartitions);
    }
    Ok((0..count).collect::<Vec<_>>().chunks(n).map(<[i32]>::to_vec).collect())
}

/// A copy of `job` whose every `search.queries[]` object carries `"partitions": parts`.
pub fn with_partitions(job: &Value, parts: &[i32]) -> Result<Value, PlanError> {
    let mut job = job.clone();
    let queries = job
        .get_mut("search")
        .and_then(|s| s.get_mut("queries"))
        .and_then(Value::as_array_mut)
        .filter(|q| !q.is_empty())
        .ok_or(PlanError::NoQueries)?;
    for q in queries.iter_mut() {
        let obj = q.as_object_mut().ok_or(PlanError::NoQueries)?;
        obj.insert("partitions".into(), json!(parts));
    }
    Ok(job)
}

/// The job-queue message of Sunbird's job manager: `{"model": ..., "config": ...}`.
pub fn job_manager_message(model: &str, config: &Value) -> Value {
    json!({ "model": model, "config": config })
}

/// Fills `{config}` and `{partitions}` (comma-separated) in an `--exec` template.
pub fn render_exec(template: &str, config_path: &str, parts: &[i32]) -> String {
    let list: Vec<String> = parts.iter().map(i32::to_string).collect();
    template.replace("{config}", config_path).replace("{partitions}", &list.join(","))
}

/// A `spark-submit` launch: what Sunbird's submit script ran for each group.
#[derive(Debug, Clone, PartialEq)]
pub struct SparkJob {
    /// The `spark-submit` executable.
    pub submit: String,
    /// `--master`, e.g. `local[*]` or `spark://host:7077`.
    pub master: String,
    /// The application: a jar (with `main_class`) or a Python file.
    pub app: String,
    pub main_class: Option<String>,
    /// `--model` passed to the application (Sunbird's JobExecutor: e.g. `wfs`).
    pub model: Option<String>,
    /// Extra `--conf key=value`s.
    pub confs: Vec<String>,
}

/// The argument vector of one job: `spark-submit --master M [--class C] [--conf k=v]... APP
/// [--model MODEL] --config <job config JSON>` — the config passed as text, as Sunbird's
/// JobExecutor takes it. Run without a shell, so nothing in the config needs quoting.
pub fn spark_submit_args(job: &SparkJob, name: &str, config_json: &str) -> Vec<String> {
    let mut v = vec![job.submit.clone(), "--master".into(), job.master.clone(), "--name".into(), name.to_string()];
    if let Some(c) = &job.main_class {
        v.extend(["--class".to_string(), c.clone()]);
    }
    for c in &job.confs {
        v.extend(["--conf".to_string(), c.clone()]);
    }
    v.push(job.app.clone());
    if let Some(m) = &job.model {
        v.extend(["--model".to_string(), m.clone()]);
    }
    v.extend(["--config".to_string(), config_json.to_string()]);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wfs() -> Value {
        json!({
            "search": {"type": "azure", "queries": [
                {"bucket": "telemetry-data-store", "prefix": "unique/raw/", "endDate": "2020-02-01", "delta": 0},
                {"bucket": "telemetry-data-store", "prefix": "unique/raw/", "endDate": "2020-02-02", "delta": 0}
            ]},
            "model": "org.ekstep.analytics.model.WorkflowSummary",
            "parallelization": 8,
            "appName": "Workflow Summarizer"
        })
    }

    #[test]
    fn groups_of_n() {
        assert_eq!(groups(8, 3).unwrap(), vec![vec![0, 1, 2], vec![3, 4, 5], vec![6, 7]]);
        assert_eq!(groups(4, 4).unwrap(), vec![vec![0, 1, 2, 3]]);
        assert_eq!(groups(2, 8).unwrap(), vec![vec![0, 1]]);
        assert_eq!(groups(8, 0), Err(PlanError::ZeroParallelisation));
        assert_eq!(groups(0, 2), Err(PlanError::NoPartitions));
    }

    #[test]
    fn every_query_gets_the_partitions_and_nothing_else_changes() {
        let job = with_partitions(&wfs(), &[3, 4]).unwrap();
        for q in job["search"]["queries"].as_array().unwrap() {
            assert_eq!(q["partitions"], json!([3, 4]));
            assert_eq!(q["delta"], 0);
        }
        let mut back = job.clone();
        for q in back["search"]["queries"].as_array_mut().unwrap() {
            q.as_object_mut().unwrap().remove("partitions");
        }
        assert_eq!(back, wfs());
        assert_eq!(with_partitions(&json!({"model": "x"}), &[0]), Err(PlanError::NoQueries));
    }

    #[test]
    fn spark_submit_command_lines() {
        let job = SparkJob {
            submit: "/opt/spark/bin/spark-submit".into(),
            master: "local[*]".into(),
            app: "analytics.jar".into(),
            main_class: Some("org.ekstep.analytics.job.JobExecutor".into()),
            model: Some("wfs".into()),
            confs: vec!["spark.driver.memory=2g".into()],
        };
        assert_eq!(
            spark_submit_args(&job, "wfs-job-0-3", r#"{"a": "it's"}"#),
            [
                "/opt/spark/bin/spark-submit",
                "--master",
                "local[*]",
                "--name",
                "wfs-job-0-3",
                "--class",
                "org.ekstep.analytics.job.JobExecutor",
                "--conf",
                "spark.driver.memory=2g",
                "analytics.jar",
                "--model",
                "wfs",
                "--config",
                r#"{"a": "it's"}"#
            ]
        );
        let py = SparkJob { app: "wfs.py".into(), main_class: None, model: None, confs: vec![], ..job };
        assert_eq!(spark_submit_args(&py, "n", "{}")[5..], ["wfs.py", "--config", "{}"]);
    }

    /// Every partition in exactly one group, whatever the count and group size (Sunbird's
    /// script asked for partitions past the last when the count was not a multiple).
    #[test]
    fn groups_cover_every_partition_exactly_once() {
        for count in 1..=40 {
            for n in 1..=12 {
                let g = groups(count, n).unwrap();
                let flat: Vec<i32> = g.iter().flatten().copied().collect();
                assert_eq!(flat, (0..count).collect::<Vec<_>>(), "{count} / {n}");
                assert!(g.iter().all(|x| !x.is_empty() && x.len() <= n));
                assert_eq!(g.len(), (count as usize).div_ceil(n));
            }
        }
    }

    #[test]
    fn templates_and_messages() {
        assert_eq!(
            render_exec("spark-submit --conf {config} --tag p{partitions}", "/tmp/job-0-1.json", &[0, 1]),
            "spark-submit --conf /tmp/job-0-1.json --tag p0,1"
        );
        let m = job_manager_message("wfs", &json!({"a": 1}));
        assert_eq!(m, json!({"model": "wfs", "config": {"a": 1}}));
    }
}
