//! The BROKER and GROUP resources of DescribeConfigs, AlterConfigs and
//! IncrementalAlterConfigs (topics are in `admin`). What can be set, and how it is
//! checked, is `sluice_proto::dynamic_config`; changes go to the controller, which keeps
//! them in its replicated state and pushes them to every broker with the metadata
//! (`Shared::resource_configs`), so they survive a controller change. A broker
//! describes its static settings (from its command line) beside them.

use std::collections::{BTreeMap, HashMap};

use kafka_protocol::messages::describe_configs_response::DescribeConfigsResourceResult;
use kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig;
use kafka_protocol::protocol::StrBytes;
use sluice_proto::dynamic_config::{self as dc, RESOURCE_BROKER, RESOURCE_GROUP};
use sluice_proto::v1;
use sluice_proto::v1::admin_server::Admin as _;
use sluice_proto::ErrorCode;
use tonic::Request;

use super::admin::{result_code, unavailable};
use crate::server::admin::AdminProxy;
use crate::server::Shared;

/// Kafka's config sources (`DescribeConfigsResponse.ConfigSource`).
const SOURCE_DYNAMIC_BROKER: i8 = 2;
const SOURCE_DYNAMIC_DEFAULT_BROKER: i8 = 3;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;
const SOURCE_GROUP: i8 = 8;

/// A broker's log defaults under Kafka's broker names (the topic config each sets the
/// default of).
const LOG_SYNONYMS: &[(&str, &str)] = &[
    ("log.segment.bytes", "segment.bytes"),
    ("log.roll.ms", "segment.ms"),
    ("log.index.size.max.bytes", "segment.index.bytes"),
    ("log.index.interval.bytes", "index.interval.bytes"),
    ("log.retention.ms", "retention.ms"),
    ("log.retention.bytes", "retention.bytes"),
    ("log.cleanup.policy", "cleanup.policy"),
    ("message.max.bytes", "max.message.bytes"),
    ("min.insync.replicas", "min.insync.replicas"),
    ("log.flush.interval.messages", "flush.messages"),
    ("log.flush.interval.ms", "flush.ms"),
    ("log.message.timestamp.type", "message.timestamp.type"),
    ("log.cleaner.delete.retention.ms", "delete.retention.ms"),
    (
        "unclean.leader.election.enable",
        "unclean.leader.election.enable",
    ),
    (
        "log.cleaner.min.cleanable.ratio",
        "min.cleanable.dirty.ratio",
    ),
    ("log.cleaner.min.compaction.lag.ms", "min.compaction.lag.ms"),
    ("log.cleaner.max.compaction.lag.ms", "max.compaction.lag.ms"),
    ("compression.type", "compression.type"),
];

fn entry(
    name: &str,
    value: Option<String>,
    source: i8,
    read_only: bool,
) -> DescribeConfigsResourceResult {
    DescribeConfigsResourceResult::default()
        .with_name(StrBytes::from_string(name.to_string()))
        .with_value(value.map(StrBytes::from_string))
        .with_config_source(source)
        .with_read_only(read_only)
}

/// This broker's settings from its command line, with Kafka's default for each (the
/// source is DEFAULT_CONFIG where they agree, STATIC_BROKER_CONFIG otherwise).
fn static_configs(shared: &Shared) -> Vec<(String, Option<String>, Option<String>)> {
    let c = &shared.config;
    let id = c.id.to_string();
    let mut out: Vec<(String, Option<String>, Option<String>)> = vec![
        ("broker.id".into(), Some(id.clone()), None),
        ("node.id".into(), Some(id), None),
        (
            "log.dirs".into(),
            Some(c.data_dir.display().to_string()),
            None,
        ),
        (
            "advertised.listeners".into(),
            c.kafka_advertised
                .as_ref()
                .map(|a| format!("PLAINTEXT://{a}")),
            None,
        ),
        ("broker.rack".into(), c.rack.clone(), Some(String::new())),
        (
            "auto.create.topics.enable".into(),
            Some(c.kafka_auto_create_partitions.is_some().to_string()),
            Some("true".into()),
        ),
        (
            "num.partitions".into(),
            Some(c.kafka_auto_create_partitions.unwrap_or(1).to_string()),
            Some("1".into()),
        ),
        (
            "offsets.topic.num.partitions".into(),
            Some(c.offsets_topic_partitions.to_string()),
            Some("50".into()),
        ),
        (
            "replica.lag.time.max.ms".into(),
            Some(c.replica_lag_time_max.as_millis().to_string()),
            Some("30000".into()),
        ),
        (
            "producer.id.expiration.ms".into(),
            Some(c.producer_id_expiration.as_millis().to_string()),
            Some("86400000".into()),
        ),
        (
            "authorizer.class.name".into(),
            Some(if c.authorizer.enabled {
                "org.apache.kafka.metadata.authorizer.StandardAuthorizer".into()
            } else {
                String::new()
            }),
            Some(String::new()),
        ),
    ];
    let ours = c.log_defaults.to_map();
    let kafka = sluice_proto::topic_config::LogConfig::default().to_map();
    for (broker_name, topic_name) in LOG_SYNONYMS {
        out.push((
            broker_name.to_string(),
            ours.get(*topic_name).cloned(),
            kafka.get(*topic_name).cloned(),
        ));
    }
    out
}

