//! Kafka ACLs and the authorizer, sans-IO (docs/authorization.md).
//!
//! An [`AclBinding`] is Kafka's: a resource pattern (type, name, LITERAL or PREFIXED)
//! and an entry (principal, host, operation, ALLOW or DENY), every enum in Kafka's
//! wire codes. The controller keeps the bindings in its replicated state and pushes them
//! to every broker with the metadata; each broker decides with [`Authorizer::authorize`],
//! which follows Kafka's `StandardAuthorizer`:
//!
//! - a super user is allowed everything;
//! - the ACLs that apply to a resource are the LITERAL ones naming it, the LITERAL
//!   wildcard `*` of its type, and the PREFIXED ones whose name starts it;
//! - when none applies, `allow.everyone.if.no.acl.found` decides;
//! - otherwise a DENY matching the principal (or `User:*`), the host (or `*`) and the
//!   operation (or ALL) wins; else an ALLOW matching them (operation: itself, ALL, or one
//!   that implies it: DESCRIBE by READ, WRITE, DELETE, ALTER; DESCRIBE_CONFIGS by
//!   ALTER_CONFIGS) allows; else the request is denied.

use serde::{Deserialize, Serialize};

use crate::v1;

/// Kafka's `ResourceType` codes.
pub mod resource {
    pub const UNKNOWN: i8 = 0;
    pub const ANY: i8 = 1;
    pub const TOPIC: i8 = 2;
    pub const GROUP: i8 = 3;
    pub const CLUSTER: i8 = 4;
    pub const TRANSACTIONAL_ID: i8 = 5;
    pub const DELEGATION_TOKEN: i8 = 6;
    pub const USER: i8 = 7;
}

/// Kafka's `PatternType` codes.
pub mod pattern {
    pub const UNKNOWN: i8 = 0;
    pub const ANY: i8 = 1;
    pub const MATCH: i8 = 2;
    pub const LITERAL: i8 = 3;
    pub const PREFIXED: i8 = 4;
}

/// Kafka's `AclOperation` codes.
pub mod op {
    pub const UNKNOWN: i8 = 0;
    pub const ANY: i8 = 1;
    pub const ALL: i8 = 2;
    pub const READ: i8 = 3;
    pub const WRITE: i8 = 4;
    pub const CREATE: i8 = 5;
    pub const DELETE: i8 = 6;
    pub const ALTER: i8 = 7;
    pub const DESCRIBE: i8 = 8;
    pub const CLUSTER_ACTION: i8 = 9;
    pub const DESCRIBE_CONFIGS: i8 = 10;
    pub const ALTER_CONFIGS: i8 = 11;
    pub const IDEMPOTENT_WRITE: i8 = 12;
    pub const CREATE_TOKENS: i8 = 13;
    pub const DESCRIBE_TOKENS: i8 = 14;
}

/// Kafka's `AclPermissionType` codes.
pub mod permission {
    pub const UNKNOWN: i8 = 0;
    pub const ANY: i8 = 1;
    pub const DENY: i8 = 2;
    pub const ALLOW: i8 = 3;
}

/// The one name a CLUSTER resource has.
pub const CLUSTER_NAME: &str = "kafka-cluster";
/// The principal every client of a listener without authentication is.
pub const ANONYMOUS: &str = "User:ANONYMOUS";
/// The wildcard resource name, principal and host.
pub const WILDCARD: &str = "*";
const WILDCARD_PRINCIPAL: &str = "User:*";
/// The name [`Authorizer::authorize_any`] asks about first: one no ACL is likely to name.
const UNNAMED: &str = "hardcode";

/// The operations each resource type has (what authorized-operations bit sets cover).
pub const TOPIC_OPERATIONS: [i8; 8] = [
    op::READ,
    op::WRITE,
    op::CREATE,
    op::DELETE,
    op::ALTER,
    op::DESCRIBE,
    op::DESCRIBE_CONFIGS,
    op::ALTER_CONFIGS,
];
pub const GROUP_OPERATIONS: [i8; 3] = [op::READ, op::DESCRIBE, op::DELETE];
pub const CLUSTER_OPERATIONS: [i8; 7] = [
    op::CREATE,
    op::ALTER,
    op::DESCRIBE,
    op::CLUSTER_ACTION,
    op::DESCRIBE_CONFIGS,
    op::ALTER_CONFIGS,
    op::IDEMPOTENT_WRITE,
];

/// One ACL: who may (or may not) do what, from where, on which resources.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AclBinding {
    pub resource_type: i8,
    pub resource_name: String,
    pub pattern_type: i8,
    pub principal: String,
    pub host: String,
    pub operation: i8,
    pub permission: i8,
}

/// What DescribeAcls and DeleteAcls select: `None` and the ANY codes match everything;
/// pattern MATCH selects the bindings that apply to the named resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclFilter {
    pub resource_type: i8,
    pub resource_name: Option<String>,
    pub pattern_type: i8,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: i8,
    pub permission: i8,
}

