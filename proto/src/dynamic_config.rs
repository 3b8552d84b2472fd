//! Kafka's dynamic configs of brokers and groups, as far as Sluice takes them: which
//! names can be set, how values are checked, and the defaults a describe answers.
//! Shared by the controller (which validates a change and keeps the result in its
//! replicated state, pushed to every broker with the metadata) and the broker (which
//! describes them and, for groups, obeys them). Sans-IO.
//!
//! A config Sluice cannot honour is refused, never stored and ignored — with one
//! exception, documented in docs/kafka-compatibility.md ("Broker and group configs"):
//! the `sasl.kerberos.*` broker settings are stored and described although Sluice has no
//! SASL listener, exactly what a Kafka broker without a GSSAPI listener does with them.

use crate::ErrorCode;

/// Kafka's config resource types (`ConfigResource.Type`).
pub const RESOURCE_TOPIC: i32 = 2;
pub const RESOURCE_BROKER: i32 = 4;
pub const RESOURCE_BROKER_LOGGER: i32 = 8;
pub const RESOURCE_GROUP: i32 = 32;

/// How a value is checked.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// An integer in `min..=max`.
    Int(i64, i64),
    /// A number in `min..=max`.
    Double(f64, f64),
    /// Any string.
    Str,
}

/// Broker configs that can be set per broker (or cluster-wide with the empty name):
/// name, Kafka's default, kind.
const BROKER_SETTABLE: &[(&str, &str, Kind)] = &[
    (
        "sasl.kerberos.min.time.before.relogin",
        "60000",
        Kind::Int(0, i64::MAX),
    ),
    (
        "sasl.kerberos.ticket.renew.jitter",
        "0.05",
        Kind::Double(0.0, 0.25),
    ),
    (
        "sasl.kerberos.ticket.renew.window.factor",
        "0.8",
        Kind::Double(0.5, 1.0),
    ),
    ("sasl.kerberos.kinit.cmd", "/usr/bin/kinit", Kind::Str),
    (
        "sasl.kerberos.principal.to.local.rules",
        "DEFAULT",
        Kind::Str,
    ),
];

/// Group configs (KIP-848): name, Kafka's default, kind (within Kafka's default bounds,
/// `group.consumer.{min,max}.session.timeout.ms` and `…heartbeat.interval.ms`).
/// The broker obeys both (`kafka::groups`).
pub const GROUP_CONFIGS: &[(&str, &str)] = &[
    ("consumer.heartbeat.interval.ms", "5000"),
    ("consumer.session.timeout.ms", "45000"),
];
const GROUP_BOUNDS: &[(&str, i64, i64, &str, &str)] = &[
    (
        "consumer.heartbeat.interval.ms",
        5000,
        15000,
        "group.consumer.min.heartbeat.interval.ms",
        "group.consumer.max.heartbeat.interval.ms",
    ),
    (
        "consumer.session.timeout.ms",
        45000,
        60000,
        "group.consumer.min.session.timeout.ms",
        "group.consumer.max.session.timeout.ms",
    ),
];

/// A refused change: Kafka's error code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

