//! Sluice client libraries: [`Producer`], [`Consumer`], [`Admin`] and [`Table`] (an
//! in-memory cache following compacted topics), all async (tokio)
//! and talking gRPC to brokers. They share a [`Cluster`]: bootstrap addresses, the
//! metadata (who leads which partition) and one HTTP/2 channel per broker.
//!
//! ```no_run
//! use sluice_client::{Admin, ClientConfig, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, Seek};
//! use sluice_proto::TopicPartition;
//!
//! # async fn demo() -> Result<(), sluice_client::Error> {
//! let config = ClientConfig::new("127.0.0.1:9392");
//! Admin::new(&config).create_topic("greetings", 3, 1, Default::default()).await?;
//!
//! let producer = Producer::new(&config, ProducerConfig::default()).await?;
//! let delivery = producer.send(ProducerRecord::new("greetings", Some("k"), "hello")).await?;
//! let meta = delivery.await?;
//! println!("stored at {}-{} offset {:?}", meta.topic, meta.partition, meta.offset);
//!
//! let mut consumer = Consumer::new(&config, ConsumerConfig::default());
//! let tp = TopicPartition::new("greetings", meta.partition);
//! consumer.assign(vec![tp.clone()]);
//! consumer.seek(&tp, Seek::Earliest);
//! for record in consumer.poll(std::time::Duration::from_secs(1)).await? {
//!     println!("{} {:?}", record.offset, record.value);
//! }
//! # Ok(()) }
//! ```

mod admin;
mod cluster;
mod consumer;
mod error;
mod group;
pub mod partitioner;
mod producer;
pub mod table;

pub use admin::{Admin, PartitionDescription, TopicDescription};
pub use cluster::{ClientConfig, Cluster};
pub use consumer::{decode_fetched, Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, Seek};
pub use error::Error;
pub use group::{
    GroupDescription, GroupListing, GroupOptions, MemberDescription, PartitionProgress,
    PlannedReset, RebalanceEvent, ResetTo, Subscription,
};
pub use producer::{
    Acks, DeliveryFuture, Producer, ProducerConfig, ProducerRecord, RecordMetadata,
    REQUEST_BYTES_MAX,
};
pub use table::{
    Change, ChangeSet, PosRequest, RawTable, SourcePos, Table, TableConfig, TableSet,
    TableSnapshot, TableStats,
};
