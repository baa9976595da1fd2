//! Secor's position in ZooKeeper, read and written exactly where Secor's `ZookeeperConnector`
//! keeps it: the node `/<kafka.zookeeper.path>/consumers/<secor.kafka.group>/offsets/<topic>/<p>`
//! holds the next offset to read as ASCII decimal, written after each upload. Only
//! `kbackup takeover`, `kbackup handback` and `run`'s start-up check talk to ZooKeeper; the
//! writer itself never does.

use std::time::Duration;

use zookeeper_client as zk;

use crate::config::SecorConfig;

/// Longest a single ZooKeeper request (or the connection) may take.
const TIMEOUT: Duration = Duration::from_secs(15);

/// A ZooKeeper request that failed; every variant names where.
#[derive(Debug, thiserror::Error)]
pub enum ZkError {
    #[error("cannot connect to ZooKeeper at {quorum}: {reason}")]
    Connect { quorum: String, reason: String },
    #[error("ZooKeeper {op} {path}: {reason}")]
    Request { op: &'static str, path: String, reason: String },
    #[error("ZooKeeper node {path} holds {data:?}, not an offset (Secor writes the next offset as a decimal number)")]
    NotAnOffset { path: String, data: String },
}

/// A partition's offset node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Absent,
    Offset(i64),
    /// It exists but holds no offset (Curator's default data is the creating host's address).
    Unreadable(String),
}

/// Where one Secor group's nodes live (pure: paths only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// `/<chroot>/consumers/<group>`, or `/consumers/<group>` without a chroot.
    group_path: String,
}

impl Layout {
    /// As Secor joins them: `kafka.zookeeper.path` stripped of slashes at both ends, left out
    /// when empty (`/` or `""` mean no chroot), then `consumers`, the group.
    pub fn new(zookeeper_path: &str, group: &str) -> Layout {
        let chroot = zookeeper_path.trim_matches('/');
        let group_path = if chroot.is_empty() { format!("/consumers/{group}") } else { format!("/{chroot}/consumers/{group}") };
        Layout { group_path }
    }

    /// The node holding the next offset Secor will read for `topic`/`partition`.
    pub fn offset(&self, topic: &str, partition: i32) -> String {
        format!("{}/offsets/{topic}/{partition}", self.group_path)
    }

    /// The node under which a topic's partitions' offsets live.
    pub fn topic(&self, topic: &str) -> String {
        format!("{}/offsets/{topic}", self.group_path)
    }

    /// Where consumers of the old ZooKeeper-based Kafka client register while they run.
    pub fn ids(&self) -> String {
        format!("{}/ids", self.group_path)
    }
}

/// A session with Secor's ZooKeeper, for one Secor group.
pub struct SecorZk {
    client: zk::Client,
    quorum: String,
    pub layout: Layout,
}

/// One request within [`TIMEOUT`]: `Err` when it did not answer in time, else its answer.
async fn timed<T>(op: &'static str, path: &str, f: impl std::future::Future<Output = Result<T, zk::Error>>) -> Result<Result<T, zk::Error>, ZkError> {
    tokio::time::timeout(TIMEOUT, f).await.map_err(|_| ZkError::Request {
        op,
        path: path.to_string(),
        reason: format!("no answer within {} s", TIMEOUT.as_secs()),
    })
}

fn failed(op: &'static str, path: &str, e: zk::Error) -> ZkError {
    ZkError::Request { op, path: path.to_string(), reason: e.to_string() }
}

impl SecorZk {
    /// Connects to `secor.zookeeper` for Secor's group `group`.
    pub async fn connect(secor: &SecorConfig, group: &str) -> Result<SecorZk, ZkError> {
        let quorum = secor.zookeeper.clone();
        let fail = |reason: String| ZkError::Connect { quorum: quorum.clone(), reason };
        // A refused connection fails at once (fail eagerly); a server that is slow to answer
        // (a loaded machine, a GC pause) gets 10 s, not the default 2/5 of the session timeout
        // (4 s), which failed takeovers on a busy CI machine.
        let connecting = zk::Client::connector()
            .with_session_timeout(Duration::from_secs(30))
            .with_connection_timeout(Duration::from_secs(10))
            .with_fail_eagerly()
            .connect(&quorum);
        let client = tokio::time::timeout(TIMEOUT, connecting)
            .await
            .map_err(|_| fail(format!("no session within {} s", TIMEOUT.as_secs())))?
            .map_err(|e| fail(e.to_string()))?;
        Ok(SecorZk { client, quorum: secor.zookeeper.clone(), layout: Layout::new(&secor.zookeeper_path, group) })
    }

    /// The ZooKeeper this session talks to, for messages.
    pub fn quorum(&self) -> &str {
        &self.quorum
    }

    /// Secor's committed offset of a partition; `None` when it has no node (Secor never
    /// uploaded that partition, or never ran with this group).
    pub async fn offset(&self, topic: &str, partition: i32) -> Result<Option<i64>, ZkError> {
        let path = self.layout.offset(topic, partition);
        match timed("get", &path, self.client.get_data(&path)).await? {
            Ok((data, _)) => parse_offset(&path, &data).map(Some),
            Err(zk::Error::NoNode) => Ok(None),
            Err(e) => Err(failed("get", &path, e)),
        }
    }

