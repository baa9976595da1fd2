//! kbackup: back up Kafka topics to Azure Blob Storage as per-partition, per-date NDJSON files.
//!
//! Data flows one way, one module per stage:
//! [`consumer`] → [`routing`] (with [`event_date`]) → [`buffer`] → [`seal`] → [`upload`]
//! → [`commit`], driven by [`writer`]. [`naming`] owns every rule about blob names,
//! [`config`] every configuration key, [`storage`] how the blob store is reached.

pub(crate) mod audit;
pub(crate) mod bench;
pub(crate) mod buffer;
pub mod cmd;
pub(crate) mod columnar;
pub(crate) mod commit;
pub mod completion;
pub mod config;
pub(crate) mod consumer;
pub(crate) mod direct_file;
pub(crate) mod event_date;
pub(crate) mod failpoint;
pub(crate) mod group;
pub(crate) mod health;
pub(crate) mod intent;
pub mod interrupt;
pub(crate) mod listing;
pub(crate) mod metrics;
pub mod naming;
pub mod partitioner;
pub(crate) mod producer;
pub(crate) mod progress;
pub(crate) mod record;
pub(crate) mod replay;
pub(crate) mod routing;
pub(crate) mod sabotage;
pub(crate) mod sample;
pub mod seal;
pub mod secor;
pub(crate) mod seqfile;
pub(crate) mod status_server;
pub mod storage;
pub(crate) mod storage_url;
pub(crate) mod takeover;
pub(crate) mod topic_settings;
pub mod upload;
pub(crate) mod wfs;
pub(crate) mod writer;
pub(crate) mod zookeeper;
