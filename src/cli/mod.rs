//! Command-line definitions and dispatch.

mod acl;
mod cdc;
mod cdc_ops;
mod cdc_snapshot;
mod client_cmds;
mod consume;
mod group;
mod output;
mod perf;
mod produce;
mod servers;
mod table;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "sluice",
    version,
    about = "Sluice: a partitioned, replicated commit-log broker"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every client command takes.
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// Broker address(es), comma-separated.
    #[arg(
        short = 'b',
        long,
        env = "SLUICE_BOOTSTRAP",
        default_value = "127.0.0.1:9392",
        global = true
    )]
    pub bootstrap: String,
    /// Output format: a table (records as they are, for consume) or JSON.
    #[arg(long, value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// A controller (embedded store) and N brokers in one process, for development.
    Dev(servers::DevArgs),
    /// Run a controller.
    Controller(servers::ControllerArgs),
    /// Run a broker.
    Broker(servers::BrokerArgs),
    /// Create, list, describe, delete and alter topics.
    Topic {
        #[command(subcommand)]
        command: client_cmds::TopicCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Produce one record per stdin line (or one per --value-file).
    Produce {
        #[command(flatten)]
        args: produce::ProduceArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print records of a topic, one per line.
    Consume {
        #[command(flatten)]
        args: consume::ConsumeArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Cluster information.
    Cluster {
        #[command(subcommand)]
        command: client_cmds::ClusterCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Consumer groups: list, describe (lag), reset offsets, delete.
    Group {
        #[command(subcommand)]
        command: group::GroupCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Kafka ACLs: create, list, delete (enforced by brokers run with --authorizer).
    Acl {
        #[command(subcommand)]
        command: acl::AclCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Partition leadership.
    Partition {
        #[command(subcommand)]
        command: client_cmds::PartitionCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Tables: key → value maps materialized from compacted topics.
    Table {
        #[command(subcommand)]
        command: table::TableCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Change data capture from Postgres or MariaDB into compacted topics.
    Cdc {
        #[command(subcommand)]
        command: cdc::CdcCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Throughput and latency harness.
    Perf {
        #[command(subcommand)]
        command: perf::PerfCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// `host:port` that must parse as a socket address.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not an address like 127.0.0.1:9392"))
}

pub fn default_data_dir() -> PathBuf {
    PathBuf::from("sluice-data")
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only for a person at a terminal: escapes in a log file or a pipe are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Dev(a) => {
            init_tracing("info");
            servers::dev(a).await
        }
        Command::Controller(a) => {
            init_tracing("info");
            servers::controller(a).await
        }
        Command::Broker(a) => {
            init_tracing("info");
            servers::broker(a).await
        }
        Command::Topic { command, client } => {
            init_tracing("warn");
            client_cmds::topic(command, &client).await
        }
        Command::Produce { args, client } => {
            init_tracing("warn");
            produce::produce(args, &client).await
        }
        Command::Consume { args, client } => {
            init_tracing("warn");
            consume::consume(args, &client).await
        }
        Command::Cluster { command, client } => {
            init_tracing("warn");
            client_cmds::cluster(command, &client).await
        }
        Command::Group { command, client } => {
            init_tracing("warn");
            group::run(command, &client).await
        }
        Command::Acl { command, client } => {
            init_tracing("warn");
            acl::run(command, &client).await
        }
        Command::Partition { command, client } => {
            init_tracing("warn");
            client_cmds::partition(command, &client).await
        }
        Command::Table { command, client } => {
            init_tracing("warn");
            table::run(command, &client).await
        }
        Command::Cdc { command, client } => {
            // The connectors log their progress; status and drop only what goes wrong.
            let quiet = matches!(
                command,
                cdc::CdcCommand::Status(_)
                    | cdc::CdcCommand::Drop(_)
                    | cdc::CdcCommand::Snapshot(_)
            );
            init_tracing(if quiet { "warn" } else { "info" });
            cdc::run(command, &client).await
        }
        Command::Perf { command, client } => {
            init_tracing("warn");
            perf::run(command, &client).await
        }
    }
}
