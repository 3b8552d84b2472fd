//! Client commands: `topic`, `cluster`, `partition` (`produce` and `consume` have
//! their own files).

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::bail;
use clap::Subcommand;
use serde_json::json;
use sluice_client::{Admin, ClientConfig};
use sluice_proto::topic_config::{LogConfig, CONFIG_NAMES};

use super::output::{explain, list, opt, outln, table};
use super::{ClientArgs, Output};

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        /// The topic's name.
        name: String,
        /// Number of partitions [default: 1].
        #[arg(short = 'p', long)]
        partitions: Option<u32>,
        /// Replicas of each partition [default: 3, or the number of live brokers if fewer].
        #[arg(short = 'r', long)]
        replication_factor: Option<u32>,
        /// A topic config, `name=value` (repeatable).
        #[arg(short = 'c', long = "config", value_name = "K=V")]
        configs: Vec<String>,
        /// Place the replicas yourself, as kafka-topics does: each partition's broker
        /// ids separated by `:` (the preferred leader first), partitions by `,`, e.g.
        /// `1:2,2:3,3:1`. The partition count and replication factor follow from it.
        #[arg(long, value_name = "B:B,B:B", conflicts_with_all = ["partitions", "replication_factor"])]
        replica_assignment: Option<String>,
    },
    /// List topic names.
    List,
    /// Partitions, leaders, offsets and configs of a topic.
    Describe {
        /// The topic's name.
        name: String,
        /// Only partitions whose ISR is smaller than their replica set.
        #[arg(long)]
        under_replicated: bool,
    },
    /// Delete a topic and its data.
    Delete {
        /// The topic's name.
        name: String,
    },
    /// Change topic configs.
    Alter {
        /// The topic's name.
        name: String,
        /// Set a topic config, `name=value` (repeatable).
        #[arg(short = 'c', long = "config", value_name = "K=V")]
        configs: Vec<String>,
        /// A config to reset to the broker default (repeatable).
        #[arg(long = "delete-config", value_name = "K")]
        delete: Vec<String>,
        /// Grow the topic to this many partitions.
        #[arg(short = 'p', long)]
        partitions: Option<u32>,
        /// With --partitions: the new partitions' replicas (`1:2,2:3`, as for create).
        #[arg(long, value_name = "B:B,B:B", requires = "partitions")]
        replica_assignment: Option<String>,
    },
}

/// Kafka's `--replica-assignment` syntax: `1:2,2:3` is two partitions with replicas
/// [1, 2] and [2, 3].
fn parse_assignment(s: &str) -> anyhow::Result<Vec<Vec<u32>>> {
    s.split(',')
        .map(|p| {
            p.split(':')
                .map(|b| {
                    b.trim().parse::<u32>().map_err(|_| {
                        anyhow::anyhow!(
                            "--replica-assignment {s:?}: {b:?} is not a broker id (write e.g. 1:2,2:3)"
                        )
                    })
                })
                .collect()
        })
        .collect()
}

#[derive(Subcommand, Debug)]
pub enum PartitionCommand {
    /// Move leadership back to each partition's preferred (first) replica.
    ElectLeaders {
        /// Only this topic's partitions (default: every topic).
        #[arg(long)]
        topic: Option<String>,
    },
    /// Move a partition to other brokers (new replicas catch up first).
    Reassign {
        /// The partition's topic.
        #[arg(long)]
        topic: String,
        /// The partition to move.
        #[arg(long)]
        partition: u32,
        /// Broker ids, comma-separated; the first is the preferred leader.
        #[arg(long, value_delimiter = ',', required_unless_present = "cancel")]
        replicas: Vec<u32>,
        /// Cancel the reassignment in progress: back to the replicas it started from.
        #[arg(long, conflicts_with = "replicas")]
        cancel: bool,
    },
}

