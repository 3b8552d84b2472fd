//! Record keys and values: the shape Debezium's JSON converter (schemas disabled) writes,
//! so tools that read Debezium topics read these.
//!
//! Key: the primary key's columns as a JSON object in key order, `{"id":42}`.
//! Value:
//! ```json
//! {"before": {...} | null, "after": {...} | null, "op": "c|u|d|r", "ts_ms": 1700000000000,
//!  "source": {"version", "connector", "name", "db", "schema", "table", "snapshot",
//!             "txId", "ts_ms", "pos", "lsn" (Postgres) | "file", "pos_offset", "gtid" (MariaDB)},
//!  "transaction": {"id", "total_order", "data_collection_order"} | null}
//! ```
//! A delete's record is followed by a tombstone (same key, null value).
//!
//! With [`ValueFormat::Row`] (`--value-format row`, Debezium's ExtractNewRecordState
//! with its defaults) the value is the `after` object alone and a delete is the
//! tombstone alone; every record then carries the header [`FORMAT_HEADER`] `row`, so
//! readers (Tables, a restarted connector) tell the two apart record by record.

use serde_json::{json, Map, Value};
use sluice_proto::source_pos::SourcePos;

use crate::change::{Row, RowChange};

/// The header a row-format record carries (`sluice.format: row`); a record without it
/// is an envelope (every record written before the format existed is one).
pub use sluice_client::table::FORMAT_HEADER;

/// What a record's value holds (`--value-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ValueFormat {
    /// Debezium's envelope: `before`, `after`, `op`, `source`, `ts_ms`, `transaction`.
    #[default]
    Envelope,
    /// The `after` image alone, as a JSON object; a delete is only its tombstone.
    Row,
}

impl ValueFormat {
    /// The flag's spelling.
    pub fn name(self) -> &'static str {
        match self {
            ValueFormat::Envelope => "envelope",
            ValueFormat::Row => "row",
        }
    }

    /// The format a record was written in, by its headers: `sluice.format: row` is a
    /// row; no such header (or another value) an envelope.
    pub fn of_headers(headers: &[sluice_proto::Header]) -> ValueFormat {
        let row = headers
            .iter()
            .any(|h| h.key == FORMAT_HEADER && h.value.as_deref() == Some(b"row"));
        if row {
            ValueFormat::Row
        } else {
            ValueFormat::Envelope
        }
    }
}

/// Static facts about the connector that go into every `source` block.
#[derive(Debug, Clone)]
pub struct SourceInfo {
    /// `postgresql` or `mysql` (Debezium's names).
    pub connector: &'static str,
    /// The topic prefix (Debezium's logical server name).
    pub name: String,
    /// The database connected to.
    pub db: String,
}

/// The JSON object of a row, columns in table order.
pub fn row_object(row: &Row) -> Value {
    let mut m = Map::with_capacity(row.len());
    for (name, v) in row {
        m.insert(name.to_string(), v.clone());
    }
    Value::Object(m)
}

/// The record key: the key columns, in key order (serde_json's map keeps insertion
/// order only with `preserve_order`, so the object is written by hand).
pub fn key_bytes(key: &Row) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 * key.len() + 2);
    out.push(b'{');
    for (i, (name, v)) in key.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, &**name).expect("a string serializes");
        out.push(b':');
        serde_json::to_writer(&mut out, v).expect("a JSON value serializes");
    }
    out.push(b'}');
    out
}

/// Where a change sits in its transaction, for the `transaction` block.
#[derive(Debug, Clone, Copy)]
pub struct TxnOrder<'a> {
    pub id: &'a str,
    /// 1-based position among all the transaction's changes.
    pub total_order: u64,
    /// 1-based position among the transaction's changes to this table.
    pub data_collection_order: u64,
}

