//! What a source hands the runner: rows and transactions in a source-neutral form.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;
use sluice_proto::source_pos::SourcePos;

/// A captured table: Postgres schema (or MariaDB database) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableId {
    pub schema: String,
    pub table: String,
}

impl RowChange {
    /// `TRUNCATE` of `table`.
    pub fn truncate(table: Arc<TableId>) -> RowChange {
        RowChange {
            table,
            op: Op::Truncate,
            key: Vec::new(),
            before: None,
            after: None,
        }
    }
}

impl TableId {
    /// `schema.table`, as given on the command line.
    pub fn parse(s: &str) -> Result<TableId, String> {
        match s.trim().split_once('.') {
            Some((schema, table)) if !schema.is_empty() && !table.is_empty() => Ok(TableId {
                schema: schema.to_string(),
                table: table.to_string(),
            }),
            _ => Err(format!("{s:?} is not schema.table")),
        }
    }

    /// The topic this table's changes go to: `<prefix>.<schema>.<table>`.
    pub fn topic(&self, prefix: &str) -> String {
        format!("{prefix}.{}.{}", self.schema, self.table)
    }

    /// Whether the schema or the name holds a `*` or `?` (see [`glob_match`]).
    pub fn is_pattern(&self) -> bool {
        self.schema.contains(['*', '?']) || self.table.contains(['*', '?'])
    }

    /// Whether `table` is this one, or matches it as a pattern.
    pub fn matches(&self, table: &TableId) -> bool {
        glob_match(&self.schema, &table.schema) && glob_match(&self.table, &table.table)
    }
}

