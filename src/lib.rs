//! kbackup: back up Kafka topics to Azure Blob Storage as per-partition, per-date NDJSON files.
//!
//! Data flows one way, one module per stage:
//! [`consumer`] → [`routing`] (with [`event_date`]) → [`buffer`] → [`seal`] → [`upload`]
//! → [`commit`], driven by [`writer`]. [`naming`] owns every rule about blob names,
//! [`config`] every configuration key, [`storage`] how the blob store is reached.

pub mod audit;
pub mod bench;
pub mod buffer;
pub mod cmd;
pub mod commit;
pub mod completion;
pub mod config;
pub mod consumer;
pub mod direct_file;
pub mod event_date;
pub mod failpoint;
pub mod group;
pub mod health;
pub mod intent;
pub mod interrupt;
pub mod listing;
pub mod metrics;
pub mod naming;
pub mod partitioner;
pub mod plan;
pub mod producer;
pub mod progress;
pub mod record;
pub mod replay;
pub mod routing;
pub(crate) mod sabotage;
pub mod sample;
pub mod seal;
pub mod secor;
pub mod seqfile;
pub mod status_server;
pub mod storage;
pub mod storage_url;
pub mod takeover;
pub mod topic_settings;
pub mod upload;
pub mod writer;
pub mod zookeeper;