/// The `source` block, the same for every change of one table in one unit (a
/// transaction, a chunk of the copy): built once and copied into each value.
pub fn source_block(
    info: &SourceInfo,
    table: &crate::TableId,
    pos: &SourcePos,
    commit_ms: i64,
    txn_id: Option<&str>,
    snapshot: bool,
) -> Vec<u8> {
    let mut source = json!({
        "version": concat!("sluice-", env!("CARGO_PKG_VERSION")),
        "connector": info.connector,
        "name": info.name,
        "db": info.db,
        "schema": table.schema,
        "table": table.table,
        "snapshot": if snapshot { "true" } else { "false" },
        "txId": txn_id,
        "ts_ms": commit_ms,
        "pos": pos.to_string(),
    });
    let s = source.as_object_mut().expect("an object");
    match pos {
        SourcePos::Postgres(lsn) => {
            s.insert("lsn".into(), json!(lsn.0));
        }
        SourcePos::Mysql { binlog, gtids } => {
            s.insert("file".into(), json!(binlog.file));
            s.insert("pos_offset".into(), json!(binlog.offset));
            s.insert(
                "gtid".into(),
                if gtids.is_empty() {
                    Value::Null
                } else {
                    json!(gtids.to_string())
                },
            );
        }
    }
    serde_json::to_vec(&source).expect("a JSON value serializes")
}

/// A change's value in `format`: the envelope, or (row format) the `after` object —
/// `None` for a delete, whose tombstone is its only record.
pub fn write_change(
    format: ValueFormat,
    change: &RowChange,
    source: &[u8],
    txn: Option<TxnOrder<'_>>,
    now_ms: i64,
) -> Option<Vec<u8>> {
    match format {
        ValueFormat::Envelope => {
            let mut out = Vec::with_capacity(
                128 + source.len() + 24 * change.after.as_ref().map_or(0, |r| r.len()),
            );
            write_value(&mut out, change, source, txn, now_ms);
            Some(out)
        }
        ValueFormat::Row => {
            let after = change.after.as_ref()?;
            let mut out = Vec::with_capacity(2 + 24 * after.len());
            write_row(&mut out, Some(after));
            Some(out)
        }
    }
}

fn write_row(out: &mut Vec<u8>, row: Option<&Row>) {
    let Some(row) = row else {
        out.extend_from_slice(b"null");
        return;
    };
    out.push(b'{');
    for (i, (name, v)) in row.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, &**name).expect("a string serializes");
        out.push(b':');
        serde_json::to_writer(&mut *out, v).expect("a JSON value serializes");
    }
    out.push(b'}');
}

/// The record value of a change, written straight to bytes (no JSON tree per row)
/// around a prebuilt [`source_block`].
pub fn write_value(
    out: &mut Vec<u8>,
    change: &RowChange,
    source: &[u8],
    txn: Option<TxnOrder<'_>>,
    now_ms: i64,
) {
    out.extend_from_slice(b"{\"before\":");
    write_row(out, change.before.as_ref());
    out.extend_from_slice(b",\"after\":");
    write_row(out, change.after.as_ref());
    out.extend_from_slice(b",\"source\":");
    out.extend_from_slice(source);
    out.extend_from_slice(b",\"op\":\"");
    out.extend_from_slice(change.op.code().as_bytes());
    out.extend_from_slice(b"\",\"ts_ms\":");
    out.extend_from_slice(now_ms.to_string().as_bytes());
    out.extend_from_slice(b",\"transaction\":");
    match txn {
        None => out.extend_from_slice(b"null"),
        Some(t) => {
            out.extend_from_slice(b"{\"id\":");
            serde_json::to_writer(&mut *out, t.id).expect("a string serializes");
            out.extend_from_slice(
                format!(
                    ",\"total_order\":{},\"data_collection_order\":{}}}",
                    t.total_order, t.data_collection_order
                )
                .as_bytes(),
            );
        }
    }
    out.push(b'}');
}