/// Shell-style matching: `*` is any run of characters (none included), `?` one
/// character, everything else itself (case-sensitive, as the database's names).
pub fn glob_match(pattern: &str, s: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (pattern.chars().collect(), s.chars().collect());
    let (mut i, mut j) = (0, 0);
    // Where the last `*` was, and where in `s` it was tried up to.
    let mut star: Option<(usize, usize)> = None;
    while j < s.len() {
        match p.get(i) {
            Some('*') => {
                star = Some((i, j));
                i += 1;
            }
            Some(&c) if c == '?' || c == s[j] => {
                i += 1;
                j += 1;
            }
            _ => match star {
                Some((si, sj)) => {
                    i = si + 1;
                    j = sj + 1;
                    star = Some((si, sj + 1));
                }
                None => return false,
            },
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

/// `--tables` with patterns, less `--exclude-tables`, against the tables the database
/// has (`existing`, in its order): a plain name stays as given (the source refuses one
/// that does not exist, naming it); a pattern brings the tables it matches and must
/// match one. Each table once, in the order given; an error when nothing is left.
pub fn resolve_tables(
    include: &[TableId],
    exclude: &[TableId],
    existing: &[TableId],
) -> Result<Vec<TableId>, String> {
    let mut out: Vec<TableId> = Vec::new();
    for pattern in include {
        let found: Vec<&TableId> = if pattern.is_pattern() {
            existing.iter().filter(|t| pattern.matches(t)).collect()
        } else {
            vec![pattern]
        };
        if found.is_empty() {
            return Err(format!("--tables {pattern}: no table matches"));
        }
        for t in found {
            if !out.contains(t) {
                out.push(t.clone());
            }
        }
    }
    // A typo here would capture a table meant to stay out: said once per run. Not
    // refused — a table excluded and later dropped must not stop the connector.
    for x in exclude.iter().filter(|x| !out.iter().any(|t| x.matches(t))) {
        tracing::warn!(exclude = %x, "--exclude-tables: no table of --tables matches it");
    }
    out.retain(|t| !exclude.iter().any(|x| x.matches(t)));
    if out.is_empty() {
        return Err("--exclude-tables leaves no table of --tables to capture".into());
    }
    Ok(out)
}

/// `--exclude-columns schema.table.column` (patterns in each part): columns left out
/// of every row image the connector writes — `before`, `after` and the row format —
/// as Debezium's `column.exclude.list`. A key column stays in the record key.
#[derive(Debug, Clone, Default)]
pub struct ColumnFilter {
    rules: Vec<(TableId, String)>,
}

impl ColumnFilter {
    pub fn parse(specs: &[String]) -> Result<ColumnFilter, String> {
        let mut rules = Vec::new();
        for spec in specs.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
            let parsed = spec
                .rsplit_once('.')
                .filter(|(_, column)| !column.is_empty())
                .and_then(|(table, column)| Some((TableId::parse(table).ok()?, column)));
            let Some((table, column)) = parsed else {
                return Err(format!(
                    "--exclude-columns {spec:?}: give schema.table.column"
                ));
            };
            rules.push((table, column.to_string()));
        }
        Ok(ColumnFilter { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn excludes(&self, table: &TableId, column: &str) -> bool {
        self.rules
            .iter()
            .any(|(t, c)| t.matches(table) && glob_match(c, column))
    }

    /// Takes the excluded columns out of `change`'s row images.
    pub fn apply(&self, change: &mut RowChange) {
        if self.rules.iter().all(|(t, _)| !t.matches(&change.table)) {
            return;
        }
        for row in [change.before.as_mut(), change.after.as_mut()]
            .into_iter()
            .flatten()
        {
            row.retain(|(name, _)| !self.excludes(&change.table, name));
        }
    }

    /// The same for every row change an event carries.
    pub fn apply_event(&self, event: &mut SourceEvent) {
        if self.is_empty() {
            return;
        }
        let changes = match event {
            SourceEvent::SnapshotRows(rows) => rows,
            SourceEvent::Transaction(txn) => &mut txn.changes,
            SourceEvent::TransactionPart { txn, .. } => &mut txn.changes,
            SourceEvent::IncrementalChunk(chunk) => &mut chunk.rows,
            _ => return,
        };
        for change in changes {
            self.apply(change);
        }
    }
}

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

/// Debezium's operation codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `c`: insert (and the new key of a primary-key change).
    Create,
    /// `u`
    Update,
    /// `d`: delete (and the old key of a primary-key change); followed by a tombstone.
    Delete,
    /// `r`: a row read by the initial snapshot.
    Read,
    /// `t`: the table was emptied (`TRUNCATE`). The change carries no key and no rows;
    /// the sink writes a tombstone for every key the table's topic holds, then a
    /// truncate marker to every partition (docs/cdc.md, "TRUNCATE").
    Truncate,
}

impl Op {
    pub fn code(self) -> &'static str {
        match self {
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Read => "r",
            Op::Truncate => "t",
        }
    }
}

/// A row: column name → JSON value, in the table's column order.
pub type Row = Vec<(Arc<str>, Value)>;

/// One row change. `key` is the primary key's columns in key order (empty for
/// [`Op::Truncate`], which names only its table).
#[derive(Debug, Clone, PartialEq)]
pub struct RowChange {
    pub table: Arc<TableId>,
    pub op: Op,
    pub key: Row,
    pub before: Option<Row>,
    pub after: Option<Row>,
}

/// A committed source transaction, with its changes in commit order.
#[derive(Debug, Clone, PartialEq)]
pub struct Transaction {
    /// Where the source's stream is once this transaction is applied (Postgres: the
    /// commit's end LSN; MariaDB: the binlog position after its commit, and GTIDs).
    pub pos: SourcePos,
    /// The source's transaction id (Postgres xid, MariaDB GTID), for `source.txId` and
    /// the `sluice.txn` header.
    pub id: String,
    /// Commit time, milliseconds since the epoch.
    pub commit_ms: i64,
    pub changes: Vec<RowChange>,
}

/// What a source produces, in stream order.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceEvent {
    /// An initial copy begins; its rows follow as [`SourceEvent::SnapshotRows`], all at
    /// `pos` (the point the stream continues from afterwards).
    SnapshotStarted {
        pos: SourcePos,
        /// Tables and their estimated row counts (for progress).
        tables: Vec<(TableId, u64)>,
    },
    /// Sent by a run before it streams or creates a slot, once the source is fenced;
    /// the source waits until the unit, at `pos`, is confirmed (`pos` is below anything
    /// the run streams: Postgres LSN 0; MariaDB the topics' position the run resumes from,
    /// or an empty one before a copy of every table). The sink marks (`Sink::mark_topics`) the topics
    /// under its prefix of tables no longer captured, so that adding one back copies it
    /// again rather than streaming on past the changes it missed; and, with
    /// `copy_pending` (a copy of every table over topics that hold rows, before the slot
    /// it copies from exists), every non-empty captured partition.
    MarkTopics { pos: SourcePos, copy_pending: bool },
    /// A copy of tables added to a running capture begins, while the other tables keep
    /// streaming: its rows follow as [`SourceEvent::SnapshotRows`], all at `pos` (the
    /// consistent point of a snapshot taken for these tables alone). The stream that
    /// follows the copy resumes from the source's confirmed position (MariaDB: the
    /// other tables' position in their topics), usually below
    /// `pos`: the added tables take only its changes after `pos` (the copy holds the
    /// rest), and nothing of the copy confirms a position to the source.
    AddedTablesCopyStarted {
        pos: SourcePos,
        /// The tables copied and their estimated row counts (for progress).
        tables: Vec<(TableId, u64)>,
    },
    /// Rows of the initial copy (`op` is [`Op::Read`]).
    SnapshotRows(Vec<RowChange>),
    /// The copy is complete.
    SnapshotDone,
    /// A committed transaction, or the last part of one that came in parts.
    Transaction(Transaction),
    /// Changes of a committed transaction too large to hold whole (`crate::spill`), in
    /// order: every part but the last, which comes as [`SourceEvent::Transaction`]
    /// with the same `pos` and `id`. Nothing else comes between the parts.
    TransactionPart {
        txn: Transaction,
        /// Tables a `TRUNCATE` anywhere in the transaction empties (the writer reads
        /// their topics' keys before the first part).
        truncated: Vec<TableId>,
        /// Held until the writer wrote the part: the source reads ahead only a few.
        permit: PartPermit,
    },
    /// The source passed `pos` with nothing captured since the last event.
    Heartbeat(SourcePos),
    /// An incremental snapshot of `table` begins (crate::incremental): the writer
    /// reads the keys its topic holds (what the pass does not write by its end gets a
    /// tombstone) and records the pass as copying. At `pos` when a signal in the stream
    /// asked for it; `None` for a pass resumed at start, after `after`.
    IncrementalStarted {
        table: TableId,
        id: String,
        pos: Option<SourcePos>,
        requested_at: String,
        after: Option<Vec<String>>,
    },
    /// Keys of rows a resumed pass copied before it was cut (read again, not written):
    /// they are no tombstone candidates.
    IncrementalKeys { table: TableId, keys: Vec<Row> },
    /// One chunk of an incremental snapshot, at its high watermark `pos`: rows still
    /// current there (those a change between the watermarks touched are already left
    /// out), written as one transaction. `last`: the table has no rows after it.
    IncrementalChunk(IncrementalChunk),
}

/// A part of a transaction in flight between the source and the writer (see
/// [`SourceEvent::TransactionPart`]): the source takes one per part from a small
/// semaphore, and it is given back when the last clone of the event is dropped.
#[derive(Debug, Clone)]
pub struct PartPermit(#[allow(dead_code)] pub(crate) Arc<tokio::sync::OwnedSemaphorePermit>);

impl PartialEq for PartPermit {
    /// Parts compare by their contents.
    fn eq(&self, _: &PartPermit) -> bool {
        true
    }
}

/// See [`SourceEvent::IncrementalChunk`].
#[derive(Debug, Clone, PartialEq)]
pub struct IncrementalChunk {
    pub table: TableId,
    pub id: String,
    pub pos: SourcePos,
    pub commit_ms: i64,
    /// `op` [`Op::Read`].
    pub rows: Vec<RowChange>,
    /// The key of the chunk's last selected row (text of the key columns), where the
    /// next chunk starts.
    pub after: Option<Vec<String>>,
    pub last: bool,
}

/// Hands an event to the writer; a writer that is gone is a source error.
pub(crate) async fn send(
    events: &tokio::sync::mpsc::Sender<SourceEvent>,
    e: SourceEvent,
) -> Result<(), crate::Error> {
    events
        .send(e)
        .await
        .map_err(|_| crate::Error::Source("the writer stopped".into()))
}

/// Rows of a copy, handed to the writer in chunks of `max` rows.
pub(crate) struct CopyChunks<'a> {
    events: &'a tokio::sync::mpsc::Sender<SourceEvent>,
    chunk: Vec<RowChange>,
    max: usize,
}

impl<'a> CopyChunks<'a> {
    pub(crate) fn new(events: &'a tokio::sync::mpsc::Sender<SourceEvent>, max: usize) -> Self {
        CopyChunks {
            events,
            chunk: Vec::with_capacity(max),
            max,
        }
    }

    /// Adds one copied row of `table`, keyed `key`; sends the chunk once it is full.
    pub(crate) async fn push(
        &mut self,
        table: Arc<TableId>,
        key: Row,
        after: Row,
    ) -> Result<(), crate::Error> {
        self.chunk.push(RowChange {
            table,
            op: Op::Read,
            key,
            before: None,
            after: Some(after),
        });
        if self.chunk.len() >= self.max {
            let full = std::mem::replace(&mut self.chunk, Vec::with_capacity(self.max));
            send(self.events, SourceEvent::SnapshotRows(full)).await?;
        }
        Ok(())
    }

    /// Sends what is left.
    pub(crate) async fn finish(self) -> Result<(), crate::Error> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        send(self.events, SourceEvent::SnapshotRows(self.chunk)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TableId {
        TableId::parse(s).unwrap()
    }

    #[test]
    fn globs_match_as_a_shell_does() {
        for (p, s, m) in [
            ("*", "", true),
            ("*", "orders", true),
            ("ord*", "orders", true),
            ("ord*", "order", true),
            ("*ers", "orders", true),
            ("o*d*s", "orders", true),
            ("o?ders", "orders", true),
            ("o?ders", "oders", false),
            ("orders", "orders2", false),
            ("*_log", "audit_log_old", false),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("Orders", "orders", false),
            ("**", "x", true),
        ] {
            assert_eq!(glob_match(p, s), m, "{p:?} against {s:?}");
        }
    }

    #[test]
    fn patterns_resolve_against_the_tables_that_exist() {
        let existing = [
            t("public.orders"),
            t("public.order_items"),
            t("public.users"),
            t("audit.orders_log"),
        ];
        let got = resolve_tables(&[t("public.order*")], &[], &existing).unwrap();
        assert_eq!(got, [t("public.orders"), t("public.order_items")]);
        // Each once, in the order given; plain names kept as given (checked later).
        let got = resolve_tables(
            &[t("public.users"), t("*.*"), t("public.missing")],
            &[t("*.*_log"), t("public.order_items")],
            &existing,
        )
        .unwrap();
        assert_eq!(
            got,
            [t("public.users"), t("public.orders"), t("public.missing")]
        );
        let e = resolve_tables(&[t("app.*")], &[], &existing).unwrap_err();
        assert_eq!(e, "--tables app.*: no table matches");
        let e = resolve_tables(&[t("public.*")], &[t("public.*")], &existing).unwrap_err();
        assert!(e.contains("leaves no table"), "{e}");
    }

    #[test]
    fn excluded_columns_leave_both_row_images_and_never_the_key() {
        let f = ColumnFilter::parse(&["public.users.pass*".into(), "*.*.secret".into()]).unwrap();
        let row = |cols: &[&str]| -> Row {
            cols.iter()
                .map(|c| (Arc::from(*c), Value::from(*c)))
                .collect()
        };
        let mut change = RowChange {
            table: Arc::new(t("public.users")),
            op: Op::Update,
            key: row(&["id", "secret"]),
            before: Some(row(&["id", "name", "password", "secret"])),
            after: Some(row(&["id", "name", "passphrase", "secret"])),
        };
        f.apply(&mut change);
        assert_eq!(change.before, Some(row(&["id", "name"])));
        assert_eq!(change.after, Some(row(&["id", "name"])));
        assert_eq!(change.key, row(&["id", "secret"]));
        let mut other = RowChange {
            table: Arc::new(t("app.users")),
            ..change.clone()
        };
        other.after = Some(row(&["id", "password", "secret"]));
        f.apply(&mut other);
        assert_eq!(other.after, Some(row(&["id", "password"])));
        for bad in ["users.password", "public.users.", "password"] {
            assert!(ColumnFilter::parse(&[bad.into()]).is_err(), "{bad}");
        }
    }
}