/// DescribeConfigs of a BROKER resource on the broker it names: its static settings and
/// every dynamic config (set for it, set cluster-wide, or Kafka's default). The empty
/// name (the cluster-wide default) answers the cluster-wide dynamic configs only. Another
/// broker's id is INVALID_REQUEST, as Kafka answers (a client sends it to that broker).
pub(super) fn describe_broker(
    shared: &Shared,
    name: &str,
    keys: Option<&[String]>,
) -> Result<Vec<DescribeConfigsResourceResult>, (i16, String)> {
    let me = shared.config.id;
    let wanted = |k: &str| keys.is_none_or(|w| w.iter().any(|x| x == k));
    let dynamic = shared.resource_configs.read().clone();
    let cluster = dynamic
        .get(&(RESOURCE_BROKER, String::new()))
        .cloned()
        .unwrap_or_default();
    if name.is_empty() {
        return Ok(cluster
            .iter()
            .filter(|(k, _)| wanted(k))
            .map(|(k, v)| entry(k, Some(v.clone()), SOURCE_DYNAMIC_DEFAULT_BROKER, false))
            .collect());
    }
    if name.parse::<u32>().ok() != Some(me) {
        return Err((
            ErrorCode::InvalidRequest.code() as i16,
            format!("Unexpected broker id, expected {me} or empty string, but received {name}"),
        ));
    }
    let mine = dynamic
        .get(&(RESOURCE_BROKER, name.to_string()))
        .cloned()
        .unwrap_or_default();
    let mut out: Vec<DescribeConfigsResourceResult> = static_configs(shared)
        .into_iter()
        .filter(|(k, _, _)| wanted(k))
        .map(|(k, value, default)| {
            let source = if default.is_some()
                && value.clone().unwrap_or_default() == default.unwrap_or_default()
            {
                SOURCE_DEFAULT
            } else {
                SOURCE_STATIC_BROKER
            };
            entry(&k, value, source, true)
        })
        .collect();
    for (k, default) in dc::broker_settable().filter(|(k, _)| wanted(k)) {
        let (value, source) = match (mine.get(k), cluster.get(k)) {
            (Some(v), _) => (v.clone(), SOURCE_DYNAMIC_BROKER),
            (None, Some(v)) => (v.clone(), SOURCE_DYNAMIC_DEFAULT_BROKER),
            (None, None) => (default.to_string(), SOURCE_DEFAULT),
        };
        out.push(entry(k, Some(value), source, false));
    }
    Ok(out)
}

/// DescribeConfigs of a GROUP resource: each group config, the group's own setting
/// (GROUP_CONFIG) or Kafka's default. A group that does not exist is described too, as
/// Kafka does.
pub(super) fn describe_group(
    shared: &Shared,
    name: &str,
    keys: Option<&[String]>,
) -> Result<Vec<DescribeConfigsResourceResult>, (i16, String)> {
    dc::check_name(RESOURCE_GROUP, name).map_err(|r| (r.code.code() as i16, r.message))?;
    let own = shared
        .resource_configs
        .read()
        .get(&(RESOURCE_GROUP, name.to_string()))
        .cloned()
        .unwrap_or_default();
    Ok(dc::GROUP_CONFIGS
        .iter()
        .filter(|(k, _)| keys.is_none_or(|w| w.iter().any(|x| x == k)))
        .map(|(k, default)| match own.get(*k) {
            Some(v) => entry(k, Some(v.clone()), SOURCE_GROUP, false),
            None => entry(k, Some(default.to_string()), SOURCE_DEFAULT, false),
        })
        .collect())
}