/// The record value of a change (one-off: builds its own `source` block).
pub fn value_bytes(
    info: &SourceInfo,
    change: &RowChange,
    pos: &SourcePos,
    commit_ms: i64,
    txn: Option<TxnOrder<'_>>,
    now_ms: i64,
) -> Vec<u8> {
    let snapshot = txn.is_none() && change.op == crate::Op::Read;
    let source = source_block(
        info,
        &change.table,
        pos,
        commit_ms,
        txn.map(|t| t.id),
        snapshot,
    );
    let mut out = Vec::with_capacity(256 + source.len());
    write_value(&mut out, change, &source, txn, now_ms);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{Op, TableId};
    use std::sync::Arc;

    #[test]
    fn keys_keep_key_order_and_values_have_debeziums_shape() {
        let key: Row = vec![("b".into(), json!(2)), ("a".into(), json!("x\"y"))];
        assert_eq!(key_bytes(&key), br#"{"b":2,"a":"x\"y"}"#.to_vec());
        let change = RowChange {
            table: Arc::new(TableId::parse("public.users").unwrap()),
            op: Op::Update,
            key: key.clone(),
            before: Some(vec![("id".into(), json!(1)), ("n".into(), json!("old"))]),
            after: Some(vec![("id".into(), json!(1)), ("n".into(), json!("new"))]),
        };
        let info = SourceInfo {
            connector: "postgresql",
            name: "cdc".into(),
            db: "app".into(),
        };
        let pos: SourcePos = "pg:0/10".parse().unwrap();
        let order = TxnOrder {
            id: "77",
            total_order: 1,
            data_collection_order: 1,
        };
        let v: Value =
            serde_json::from_slice(&value_bytes(&info, &change, &pos, 5, Some(order), 9)).unwrap();
        assert_eq!(v["op"], "u");
        assert_eq!(v["before"]["n"], "old");
        assert_eq!(v["after"]["n"], "new");
        assert_eq!(v["source"]["table"], "users");
        assert_eq!(v["source"]["lsn"], 16);
        assert_eq!(v["source"]["txId"], "77");
        assert_eq!(v["source"]["snapshot"], "false");
        assert_eq!(v["transaction"]["total_order"], 1);
        assert_eq!(v["ts_ms"], 9);
        // The same through a JSON tree: the hand-written bytes are valid JSON with the
        // same content.
        let tree = json!({
            "before": row_object(change.before.as_ref().unwrap()),
            "after": row_object(change.after.as_ref().unwrap()),
        });
        assert_eq!(v["before"], tree["before"]);
        assert_eq!(v["after"], tree["after"]);
        let read = RowChange {
            op: Op::Read,
            before: None,
            ..change
        };
        let v: Value =
            serde_json::from_slice(&value_bytes(&info, &read, &pos, 5, None, 9)).unwrap();
        assert_eq!((v["op"].as_str(), v["before"].is_null()), (Some("r"), true));
        assert_eq!(v["source"]["snapshot"], "true");
        assert!(v["transaction"].is_null());
    }

    #[test]
    fn the_row_format_is_the_after_object_and_nothing_for_a_delete() {
        let table = Arc::new(TableId::parse("public.users").unwrap());
        let row: Row = vec![("id".into(), json!(1)), ("n".into(), json!("a\"b"))];
        let change = |op, before: Option<Row>, after: Option<Row>| RowChange {
            table: table.clone(),
            op,
            key: vec![("id".into(), json!(1))],
            before,
            after,
        };
        let update = change(Op::Update, Some(row.clone()), Some(row.clone()));
        assert_eq!(
            write_change(ValueFormat::Row, &update, b"", None, 9),
            Some(br#"{"id":1,"n":"a\"b"}"#.to_vec())
        );
        let delete = change(Op::Delete, Some(row.clone()), None);
        assert_eq!(write_change(ValueFormat::Row, &delete, b"", None, 9), None);
        // The envelope keeps its delete record.
        let v = write_change(ValueFormat::Envelope, &delete, b"{}", None, 9).unwrap();
        let v: Value = serde_json::from_slice(&v).unwrap();
        assert_eq!((v["op"].as_str(), v["after"].is_null()), (Some("d"), true));
        // Which format a record is in, by its headers.
        let h = |k: &str, v: &'static [u8]| sluice_proto::Header {
            key: k.into(),
            value: Some(bytes::Bytes::from_static(v)),
        };
        assert_eq!(ValueFormat::of_headers(&[]), ValueFormat::Envelope);
        assert_eq!(
            ValueFormat::of_headers(&[h("sluice.pos", b"pg:0/1#0"), h(FORMAT_HEADER, b"row")]),
            ValueFormat::Row
        );
        assert_eq!(
            ValueFormat::of_headers(&[h(FORMAT_HEADER, b"avro")]),
            ValueFormat::Envelope
        );
    }
}