fn refuse(code: ErrorCode, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

/// The broker configs that can be set, with their defaults.
pub fn broker_settable() -> impl Iterator<Item = (&'static str, &'static str)> {
    BROKER_SETTABLE.iter().map(|(n, d, _)| (*n, *d))
}

/// Whether `name` is a valid resource name of `resource_type` (a broker: empty for the
/// cluster default, or a broker id).
pub fn check_name(resource_type: i32, name: &str) -> Result<(), Refusal> {
    match resource_type {
        RESOURCE_BROKER if name.is_empty() || name.parse::<i32>().is_ok_and(|id| id >= 0) => Ok(()),
        RESOURCE_BROKER => Err(refuse(
            ErrorCode::InvalidRequest,
            format!("Node id must be an integer, but it is: {name}"),
        )),
        RESOURCE_GROUP if !name.is_empty() => Ok(()),
        RESOURCE_GROUP => Err(refuse(ErrorCode::InvalidRequest, "group id is empty")),
        other => Err(refuse(
            ErrorCode::InvalidRequest,
            format!("configs of resource type {other} are not served"),
        )),
    }
}

/// Checks one `name=value` for the resource `resource_name` of `resource_type` (4 broker,
/// 32 group).
pub fn check(
    resource_type: i32,
    resource_name: &str,
    name: &str,
    value: &str,
) -> Result<(), Refusal> {
    match resource_type {
        RESOURCE_BROKER => {
            let Some((_, _, kind)) = BROKER_SETTABLE.iter().find(|(n, _, _)| *n == name) else {
                // Kafka's answer for a config it cannot change without a restart: Sluice
                // takes these from its command line only.
                return Err(refuse(
                    ErrorCode::InvalidRequest,
                    format!("Cannot update these configs dynamically: [{name}]"),
                ));
            };
            if resource_name.is_empty() {
                // Listener settings, per broker only (as Kafka's `sasl.*`).
                return Err(refuse(
                    ErrorCode::InvalidRequest,
                    format!("Cannot update these configs at default cluster level, broker id must be specified: [{name}]"),
                ));
            }
            let bad = |ty: &str| {
                refuse(
                    ErrorCode::InvalidRequest,
                    format!(
                        "Invalid value {value} for configuration {name}: Not a number of type {ty}"
                    ),
                )
            };
            match kind {
                Kind::Int(lo, hi) => match value.trim().parse::<i64>() {
                    Ok(v) if (*lo..=*hi).contains(&v) => Ok(()),
                    Ok(_) => Err(refuse(
                        ErrorCode::InvalidRequest,
                        format!("Invalid value {value} for configuration {name}: Value must be in {lo}..={hi}"),
                    )),
                    Err(_) => Err(bad("LONG")),
                },
                Kind::Double(lo, hi) => match value.trim().parse::<f64>() {
                    Ok(v) if (*lo..=*hi).contains(&v) => Ok(()),
                    Ok(_) => Err(refuse(
                        ErrorCode::InvalidRequest,
                        format!("Invalid value {value} for configuration {name}: Value must be in {lo}..={hi}"),
                    )),
                    Err(_) => Err(bad("DOUBLE")),
                },
                Kind::Str => Ok(()),
            }
        }
        RESOURCE_GROUP => {
            let Some((_, lo, hi, lo_name, hi_name)) =
                GROUP_BOUNDS.iter().find(|(n, ..)| *n == name)
            else {
                return Err(refuse(
                    ErrorCode::InvalidConfig,
                    format!("Unknown group config name: {name}"),
                ));
            };
            let v: i64 = value.trim().parse().map_err(|_| {
                refuse(
                    ErrorCode::InvalidConfig,
                    format!(
                        "Invalid value {value} for configuration {name}: Not a number of type INT"
                    ),
                )
            })?;
            if v < *lo {
                return Err(refuse(
                    ErrorCode::InvalidConfig,
                    format!("{name} must be greater than or equal to {lo_name} {lo}"),
                ));
            }
            if v > *hi {
                return Err(refuse(
                    ErrorCode::InvalidConfig,
                    format!("{name} must be less than or equal to {hi_name} {hi}"),
                ));
            }
            Ok(())
        }
        other => Err(refuse(
            ErrorCode::InvalidRequest,
            format!("configs of resource type {other} are not served"),
        )),
    }
}

/// The key under which the controller keeps a resource's configs.
pub fn key(resource_type: i32, name: &str) -> String {
    format!("{resource_type}/{name}")
}

/// The resource type and name of a [`key`].
pub fn parse_key(key: &str) -> Option<(i32, &str)> {
    let (t, name) = key.split_once('/')?;
    Some((t.parse().ok()?, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_and_group_configs_are_checked_as_kafka_bounds_them() {
        let relogin = "sasl.kerberos.min.time.before.relogin";
        assert!(check(RESOURCE_BROKER, "1", relogin, "58000").is_ok());
        let e = check(RESOURCE_BROKER, "1", "background.threads", "9").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        let e = check(RESOURCE_BROKER, "1", relogin, "x").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert!(
            e.message.ends_with("Not a number of type LONG"),
            "{}",
            e.message
        );
        // Listener settings are per broker, never cluster-wide.
        assert!(check(RESOURCE_BROKER, "", relogin, "58000").is_err());
        assert!(check(RESOURCE_GROUP, "g", "consumer.session.timeout.ms", "50000").is_ok());
        for (n, v) in [
            ("consumer.session.timeout.ms", "44999"),
            ("consumer.session.timeout.ms", "60001"),
            ("consumer.heartbeat.interval.ms", "soon"),
            ("no.such", "1"),
        ] {
            assert_eq!(
                check(RESOURCE_GROUP, "g", n, v).unwrap_err().code,
                ErrorCode::InvalidConfig
            );
        }
        assert!(check_name(RESOURCE_BROKER, "").is_ok());
        assert!(check_name(RESOURCE_BROKER, "2").is_ok());
        assert!(check_name(RESOURCE_BROKER, "two").is_err());
        assert!(check_name(RESOURCE_GROUP, "").is_err());
        assert_eq!(parse_key(&key(RESOURCE_GROUP, "a/b")), Some((32, "a/b")));
    }
}