pub async fn partition(cmd: PartitionCommand, c: &ClientArgs) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(&ClientConfig::new(&c.bootstrap));
    let topic = match cmd {
        PartitionCommand::ElectLeaders { topic } => topic,
        PartitionCommand::Reassign {
            topic,
            partition,
            replicas,
            cancel,
        } => {
            // No replicas asks the controller to cancel.
            admin
                .reassign_partition(&topic, partition, replicas.clone())
                .await
                .map_err(|e| explain(&e, &c.bootstrap))?;
            if cancel {
                match c.output {
                    Output::Json => outln!("{}", json!({"topic": topic, "partition": partition, "cancelled": true})),
                    Output::Table => outln!("cancelled the reassignment of {topic}-{partition}: back to the replicas it started from"),
                }
                return Ok(ExitCode::SUCCESS);
            }
            match c.output {
                Output::Json => outln!("{}", json!({"topic": topic, "partition": partition, "target": replicas})),
                Output::Table => outln!("reassigning {topic}-{partition} to {replicas:?}; it completes when the new replicas are in sync"),
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    let changed = admin
        .elect_leaders(topic.as_deref())
        .await
        .map_err(|e| explain(&e, &c.bootstrap))?;
    match c.output {
        Output::Json => outln!("{}", json!({"changed": changed})),
        Output::Table => outln!("{changed} partition(s) moved to their preferred leader"),
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// The controller and every broker.
    Describe,
}

/// Partitions of a topic created without `--partitions` (Kafka's `num.partitions`).
const DEFAULT_PARTITIONS: u32 = 1;

/// Replication factor of a topic created without `--replication-factor`.
const DEFAULT_REPLICATION_FACTOR_MAX: u32 = 3;

/// Three replicas, or as many as there are live brokers when fewer, so that the default
/// works on a one-broker `sluice dev` and survives a broker loss on a real cluster.
async fn default_replication_factor(admin: &Admin) -> Result<u32, sluice_client::Error> {
    let d = admin.describe_cluster().await?;
    let alive = d.brokers.iter().filter(|b| b.alive).count() as u32;
    Ok(alive.clamp(1, DEFAULT_REPLICATION_FACTOR_MAX))
}

/// Config names `--delete-config` may reset (the server checks `--config` names).
fn check_config_names(names: &[String]) -> anyhow::Result<()> {
    for n in names {
        if !CONFIG_NAMES.contains(&n.as_str()) {
            bail!(
                "--delete-config {n}: no such topic config; known configs: {}",
                CONFIG_NAMES.join(", ")
            );
        }
    }
    Ok(())
}

fn parse_configs(configs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    configs
        .iter()
        .map(|c| match c.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("--config {c:?} is not of the form name=value"),
        })
        .collect()
}

pub async fn topic(cmd: TopicCommand, c: &ClientArgs) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(&ClientConfig::new(&c.bootstrap));
    let ex = |e: sluice_client::Error| explain(&e, &c.bootstrap);
    match cmd {
        TopicCommand::Create {
            name,
            configs,
            replica_assignment: Some(assignment),
            ..
        } => {
            let configs = parse_configs(&configs)?;
            let lists = parse_assignment(&assignment)?;
            let (partitions, replication_factor) = (lists.len(), lists[0].len());
            admin
                .create_topic_assigned(&name, lists, configs)
                .await
                .map_err(ex)?;
            match c.output {
                Output::Json => outln!("{}", json!({"name": name, "partitions": partitions, "replication_factor": replication_factor})),
                Output::Table => outln!("created topic {name} ({partitions} partitions, replication factor {replication_factor})"),
            }
        }
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
            replica_assignment: None,
        } => {
            let configs = parse_configs(&configs)?;
            let partitions = partitions.unwrap_or(DEFAULT_PARTITIONS);
            let replication_factor = match replication_factor {
                Some(r) => r,
                None => default_replication_factor(&admin).await.map_err(ex)?,
            };
            admin
                .create_topic(&name, partitions, replication_factor, configs)
                .await
                .map_err(ex)?;
            match c.output {
                Output::Json => outln!("{}", json!({"name": name, "partitions": partitions, "replication_factor": replication_factor})),
                Output::Table => outln!("created topic {name} ({partitions} partitions, replication factor {replication_factor})"),
            }
        }
        TopicCommand::List => {
            let names = admin.list_topics().await.map_err(ex)?;
            match c.output {
                Output::Json => outln!("{}", json!(names)),
                Output::Table => names.iter().for_each(|n| outln!("{n}")),
            }
        }
        TopicCommand::Describe {
            name,
            under_replicated,
        } => {
            let mut d = admin.describe_topic(&name).await.map_err(ex)?;
            if under_replicated {
                d.partitions.retain(|p| p.isr.len() < p.replicas.len());
            }
            let effective = LogConfig::default()
                .with_overrides(d.configs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .map(|c| c.to_map())
                .unwrap_or_else(|_| d.configs.clone());
            // Where each effective value comes from, as rpk's SOURCE column.
            let sources: BTreeMap<&String, &str> = effective
                .keys()
                .map(|k| {
                    (
                        k,
                        if d.configs.contains_key(k) {
                            "topic"
                        } else {
                            "default"
                        },
                    )
                })
                .collect();
            match c.output {
                Output::Json => {
                    let parts: Vec<_> = d
                        .partitions
                        .iter()
                        .map(|p| {
                            json!({"partition": p.partition, "leader": p.leader, "leader_epoch": p.leader_epoch,
                                   "replicas": p.replicas, "isr": p.isr, "high_watermark": p.high_watermark,
                                   "log_end_offset": p.log_end_offset, "log_start_offset": p.log_start_offset,
                                   "size_bytes": p.size_bytes, "dirty_ratio": p.dirty_ratio})
                        })
                        .collect();
                    outln!(
                        "{}",
                        json!({"name": d.name, "topic_id": d.topic_id, "partitions": parts,
                               "configs": effective, "config_sources": sources})
                    );
                }
                Output::Table => {
                    outln!("topic {} (id {})", d.name, d.topic_id);
                    // Compacted topics also show how much is left to compact.
                    let compacted = effective
                        .get("cleanup.policy")
                        .is_some_and(|p| p.contains("compact"));
                    let rows = d
                        .partitions
                        .iter()
                        .map(|p| {
                            let mut row = vec![
                                p.partition.to_string(),
                                opt(p.leader),
                                p.leader_epoch.to_string(),
                                list(&p.replicas),
                                list(&p.isr),
                                opt(p.log_start_offset),
                                opt(p.high_watermark),
                                opt(p.log_end_offset),
                                opt(p.size_bytes),
                            ];
                            if compacted {
                                row.push(p.dirty_ratio.map_or("-".into(), |r| format!("{r:.2}")));
                            }
                            row
                        })
                        .collect();
                    let mut header = vec![
                        "partition",
                        "leader",
                        "epoch",
                        "replicas",
                        "isr",
                        "log start",
                        "high watermark",
                        "log end",
                        "bytes",
                    ];
                    if compacted {
                        header.push("dirty ratio");
                    }
                    outln!("{}", table(&header, rows));
                    let rows = effective
                        .iter()
                        .map(|(k, v)| vec![k.clone(), v.clone(), sources[k].to_string()])
                        .collect();
                    outln!("{}", table(&["config", "value", "source"], rows));
                }
            }
        }
        TopicCommand::Delete { name } => {
            admin.delete_topic(&name).await.map_err(ex)?;
            match c.output {
                Output::Json => outln!("{}", json!({"deleted": name})),
                Output::Table => outln!("deleted topic {name}"),
            }
        }
        TopicCommand::Alter {
            name,
            configs,
            delete,
            partitions,
            replica_assignment,
        } => {
            if configs.is_empty() && delete.is_empty() && partitions.is_none() {
                bail!("nothing to change: give --config K=V, --delete-config K or --partitions N");
            }
            check_config_names(&delete)?;
            if !configs.is_empty() || !delete.is_empty() {
                admin
                    .alter_configs(&name, parse_configs(&configs)?, delete)
                    .await
                    .map_err(ex)?;
            }
            if let Some(total) = partitions {
                let lists = match &replica_assignment {
                    Some(a) => parse_assignment(a)?,
                    None => Vec::new(),
                };
                admin
                    .create_partitions_assigned(&name, total, lists)
                    .await
                    .map_err(ex)?;
            }
            match c.output {
                Output::Json => outln!("{}", json!({"altered": name})),
                Output::Table => outln!("altered topic {name}"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn cluster(cmd: ClusterCommand, c: &ClientArgs) -> anyhow::Result<ExitCode> {
    let ClusterCommand::Describe = cmd;
    let admin = Admin::new(&ClientConfig::new(&c.bootstrap));
    let d = admin
        .describe_cluster()
        .await
        .map_err(|e| explain(&e, &c.bootstrap))?;
    match c.output {
        Output::Json => {
            let brokers: Vec<_> = d.brokers.iter().map(|b| json!({"id": b.id, "addr": b.addr, "rack": (!b.rack.is_empty()).then_some(&b.rack), "alive": b.alive})).collect();
            outln!(
                "{}",
                json!({"controller": {"id": d.controller_id, "epoch": d.controller_epoch}, "brokers": brokers})
            );
        }
        Output::Table => {
            outln!(
                "controller {} (epoch {})",
                d.controller_id,
                d.controller_epoch
            );
            let rows = d
                .brokers
                .iter()
                .map(|b| {
                    vec![
                        b.id.to_string(),
                        b.addr.clone(),
                        b.rack.clone(),
                        if b.alive { "alive" } else { "fenced" }.to_string(),
                    ]
                })
                .collect();
            outln!("{}", table(&["broker", "address", "rack", "state"], rows));
        }
    }
    Ok(ExitCode::SUCCESS)
}
