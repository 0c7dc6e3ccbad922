//! Shared harness for the integration tests: a Kafka broker (librdkafka's
//! mock cluster, or a real tansu process on 127.0.0.1), helpers to produce
//! and read topics, and the service started in-process on a sled directory.
//!
//! - `broker`: the mock cluster or a tansu process, and topic creation;
//! - `service`: the service in this process, or the real binary;
//! - `http`: the admin server over HTTP, metrics from its text, and
//!   stand-in HTTP servers (an identity provider, a Schema Registry);
//! - `produce`: test input; `read`: what was published and stored;
//! - `fixtures`: event time, the test model and test configs;
//! - `cli`: the real binary, run from the repository.
// Each test crate uses a different part of the harness.
#![allow(dead_code, unused_imports)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use churn_alert::config::Config;
use churn_alert::pipeline::event::{rfc3339, Millis, DAY_MS};
use churn_alert::pipeline::model::{Model, ModelFile};
use churn_alert::service::Service;
use churn_alert::store::Store;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::Message;
use tokio_util::sync::CancellationToken;

mod broker;
mod cli;
mod fixtures;
mod http;
mod produce;
mod read;
mod service;

pub use broker::*;
pub use cli::*;
pub use fixtures::*;
pub use http::*;
pub use produce::*;
pub use read::*;
pub use service::*;
