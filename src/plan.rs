//! Per-partition WFS job planning: split partitions into groups and give each group's job
//! config a `"partitions"` filter on every fetcher query (what Sunbird's submit script does).

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
    fn templates_and_messages() {
        assert_eq!(
            render_exec("spark-submit --conf {config} --tag p{partitions}", "/tmp/job-0-1.json", &[0, 1]),
            "spark-submit --conf /tmp/job-0-1.json --tag p0,1"
        );
        let m = job_manager_message("wfs", &json!({"a": 1}));
        assert_eq!(m, json!({"model": "wfs", "config": {"a": 1}}));
    }
}