    /// A partition's node as it is: absent, an offset, or data that is no offset (returned,
    /// not an error, so a caller can say what it is and offer a way forward).
    pub async fn node(&self, topic: &str, partition: i32) -> Result<Node, ZkError> {
        let path = self.layout.offset(topic, partition);
        match timed("get", &path, self.client.get_data(&path)).await? {
            Ok((data, _)) => Ok(match parse_offset(&path, &data) {
                Ok(o) => Node::Offset(o),
                Err(_) => Node::Unreadable(String::from_utf8_lossy(&data).chars().take(64).collect()),
            }),
            Err(zk::Error::NoNode) => Ok(Node::Absent),
            Err(e) => Err(failed("get", &path, e)),
        }
    }

    /// The children of `path`; empty when it does not exist.
    pub async fn children(&self, path: &str) -> Result<Vec<String>, ZkError> {
        match timed("list", path, self.client.list_children(path)).await? {
            Ok(mut c) => {
                c.sort();
                Ok(c)
            }
            Err(zk::Error::NoNode) => Ok(Vec::new()),
            Err(e) => Err(failed("list", path, e)),
        }
    }

    /// What is under ZooKeeper's root that looks like Secor's offsets: the groups under
    /// `/consumers` and under `/<chroot>/consumers` for each top-level node (where a wrong
    /// `kafka.zookeeper.path` or group most likely points instead).
    pub async fn survey(&self) -> Result<Vec<String>, ZkError> {
        let mut out = Vec::new();
        for top in self.children("/").await? {
            if top == "zookeeper" {
                continue;
            }
            let consumers = if top == "consumers" { "/consumers".to_string() } else { format!("/{top}/consumers") };
            let groups = self.children(&consumers).await?;
            if !groups.is_empty() {
                out.push(format!("{consumers}: {}", groups.join(", ")));
            } else if top != "consumers" {
                out.push(format!("/{top}"));
            }
        }
        Ok(out)
    }

    /// Sets a partition's offset node as Secor's uploader does: missing parents are created
    /// (persistent, open ACL, as Curator's `creatingParentsIfNeeded`), then the data is set.
    pub async fn set_offset(&self, topic: &str, partition: i32, offset: i64) -> Result<(), ZkError> {
        let path = self.layout.offset(topic, partition);
        let data = offset.to_string();
        let options = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
        let mut prefix = String::new();
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        for (i, segment) in segments.iter().enumerate() {
            prefix.push('/');
            prefix.push_str(segment);
            let leaf = i + 1 == segments.len();
            let bytes: &[u8] = if leaf { data.as_bytes() } else { &[] };
            match timed("create", &prefix, self.client.create(&prefix, bytes, &options)).await? {
                Ok(_) | Err(zk::Error::NodeExists) => {}
                Err(e) => return Err(failed("create", &prefix, e)),
            }
        }
        timed("set", &path, self.client.set_data(&path, data.as_bytes(), None)).await?.map_err(|e| failed("set", &path, e))?;
        Ok(())
    }

    /// Members of the old ZooKeeper-based Kafka consumer registered under the group (a Secor
    /// that still runs with it); empty when the node does not exist.
    pub async fn registered_consumers(&self) -> Result<Vec<String>, ZkError> {
        let path = self.layout.ids();
        match timed("list", &path, self.client.list_children(&path)).await? {
            Ok(children) => Ok(children),
            Err(zk::Error::NoNode) => Ok(Vec::new()),
            Err(e) => Err(failed("list", &path, e)),
        }
    }
}

/// Secor writes `Long.toString(offset)`; anything else is not a position to act on.
pub fn parse_offset(path: &str, data: &[u8]) -> Result<i64, ZkError> {
    let bad = || ZkError::NotAnOffset { path: path.to_string(), data: String::from_utf8_lossy(data).chars().take(64).collect() };
    let text = std::str::from_utf8(data).map_err(|_| bad())?;
    let offset: i64 = text.trim().parse().map_err(|_| bad())?;
    if offset < 0 {
        return Err(bad());
    }
    Ok(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_joined_as_secor_joins_them() {
        for root in ["", "/", "//"] {
            assert_eq!(Layout::new(root, "g").offset("t.unique", 3), "/consumers/g/offsets/t.unique/3", "{root:?}");
        }
        for root in ["kafka", "/kafka", "/kafka/", "kafka/"] {
            assert_eq!(Layout::new(root, "g").offset("t", 0), "/kafka/consumers/g/offsets/t/0", "{root:?}");
        }
        assert_eq!(Layout::new("/a/b", "secor-backup").offset("t", 12), "/a/b/consumers/secor-backup/offsets/t/12");
        assert_eq!(Layout::new("/", "g").ids(), "/consumers/g/ids");
    }

    #[test]
    fn only_a_decimal_offset_is_an_offset() {
        assert_eq!(parse_offset("/p", b"1234").unwrap(), 1234);
        assert_eq!(parse_offset("/p", b"0").unwrap(), 0);
        assert_eq!(parse_offset("/p", b" 77\n").unwrap(), 77);
        // Curator's default node data is the creating host's address: never an offset.
        for bad in [&b"10.0.0.7"[..], b"", b"-1", b"12ab", b"\xff\xfe"] {
            let e = parse_offset("/consumers/g/offsets/t/0", bad).unwrap_err().to_string();
            assert!(e.contains("/consumers/g/offsets/t/0") && e.contains("not an offset"), "{e}");
        }
    }
}