/// Why a binding or filter is refused (Kafka answers INVALID_REQUEST).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    #[error("invalid resource type {0}")]
    ResourceType(i8),
    #[error("invalid pattern type {0}")]
    PatternType(i8),
    #[error("invalid operation {0}")]
    Operation(i8),
    #[error("invalid permission type {0}")]
    Permission(i8),
    #[error("invalid principal {0:?}: expected TYPE:NAME, e.g. User:alice")]
    Principal(String),
    #[error("the host must be given ('*' for every host)")]
    Host,
    #[error("the resource name must be given")]
    Name,
    #[error("the CLUSTER resource is named {CLUSTER_NAME:?}, not {0:?}")]
    ClusterName(String),
}

fn valid_principal(p: &str) -> bool {
    matches!(p.split_once(':'), Some((kind, name)) if !kind.is_empty() && !name.is_empty())
}

impl AclBinding {
    /// Kafka's checks on a binding to create.
    pub fn validate(&self) -> Result<(), AclError> {
        if !(resource::TOPIC..=resource::USER).contains(&self.resource_type) {
            return Err(AclError::ResourceType(self.resource_type));
        }
        if self.pattern_type != pattern::LITERAL && self.pattern_type != pattern::PREFIXED {
            return Err(AclError::PatternType(self.pattern_type));
        }
        if !(op::ALL..=op::DESCRIBE_TOKENS).contains(&self.operation) {
            return Err(AclError::Operation(self.operation));
        }
        if self.permission != permission::ALLOW && self.permission != permission::DENY {
            return Err(AclError::Permission(self.permission));
        }
        if !valid_principal(&self.principal) {
            return Err(AclError::Principal(self.principal.clone()));
        }
        if self.host.is_empty() {
            return Err(AclError::Host);
        }
        if self.resource_name.is_empty() {
            return Err(AclError::Name);
        }
        if self.resource_type == resource::CLUSTER && self.resource_name != CLUSTER_NAME {
            return Err(AclError::ClusterName(self.resource_name.clone()));
        }
        Ok(())
    }

    /// Whether this binding's resource pattern covers the resource `name` of type `rt`.
    fn applies_to(&self, rt: i8, name: &str) -> bool {
        self.resource_type == rt
            && match self.pattern_type {
                pattern::LITERAL => self.resource_name == name || self.resource_name == WILDCARD,
                pattern::PREFIXED => name.starts_with(&self.resource_name),
                _ => false,
            }
    }

    fn principal_and_host_match(&self, principal: &str, host: &str) -> bool {
        (self.principal == principal || self.principal == WILDCARD_PRINCIPAL)
            && (self.host == host || self.host == WILDCARD)
    }

    pub fn to_proto(&self) -> v1::AclBinding {
        v1::AclBinding {
            resource_type: self.resource_type.into(),
            resource_name: self.resource_name.clone(),
            pattern_type: self.pattern_type.into(),
            principal: self.principal.clone(),
            host: self.host.clone(),
            operation: self.operation.into(),
            permission: self.permission.into(),
        }
    }

    pub fn from_proto(b: &v1::AclBinding) -> AclBinding {
        let code = |c: i32| i8::try_from(c).unwrap_or(0);
        AclBinding {
            resource_type: code(b.resource_type),
            resource_name: b.resource_name.clone(),
            pattern_type: code(b.pattern_type),
            principal: b.principal.clone(),
            host: b.host.clone(),
            operation: code(b.operation),
            permission: code(b.permission),
        }
    }
}

/// Whether an ALLOW of `granted` allows `wanted` (ALL, itself, or an implication).
fn allow_covers(granted: i8, wanted: i8) -> bool {
    granted == op::ALL
        || granted == wanted
        || (wanted == op::DESCRIBE
            && matches!(granted, op::READ | op::WRITE | op::DELETE | op::ALTER))
        || (wanted == op::DESCRIBE_CONFIGS && granted == op::ALTER_CONFIGS)
}

impl AclFilter {
    /// Kafka's checks on a filter (UNKNOWN codes are refused).
    pub fn validate(&self) -> Result<(), AclError> {
        if !(resource::ANY..=resource::USER).contains(&self.resource_type) {
            return Err(AclError::ResourceType(self.resource_type));
        }
        if !(pattern::ANY..=pattern::PREFIXED).contains(&self.pattern_type) {
            return Err(AclError::PatternType(self.pattern_type));
        }
        if !(op::ANY..=op::DESCRIBE_TOKENS).contains(&self.operation) {
            return Err(AclError::Operation(self.operation));
        }
        if !(permission::ANY..=permission::ALLOW).contains(&self.permission) {
            return Err(AclError::Permission(self.permission));
        }
        Ok(())
    }

    /// Kafka's `AclBindingFilter.matches`.
    pub fn matches(&self, b: &AclBinding) -> bool {
        if self.resource_type != resource::ANY && self.resource_type != b.resource_type {
            return false;
        }
        let pattern_ok = match self.pattern_type {
            pattern::ANY | pattern::MATCH => true,
            p => p == b.pattern_type,
        };
        if !pattern_ok {
            return false;
        }
        let name_ok = match &self.resource_name {
            None => true,
            Some(name) if self.pattern_type == pattern::MATCH => match b.pattern_type {
                pattern::LITERAL => *name == b.resource_name || b.resource_name == WILDCARD,
                pattern::PREFIXED => name.starts_with(&b.resource_name),
                _ => false,
            },
            Some(name) => *name == b.resource_name,
        };
        name_ok
            && self.principal.as_ref().is_none_or(|p| *p == b.principal)
            && self.host.as_ref().is_none_or(|h| *h == b.host)
            && (self.operation == op::ANY || self.operation == b.operation)
            && (self.permission == permission::ANY || self.permission == b.permission)
    }

