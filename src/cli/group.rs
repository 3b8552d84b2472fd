//! `sluice group`: the command-line face of the group admin calls in `sluice_client`
//! (`Admin::list_groups`, `describe_group`, `reset_offsets`, `delete_group`,
//! `delete_offsets`).
//!
//! Every command asks the cluster and prints; none holds state. Offsets are changed
//! only by the coordinator, which takes an admin commit (no member id) or a delete only
//! while the group has no members: the broker answers NON_EMPTY_GROUP otherwise, and
//! this file turns that into one line telling the user to stop the consumers first.
//! JSON shapes follow DESIGN.md §10; fields are only ever added.

use std::process::ExitCode;

use clap::{ArgGroup, Args, Subcommand};
use serde_json::json;
use sluice_client::{
    Admin, ClientConfig, Error, GroupDescription, MemberDescription, PlannedReset, ResetTo,
};
use sluice_proto::{ErrorCode, TopicPartition};

use super::output::{explain, opt, outln, table};
use super::{ClientArgs, Output};

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// Every consumer group of the cluster, with its state and member count.
    List,
    /// A group's members, their assignments, and per-partition committed offsets and lag.
    Describe {
        /// The group id.
        group: String,
    },
    /// Move a group's committed offsets of one topic (the group must have no members).
    ResetOffsets(ResetArgs),
    /// Delete a group without members, with its committed offsets.
    Delete {
        /// The group id.
        group: String,
    },
    /// Delete a group's committed offsets of one topic (as Kafka's
    /// `kafka-consumer-groups --delete-offsets`): refused for a topic a member
    /// subscribes to; the group may otherwise have members.
    DeleteOffsets {
        /// The group id.
        group: String,
        /// The topic (it may have been deleted already).
        #[arg(long)]
        topic: String,
        /// These partitions only (comma-separated); default: every partition of the
        /// topic the group has an offset for.
        #[arg(long, value_delimiter = ',', value_name = "P,...")]
        partitions: Vec<u32>,
    },
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("to").required(true).multiple(false)))]
pub struct ResetArgs {
    /// The group id.
    pub group: String,
    /// Every partition of this topic is reset.
    #[arg(long)]
    pub topic: String,
    /// To each partition's log start offset.
    #[arg(long, group = "to")]
    pub to_earliest: bool,
    /// To each partition's high watermark (skip everything written so far).
    #[arg(long, group = "to")]
    pub to_latest: bool,
    /// To this offset, clamped into [log start, high watermark] per partition.
    #[arg(long, group = "to", value_name = "N")]
    pub to_offset: Option<u64>,
    /// To the first record at or after this time (ms since the epoch); the end if none.
    #[arg(long, group = "to", value_name = "MS")]
    pub to_timestamp: Option<i64>,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

impl ResetArgs {
    /// The one `--to-*` clap let through (the arg group requires exactly one).
    fn reset_to(&self) -> ResetTo {
        match (self.to_offset, self.to_timestamp) {
            (Some(o), _) => ResetTo::Offset(o),
            (_, Some(ms)) => ResetTo::Timestamp(ms),
            _ if self.to_latest => ResetTo::Latest,
            _ => ResetTo::Earliest,
        }
    }
}

pub async fn run(cmd: GroupCommand, c: &ClientArgs) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(&ClientConfig::new(&c.bootstrap));
    match cmd {
        GroupCommand::List => list(&admin, c).await?,
        GroupCommand::Describe { group } => describe(&admin, &group, c).await?,
        GroupCommand::ResetOffsets(a) => reset(&admin, &a, c).await?,
        GroupCommand::DeleteOffsets {
            group,
            topic,
            partitions,
        } => return delete_offsets(&admin, &group, &topic, partitions, c).await,
        GroupCommand::Delete { group } => {
            admin
                .delete_group(&group)
                .await
                .map_err(|e| group_error(&e, &group, "delete it", c))?;
            match c.output {
                Output::Json => outln!("{}", json!({"deleted": group})),
                Output::Table => outln!("deleted group {group} and its committed offsets"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn delete_offsets(
    admin: &Admin,
    group: &str,
    topic: &str,
    partitions: Vec<u32>,
    c: &ClientArgs,
) -> anyhow::Result<ExitCode> {
    let tps: Vec<TopicPartition> = if partitions.is_empty() {
        admin
            .group_offsets(group)
            .await
            .map_err(|e| group_error(&e, group, "delete its offsets", c))?
            .into_keys()
            .filter(|tp| tp.topic == topic)
            .collect()
    } else {
        partitions
            .into_iter()
            .map(|p| TopicPartition::new(topic.to_string(), p))
            .collect()
    };
    let results = admin
        .delete_offsets(group, &tps)
        .await
        .map_err(|e| group_error(&e, group, "delete its offsets", c))?;
    let deleted: Vec<u32> = results
        .iter()
        .filter(|(_, e)| e.is_none())
        .map(|(tp, _)| tp.partition)
        .collect();
    let kept: Vec<u32> = results
        .iter()
        .filter(|(_, e)| e.is_some())
        .map(|(tp, _)| tp.partition)
        .collect();
    match c.output {
        Output::Json => outln!(
            "{}",
            json!({"group": group, "topic": topic, "deleted": deleted, "subscribed": kept})
        ),
        Output::Table => outln!(
            "deleted the committed offsets of {topic} partitions {deleted:?} of group {group}"
        ),
    }
    if !kept.is_empty() {
        anyhow::bail!(
            "a member of group {group} subscribes to {topic}: the offsets of partitions {kept:?} stay; \
             unsubscribe (or stop) its consumers first"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The one line for a group call that failed: the group refusals a user can act on in
/// plain words, anything else through [`explain`].
fn group_error(e: &Error, group: &str, action: &str, c: &ClientArgs) -> anyhow::Error {
    match e.code() {
        Some(ErrorCode::GroupIdNotFound) => anyhow::anyhow!(
            "group {group} does not exist; `sluice group list` shows the groups there are"
        ),
        Some(ErrorCode::NonEmptyGroup) => anyhow::anyhow!(
            "group {group} has active members; stop its consumers (or wait for their session to expire) before you {action}"
        ),
        _ => explain(e, &c.bootstrap),
    }
}

async fn list(admin: &Admin, c: &ClientArgs) -> anyhow::Result<()> {
    let groups = admin
        .list_groups()
        .await
        .map_err(|e| explain(&e, &c.bootstrap))?;
    match c.output {
        Output::Json => {
            let v: Vec<_> = groups
                .iter()
                .map(|g| json!({"group": g.group_id, "state": g.state, "members": g.members, "coordinator": g.coordinator}))
                .collect();
            outln!("{}", json!(v));
        }
        Output::Table => {
            let rows = groups
                .iter()
                .map(|g| {
                    vec![
                        g.group_id.clone(),
                        g.state.clone(),
                        g.members.to_string(),
                        g.coordinator.to_string(),
                    ]
                })
                .collect();
            outln!(
                "{}",
                table(&["group", "state", "members", "coordinator"], rows)
            );
        }
    }
    Ok(())
}

fn tps_json(tps: &[TopicPartition]) -> serde_json::Value {
    json!(tps
        .iter()
        .map(|tp| json!({"topic": tp.topic, "partition": tp.partition}))
        .collect::<Vec<_>>())
}

/// `t-0,t-1,u-3`, or `-` for none.
fn tps_text(tps: &[TopicPartition]) -> String {
    if tps.is_empty() {
        return "-".into();
    }
    tps.iter()
        .map(|tp| format!("{}-{}", tp.topic, tp.partition))
        .collect::<Vec<_>>()
        .join(",")
}

fn member_json(m: &MemberDescription) -> serde_json::Value {
    json!({
        "member_id": m.member_id,
        "member_epoch": m.member_epoch,
        "instance_id": m.instance_id,
        "subscribed_topics": m.subscribed_topics,
        "subscribed_regex": m.subscribed_regex,
        "assignment": tps_json(&m.assignment),
        "target_assignment": tps_json(&m.target_assignment),
    })
}

fn describe_json(d: &GroupDescription) -> serde_json::Value {
    let partitions: Vec<_> = d
        .partitions
        .iter()
        .map(|p| {
            json!({
                "topic": p.tp.topic,
                "partition": p.tp.partition,
                "committed_offset": p.committed_offset,
                "end_offset": p.end_offset,
                "lag": p.lag,
                "owner": p.owner,
            })
        })
        .collect();
    json!({
        "group": d.group_id,
        "state": d.state,
        "group_epoch": d.group_epoch,
        "assignment_epoch": d.assignment_epoch,
        "assignor": d.assignor,
        "group_type": d.group_type,
        "coordinator": d.coordinator,
        "members": d.members.iter().map(member_json).collect::<Vec<_>>(),
        "partitions": partitions,
    })
}

async fn describe(admin: &Admin, group: &str, c: &ClientArgs) -> anyhow::Result<()> {
    let d = admin
        .describe_group(group)
        .await
        .map_err(|e| group_error(&e, group, "describe it", c))?;
    if c.output == Output::Json {
        outln!("{}", describe_json(&d));
        return Ok(());
    }
    if d.group_type == "classic" {
        outln!(
            "group {} (classic protocol, {}, generation {}, assignor {}, coordinator {})",
            d.group_id,
            d.state,
            d.group_epoch,
            d.assignor,
            d.coordinator
        );
    } else {
        outln!(
            "group {} ({}, group epoch {}, assignment epoch {}, assignor {}, coordinator {})",
            d.group_id,
            d.state,
            d.group_epoch,
            d.assignment_epoch,
            d.assignor,
            d.coordinator
        );
    }
    if !d.members.is_empty() {
        let rows = d
            .members
            .iter()
            .map(|m| {
                let subscription = m
                    .subscribed_regex
                    .clone()
                    .map_or_else(|| m.subscribed_topics.join(","), |r| format!("regex {r}"));
                vec![
                    m.member_id.clone(),
                    m.instance_id.clone().unwrap_or_else(|| "-".into()),
                    m.member_epoch.to_string(),
                    subscription,
                    tps_text(&m.assignment),
                    tps_text(&m.target_assignment),
                ]
            })
            .collect();
        outln!(
            "{}",
            table(
                &[
                    "member",
                    "instance",
                    "epoch",
                    "subscription",
                    "owns",
                    "target"
                ],
                rows
            )
        );
    }
    let rows = d
        .partitions
        .iter()
        .map(|p| {
            vec![
                p.tp.topic.clone(),
                p.tp.partition.to_string(),
                opt(p.committed_offset),
                opt(p.end_offset),
                opt(p.lag),
                p.owner.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    outln!(
        "{}",
        table(
            &["topic", "partition", "committed", "end", "lag", "owner"],
            rows
        )
    );
    Ok(())
}

async fn reset(admin: &Admin, a: &ResetArgs, c: &ClientArgs) -> anyhow::Result<()> {
    let plan: Vec<PlannedReset> = admin
        .reset_offsets(&a.group, &a.topic, a.reset_to(), a.dry_run)
        .await
        .map_err(|e| match e.code() {
            Some(ErrorCode::UnknownTopicOrPartition) => anyhow::anyhow!(
                "topic {} does not exist; check the name with `sluice topic list`",
                a.topic
            ),
            _ => group_error(&e, &a.group, "reset its offsets", c),
        })?;
    match c.output {
        Output::Json => {
            let v: Vec<_> = plan
                .iter()
                .map(|r| json!({"topic": r.tp.topic, "partition": r.tp.partition, "current_offset": r.before, "new_offset": r.after}))
                .collect();
            outln!("{}", json!(v));
        }
        Output::Table => {
            let rows = plan
                .iter()
                .map(|r| {
                    vec![
                        r.tp.topic.clone(),
                        r.tp.partition.to_string(),
                        opt(r.before),
                        r.after.to_string(),
                    ]
                })
                .collect();
            outln!("{}", table(&["topic", "partition", "current", "new"], rows));
            if a.dry_run {
                outln!("dry run: nothing changed; run again without --dry-run to apply");
            } else {
                outln!(
                    "reset the offsets of group {} on topic {}",
                    a.group,
                    a.topic
                );
            }
        }
    }
    Ok(())
}