/// Sets and deletes configs of a broker or group through the controller.
pub(super) async fn alter(
    proxy: &AdminProxy,
    resource_type: i32,
    name: &str,
    set: HashMap<String, String>,
    delete: Vec<String>,
) -> (i16, String) {
    match proxy
        .alter_configs(Request::new(v1::AlterConfigsRequest {
            topic: name.to_string(),
            set,
            delete,
            resource_type,
        }))
        .await
    {
        Ok(r) => result_code(r.get_ref()),
        Err(status) => unavailable(&status),
    }
}

/// The current dynamic configs of a broker or group resource.
pub(super) fn current(shared: &Shared, resource_type: i32, name: &str) -> BTreeMap<String, String> {
    shared
        .resource_configs
        .read()
        .get(&(resource_type, name.to_string()))
        .cloned()
        .unwrap_or_default()
}

/// The configs to set and those to delete.
type Changes = (HashMap<String, String>, Vec<String>);

/// IncrementalAlterConfigs' operations on a broker or group resource: SET and DELETE.
/// No settable broker or group config is a list, so APPEND and SUBTRACT are refused as
/// Kafka refuses them on a config that is not a list.
pub(super) fn incremental_changes(configs: &[AlterableConfig]) -> Result<Changes, (i16, String)> {
    let mut set = HashMap::new();
    let mut delete = Vec::new();
    for c in configs {
        let name = c.name.to_string();
        match (c.config_operation, &c.value) {
            (0, Some(v)) => {
                set.insert(name, v.to_string());
            }
            (1, _) => delete.push(name),
            (2 | 3, _) => {
                return Err((
                    ErrorCode::InvalidConfig.code() as i16,
                    format!("Config value append is not allowed for config key: {name}"),
                ))
            }
            (op, _) => {
                return Err((
                    ErrorCode::InvalidRequest.code() as i16,
                    format!("{name}: operation {op} is not served (SET with a value, DELETE)"),
                ))
            }
        }
    }
    Ok((set, delete))
}

/// DescribeUserScramCredentials: Sluice has no SASL, so no user has SCRAM credentials
/// (AlterUserScramCredentials is not served): every user named is RESOURCE_NOT_FOUND
/// (91), one named twice DUPLICATE_RESOURCE (92), and every user (null or empty) is
/// none — Kafka's answers for users without credentials.
pub(super) fn describe_user_scram_credentials(
    r: kafka_protocol::messages::DescribeUserScramCredentialsRequest,
) -> kafka_protocol::messages::DescribeUserScramCredentialsResponse {
    use kafka_protocol::messages::describe_user_scram_credentials_response::DescribeUserScramCredentialsResult;
    const RESOURCE_NOT_FOUND: i16 = 91;
    const DUPLICATE_RESOURCE: i16 = 92;
    let users: Vec<String> = r
        .users
        .iter()
        .flatten()
        .map(|u| u.name.to_string())
        .collect();
    let mut results: Vec<DescribeUserScramCredentialsResult> = Vec::new();
    for (i, user) in users.iter().enumerate() {
        if users[..i].contains(user) {
            continue;
        }
        let (code, message) = if users.iter().filter(|u| *u == user).count() > 1 {
            (
                DUPLICATE_RESOURCE,
                format!("Cannot describe SCRAM credentials for the same user twice in a single request: {user}"),
            )
        } else {
            (
                RESOURCE_NOT_FOUND,
                format!("Attempt to describe a user credential that does not exist: {user}"),
            )
        };
        results.push(
            DescribeUserScramCredentialsResult::default()
                .with_user(StrBytes::from_string(user.clone()))
                .with_error_code(code)
                .with_error_message(Some(StrBytes::from_string(message))),
        );
    }
    kafka_protocol::messages::DescribeUserScramCredentialsResponse::default().with_results(results)
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
    use kafka_protocol::messages::DescribeUserScramCredentialsRequest;
    use kafka_protocol::protocol::StrBytes;

    #[test]
    fn no_user_has_scram_credentials() {
        let name = |n: &'static str| UserName::default().with_name(StrBytes::from_static_str(n));
        let r = super::describe_user_scram_credentials(
            DescribeUserScramCredentialsRequest::default().with_users(Some(vec![
                name("alice"),
                name("bob"),
                name("alice"),
            ])),
        );
        let got: Vec<(&str, i16, usize)> = r
            .results
            .iter()
            .map(|u| (u.user.as_str(), u.error_code, u.credential_infos.len()))
            .collect();
        assert_eq!(got, [("alice", 92, 0), ("bob", 91, 0)]);
        let every = super::describe_user_scram_credentials(
            DescribeUserScramCredentialsRequest::default().with_users(None),
        );
        assert!(every.results.is_empty() && every.error_code == 0);
    }
}
