//! `sluice acl create|list|delete`: Kafka's ACLs over the native admin API
//! (docs/authorization.md; `kafka-acls.sh` manages the same ones over the Kafka listener).

use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use sluice_client::{Admin, ClientConfig};
use sluice_proto::acl::{self, op, pattern, permission, resource, AclBinding, AclFilter};

use super::output::{explain, outln, table};
use super::{ClientArgs, Output};

#[derive(Subcommand, Debug)]
pub enum AclCommand {
    /// Add ACLs: one per --operation for the resource.
    Create(CreateArgs),
    /// List the ACLs the options select (all without any).
    List(SelectArgs),
    /// Remove the ACLs the options select (all without any).
    Delete(SelectArgs),
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    All,
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    ClusterAction,
    DescribeConfigs,
    AlterConfigs,
    IdempotentWrite,
}

impl Operation {
    fn code(self) -> i8 {
        match self {
            Operation::All => op::ALL,
            Operation::Read => op::READ,
            Operation::Write => op::WRITE,
            Operation::Create => op::CREATE,
            Operation::Delete => op::DELETE,
            Operation::Alter => op::ALTER,
            Operation::Describe => op::DESCRIBE,
            Operation::ClusterAction => op::CLUSTER_ACTION,
            Operation::DescribeConfigs => op::DESCRIBE_CONFIGS,
            Operation::AlterConfigs => op::ALTER_CONFIGS,
            Operation::IdempotentWrite => op::IDEMPOTENT_WRITE,
        }
    }
}

/// The resource: at most one of these.
#[derive(Args, Debug)]
#[group(multiple = false)]
pub struct ResourceArgs {
    #[arg(long)]
    pub topic: Option<String>,
    #[arg(long)]
    pub group: Option<String>,
    #[arg(long)]
    pub transactional_id: Option<String>,
    /// The cluster (`kafka-cluster`).
    #[arg(long)]
    pub cluster: bool,
}

impl ResourceArgs {
    fn get(&self) -> Option<(i8, String)> {
        if let Some(t) = &self.topic {
            Some((resource::TOPIC, t.clone()))
        } else if let Some(g) = &self.group {
            Some((resource::GROUP, g.clone()))
        } else if let Some(t) = &self.transactional_id {
            Some((resource::TRANSACTIONAL_ID, t.clone()))
        } else {
            self.cluster
                .then(|| (resource::CLUSTER, acl::CLUSTER_NAME.to_string()))
        }
    }
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    #[command(flatten)]
    pub resource: ResourceArgs,
    /// The name is a prefix: the ACL applies to every resource whose name starts with it.
    #[arg(long)]
    pub prefixed: bool,
    /// Who: `User:NAME`, or `User:*` for everyone.
    #[arg(long)]
    pub principal: String,
    /// From where: an IP address, or `*`.
    #[arg(long, default_value = "*")]
    pub host: String,
    /// What (repeatable).
    #[arg(long, value_enum, required = true)]
    pub operation: Vec<Operation>,
    /// Deny instead of allow.
    #[arg(long)]
    pub deny: bool,
}

#[derive(Args, Debug)]
pub struct SelectArgs {
    #[command(flatten)]
    pub resource: ResourceArgs,
    /// Select the PREFIXED ACLs of that name (default: the LITERAL ones, when a resource
    /// is given).
    #[arg(long)]
    pub prefixed: bool,
    #[arg(long)]
    pub principal: Option<String>,
    #[arg(long)]
    pub host: Option<String>,
    #[arg(long, value_enum)]
    pub operation: Option<Operation>,
    /// Only DENY ACLs.
    #[arg(long, conflicts_with = "allow")]
    pub deny: bool,
    /// Only ALLOW ACLs.
    #[arg(long)]
    pub allow: bool,
}

