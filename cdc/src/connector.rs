//! A connector for its whole life, as a library: [`Connector::run`] runs one pipeline
//! (the sink over Sluice, the writer, the source) after another until it is stopped or
//! meets a state no restart can change. `sluice cdc postgres` and `sluice cdc mysql` are
//! thin shells over it; an application can embed the same thing:
//!
//! ```no_run
//! # async fn example() -> Result<(), sluice_cdc::Error> {
//! use sluice_cdc::connector::{Connector, Source, Stop};
//! # let source: Source = todo!();
//! # let sink: sluice_cdc::sink::SinkConfig = todo!();
//! # let info: sluice_cdc::envelope::SourceInfo = todo!();
//! let connector = Connector::new(source, sink, info);
//! connector.check().await?; // setup errors, before any topic is made
//! let stop = Stop::new(); // stop.cancel() from a signal handler ends it cleanly
//! let confirmed = connector.run(&stop).await?;
//! # Ok(()) }
//! ```
//!
//! Restart policy: a failed source or broker connection (anything but
//! [`Error::Config`]) ends the pipeline, and the next starts after a backoff (0.5 s
//! doubling to 5 s by default, [`RestartPolicy`]): positions are read back from the
//! topics, so nothing is lost or written twice (docs/cdc.md, "Effectively-once").
//! [`Connector::stats`] feeds `/metrics`, `/healthz` and progress lines.

use std::sync::Arc;
use std::time::Duration;

use sluice_proto::source_pos::SourcePos;
use tokio::sync::{mpsc, watch};
use tracing::warn;

use crate::change::TableId;
use crate::envelope::SourceInfo;
use crate::health::Phase;
use crate::runner::Stats;
use crate::sink::{Sink, SinkConfig};
use crate::Error;

pub use crate::mysql::Stop;

/// Where a connector reads from.
#[derive(Debug, Clone)]
pub enum Source {
    #[cfg(feature = "postgres")]
    Postgres(crate::postgres::PgSourceConfig),
    Mysql(crate::mysql::MySourceConfig),
}

impl Source {
    fn tables(&self) -> &[TableId] {
        match self {
            #[cfg(feature = "postgres")]
            Source::Postgres(c) => &c.tables,
            Source::Mysql(c) => &c.tables,
        }
    }

    /// This source with its table patterns and `--exclude-tables` resolved against the
    /// tables the database has now (itself when there are none): a run started after a
    /// matching table was created captures it, copied on its own as any table added to
    /// `--tables`. A pattern that matches nothing is a [`Error::Config`].
    async fn resolved(&self) -> Result<Source, Error> {
        let (include, exclude) = match self {
            #[cfg(feature = "postgres")]
            Source::Postgres(c) => (&c.tables, &c.exclude_tables),
            Source::Mysql(c) => (&c.tables, &c.exclude_tables),
        };
        if exclude.is_empty() && !include.iter().any(TableId::is_pattern) {
            return Ok(self.clone());
        }
        let existing = match self {
            #[cfg(feature = "postgres")]
            Source::Postgres(c) => crate::postgres::list_tables(&c.dsn).await?,
            Source::Mysql(c) => crate::mysql::list_tables(&c.dsn).await?,
        };
        let tables =
            crate::change::resolve_tables(include, exclude, &existing).map_err(Error::Config)?;
        let mut source = self.clone();
        match &mut source {
            #[cfg(feature = "postgres")]
            Source::Postgres(c) => c.tables = tables,
            Source::Mysql(c) => c.tables = tables,
        }
        Ok(source)
    }
}

/// How long a connector waits before the next pipeline after a failure.
#[derive(Debug, Clone, Copy)]
pub struct RestartPolicy {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// What the supervisor reports (the CLI prints these lines; `None` logs them).
pub type OnRestart = Arc<dyn Fn(&Error, Duration) + Send + Sync>;

pub struct Connector {
    source: Source,
    sink: SinkConfig,
    info: SourceInfo,
    restart: RestartPolicy,
    stats: Arc<Stats>,
    on_restart: Option<OnRestart>,
}

impl Connector {
    pub fn new(source: Source, sink: SinkConfig, info: SourceInfo) -> Connector {
        Connector {
            source,
            sink,
            info,
            restart: RestartPolicy::default(),
            stats: Arc::default(),
            on_restart: None,
        }
    }

    pub fn with_restart_policy(mut self, restart: RestartPolicy) -> Connector {
        self.restart = restart;
        self
    }