    pub fn to_proto(&self) -> v1::AclFilter {
        v1::AclFilter {
            resource_type: self.resource_type.into(),
            resource_name: self.resource_name.clone(),
            pattern_type: self.pattern_type.into(),
            principal: self.principal.clone(),
            host: self.host.clone(),
            operation: self.operation.into(),
            permission: self.permission.into(),
        }
    }

    pub fn from_proto(f: &v1::AclFilter) -> AclFilter {
        let code = |c: i32| i8::try_from(c).unwrap_or(0);
        AclFilter {
            resource_type: code(f.resource_type),
            resource_name: f.resource_name.clone(),
            pattern_type: code(f.pattern_type),
            principal: f.principal.clone(),
            host: f.host.clone(),
            operation: code(f.operation),
            permission: code(f.permission),
        }
    }
}

/// How a broker authorizes (its flags; the ACLs come from the controller).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorizerConfig {
    /// Off (Kafka without `authorizer.class.name`): everything is allowed.
    pub enabled: bool,
    /// `allow.everyone.if.no.acl.found`.
    pub allow_if_no_acl: bool,
    /// `super.users`: principals allowed everything.
    pub super_users: Vec<String>,
}

/// A broker's view: its config and the cluster's ACLs.
#[derive(Debug, Clone, Default)]
pub struct Authorizer {
    pub config: AuthorizerConfig,
    pub acls: Vec<AclBinding>,
}

impl Authorizer {
    /// Whether `principal` connecting from `host` may do `operation` on the resource
    /// `name` of type `resource_type`.
    pub fn authorize(
        &self,
        principal: &str,
        host: &str,
        operation: i8,
        resource_type: i8,
        name: &str,
    ) -> bool {
        if !self.config.enabled || self.config.super_users.iter().any(|s| s == principal) {
            return true;
        }
        let mut found = false;
        let mut allowed = false;
        for b in self
            .acls
            .iter()
            .filter(|b| b.applies_to(resource_type, name))
        {
            found = true;
            if !b.principal_and_host_match(principal, host) {
                continue;
            }
            match b.permission {
                permission::DENY if b.operation == op::ALL || b.operation == operation => {
                    return false
                }
                permission::ALLOW if allow_covers(b.operation, operation) => allowed = true,
                _ => {}
            }
        }
        if !found {
            return self.config.allow_if_no_acl;
        }
        allowed
    }

    /// Whether `principal` may do `operation` on some resource of the type (Kafka's
    /// `authorizeByResourceType`, which InitProducerId without a transactional id asks
    /// for WRITE on topics): allowed when a resource no ACL names would be (its
    /// LITERAL/PREFIXED ACLs and `allow.everyone.if.no.acl.found` decide), or when an
    /// ALLOW for the principal and host is not covered by a DENY of the same or a
    /// shorter PREFIXED name; a DENY on the LITERAL wildcard refuses.
    pub fn authorize_any(
        &self,
        principal: &str,
        host: &str,
        operation: i8,
        resource_type: i8,
    ) -> bool {
        if self.authorize(principal, host, operation, resource_type, UNNAMED) {
            return true;
        }
        let mine: Vec<&AclBinding> = self
            .acls
            .iter()
            .filter(|b| {
                b.resource_type == resource_type && b.principal_and_host_match(principal, host)
            })
            .collect();
        let denies = |b: &&&AclBinding| {
            b.permission == permission::DENY && (b.operation == op::ALL || b.operation == operation)
        };
        if mine
            .iter()
            .filter(denies)
            .any(|d| d.pattern_type == pattern::LITERAL && d.resource_name == WILDCARD)
        {
            return false;
        }
        mine.iter()
            .filter(|b| b.permission == permission::ALLOW && allow_covers(b.operation, operation))
            .any(|a| {
                !mine.iter().filter(denies).any(|d| match d.pattern_type {
                    pattern::LITERAL => {
                        a.pattern_type == pattern::LITERAL && a.resource_name == d.resource_name
                    }
                    pattern::PREFIXED => a.resource_name.starts_with(&d.resource_name),
                    _ => false,
                })
            })
    }

    /// Kafka's authorized-operations bit set: bit `op` for each of `ops` allowed.
    pub fn operations(
        &self,
        principal: &str,
        host: &str,
        resource_type: i8,
        name: &str,
        ops: &[i8],
    ) -> i32 {
        ops.iter()
            .filter(|o| self.authorize(principal, host, **o, resource_type, name))
            .fold(0, |bits, o| bits | (1 << o))
    }
}

#[cfg(test)]
#[path = "acl_tests.rs"]
mod tests;