impl SelectArgs {
    fn filter(&self) -> AclFilter {
        let res = self.resource.get();
        AclFilter {
            resource_type: res.as_ref().map_or(resource::ANY, |r| r.0),
            pattern_type: match (&res, self.prefixed) {
                (_, true) => pattern::PREFIXED,
                (Some(_), false) => pattern::LITERAL,
                (None, false) => pattern::ANY,
            },
            resource_name: res.map(|r| r.1),
            principal: self.principal.clone(),
            host: self.host.clone(),
            operation: self.operation.map_or(op::ANY, Operation::code),
            permission: if self.deny {
                permission::DENY
            } else if self.allow {
                permission::ALLOW
            } else {
                permission::ANY
            },
        }
    }
}

fn type_name(code: i8) -> &'static str {
    match code {
        resource::TOPIC => "topic",
        resource::GROUP => "group",
        resource::CLUSTER => "cluster",
        resource::TRANSACTIONAL_ID => "transactional-id",
        resource::DELEGATION_TOKEN => "delegation-token",
        resource::USER => "user",
        _ => "unknown",
    }
}

fn op_name(code: i8) -> String {
    Operation::value_variants()
        .iter()
        .find(|o| o.code() == code)
        .and_then(|o| o.to_possible_value())
        .map_or_else(|| code.to_string(), |v| v.get_name().to_string())
}

fn print(acls: &[AclBinding], output: Output) {
    match output {
        Output::Json => {
            let rows: Vec<_> = acls
                .iter()
                .map(|b| {
                    json!({
                        "resource_type": type_name(b.resource_type),
                        "name": b.resource_name,
                        "pattern": if b.pattern_type == pattern::PREFIXED { "prefixed" } else { "literal" },
                        "principal": b.principal,
                        "host": b.host,
                        "operation": op_name(b.operation),
                        "permission": if b.permission == permission::DENY { "deny" } else { "allow" },
                    })
                })
                .collect();
            outln!("{}", json!(rows));
        }
        Output::Table => {
            let rows = acls
                .iter()
                .map(|b| {
                    vec![
                        type_name(b.resource_type).to_string(),
                        b.resource_name.clone(),
                        if b.pattern_type == pattern::PREFIXED {
                            "prefixed"
                        } else {
                            "literal"
                        }
                        .to_string(),
                        b.principal.clone(),
                        b.host.clone(),
                        op_name(b.operation),
                        if b.permission == permission::DENY {
                            "deny"
                        } else {
                            "allow"
                        }
                        .to_string(),
                    ]
                })
                .collect();
            outln!(
                "{}",
                table(
                    &[
                        "resource",
                        "name",
                        "pattern",
                        "principal",
                        "host",
                        "operation",
                        "permission"
                    ],
                    rows
                )
            );
        }
    }
}

pub async fn run(cmd: AclCommand, c: &ClientArgs) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(&ClientConfig::new(&c.bootstrap));
    match cmd {
        AclCommand::Create(a) => {
            let Some((resource_type, resource_name)) = a.resource.get() else {
                bail!("name the resource: --topic, --group, --transactional-id or --cluster");
            };
            let acls: Vec<AclBinding> = a
                .operation
                .iter()
                .map(|o| AclBinding {
                    resource_type,
                    resource_name: resource_name.clone(),
                    pattern_type: if a.prefixed {
                        pattern::PREFIXED
                    } else {
                        pattern::LITERAL
                    },
                    principal: a.principal.clone(),
                    host: a.host.clone(),
                    operation: o.code(),
                    permission: if a.deny {
                        permission::DENY
                    } else {
                        permission::ALLOW
                    },
                })
                .collect();
            for b in &acls {
                if let Err(e) = b.validate() {
                    bail!("{e}");
                }
            }
            admin
                .create_acls(&acls)
                .await
                .map_err(|e| explain(&e, &c.bootstrap))?;
            print(&acls, c.output);
        }
        AclCommand::List(a) => {
            let acls = admin
                .describe_acls(&a.filter())
                .await
                .map_err(|e| explain(&e, &c.bootstrap))?;
            print(&acls, c.output);
        }
        AclCommand::Delete(a) => {
            let acls = admin
                .delete_acls(&a.filter())
                .await
                .map_err(|e| explain(&e, &c.bootstrap))?;
            print(&acls, c.output);
        }
    }
    Ok(ExitCode::SUCCESS)
}