    /// Called before each restart with the failure and the backoff (default: a `warn`
    /// log line).
    pub fn on_restart(mut self, f: OnRestart) -> Connector {
        self.on_restart = Some(f);
        self
    }

    /// Counters and health, shared with whoever serves them.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Refuses a server or table that cannot be captured ([`Error::Config`], with the
    /// fix), before anything is made.
    pub async fn check(&self) -> Result<(), Error> {
        match &self.source.resolved().await? {
            #[cfg(feature = "postgres")]
            Source::Postgres(c) => crate::postgres::check(c).await,
            Source::Mysql(c) => crate::mysql::check(c).await,
        }
    }

    /// Runs until `stop` (returns the last position confirmed to the source) or an
    /// error no restart can change.
    pub async fn run(&self, stop: &Stop) -> Result<Option<SourcePos>, Error> {
        let mut backoff = self.restart.initial_backoff;
        let result = loop {
            self.stats.health.run_starting();
            match self.once(stop).await {
                Ok(position) => break Ok(position),
                Err(e @ Error::Config(_)) => break Err(e),
                Err(_) if stop.is_cancelled() => break Ok(None),
                Err(e) => {
                    self.stats.health.run_failed(e.to_string());
                    match &self.on_restart {
                        Some(f) => f(&e, backoff),
                        None => warn!(error = %e, ?backoff, "connector failed; restarting"),
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.cancelled() => break Ok(None),
                    }
                    backoff = (backoff * 2).min(self.restart.max_backoff);
                }
            }
        };
        self.stats.health.set_phase(Phase::Stopped);
        result
    }

    /// One pipeline: sink, writer, source; returns when the source ends.
    async fn once(&self, stop: &Stop) -> Result<Option<SourcePos>, Error> {
        let source = self.source.resolved().await?;
        let tables = source.tables();
        let sink = Sink::open(&self.sink, self.info.clone(), tables).await?;
        let (tx, rx) = mpsc::channel(256);
        let (confirmed_tx, confirmed_rx) = watch::channel(None);
        match &source {
            #[cfg(feature = "postgres")]
            Source::Postgres(cfg) => {
                // Per table: a table added to --tables is copied on its own; an
                // incremental snapshot cut short resumes.
                let state = sink.table_states().clone();
                let passes = sink.passes().clone();
                let writer = tokio::spawn(crate::runner::run(
                    sink,
                    rx,
                    confirmed_tx,
                    self.stats.clone(),
                ));
                let token = crate::postgres::Stop::new();
                let relay = {
                    let (stop, token) = (stop.clone(), token.clone());
                    tokio::spawn(async move {
                        stop.cancelled().await;
                        token.cancel();
                    })
                };
                let source =
                    crate::postgres::run(cfg.clone(), state, passes, tx, confirmed_rx, token).await;
                relay.abort();
                join(source, writer).await
            }
            Source::Mysql(cfg) => {
                let plan = crate::mysql::copy_plan(cfg.snapshot, tables, sink.table_states());
                // The position lives in the topics: the oldest last record over every
                // partition of the tables that stream on (a table copied on its own
                // starts at its copy).
                let mut partitions = Vec::new();
                for t in tables.iter().filter(|t| plan.streams_from_topic(t)) {
                    if let Some((topic, n)) = sink.topic_partitions(t) {
                        partitions.push((topic.to_string(), n));
                    }
                }
                let mut cfg = cfg.clone();
                cfg.resume_from = crate::mysql::resume_position(sink.resume(), &partitions);
                // MariaDB is not told what Sluice acknowledged (the position lives in
                // the topics): the source waits only for its topic marks to be written.
                let writer = tokio::spawn(crate::runner::run(
                    sink,
                    rx,
                    confirmed_tx,
                    self.stats.clone(),
                ));
                let source = crate::mysql::run(cfg, plan, tx, confirmed_rx, stop.clone()).await;
                join(source, writer).await
            }
        }
    }
}

/// Waits for the writer after the source returned. A failed writer makes the source
/// fail too ("the writer stopped"): the writer's own error says why.
async fn join(
    source: Result<(), Error>,
    writer: tokio::task::JoinHandle<Result<Option<SourcePos>, Error>>,
) -> Result<Option<SourcePos>, Error> {
    let written = writer
        .await
        .map_err(|e| Error::Source(format!("writer task: {e}")))?;
    match (source, written) {
        (_, Err(e)) => Err(e),
        (Err(e), Ok(_)) => Err(e),
        (Ok(()), Ok(written)) => Ok(written),
    }
}
