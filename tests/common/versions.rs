//! Checks for CDC topics of "versioned" rows — `(id, name, version)`, every update
//! raising `version` by one —, shared by the Postgres and MariaDB tests.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

/// Rows `id, name, version`, one per line with fields split by `sep` (psql's `|`, the
/// mariadb client's TAB), as the connector writes each row's `after`.
pub fn versioned_rows(out: &str, sep: char) -> BTreeMap<i64, Value> {
    out.lines()
        .map(|l| {
            let mut it = l.split(sep);
            let id: i64 = it.next().unwrap().parse().unwrap();
            let name = it.next().unwrap();
            let version: i64 = it.next().unwrap().parse().unwrap();
            (
                id,
                serde_json::json!({"id": id, "name": name, "version": version}),
            )
        })
        .collect()
}

/// Checks a topic's change records (`(key, value)` in offset order, heartbeats left
/// out; a `None` value is a tombstone) against `rows`, the table now:
/// - after each row's last copy record (`op: r`), its versions arrive once each and in
///   order: nothing lost, nothing applied twice;
/// - the topic's last state per key is the row as the table has it (a key missing from
///   the table must end deleted).
///
/// Returns the problems found and the number of copy records.
pub fn check_versions<'a>(
    records: impl IntoIterator<Item = (&'a [u8], Option<&'a Value>)>,
    rows: &BTreeMap<i64, Value>,
) -> (Vec<String>, usize) {
    let mut last_copy: HashMap<i64, i64> = HashMap::new();
    let mut streamed: HashMap<i64, Vec<i64>> = HashMap::new();
    let mut latest: BTreeMap<Vec<u8>, Option<Value>> = BTreeMap::new();
    let mut copied = 0;
    for (key, value) in records {
        latest.insert(key.to_vec(), value.map(|v| v["after"].clone()));
        let Some(v) = value else { continue };
        let id = v["after"]["id"]
            .as_i64()
            .or(v["before"]["id"].as_i64())
            .unwrap();
        match (v["op"].as_str().unwrap(), v["after"]["version"].as_i64()) {
            ("r", Some(ver)) => {
                copied += 1;
                last_copy.insert(id, ver);
                streamed.remove(&id);
            }
            ("d", _) => {
                streamed.remove(&id);
                last_copy.remove(&id);
            }
            (_, Some(ver)) => streamed.entry(id).or_default().push(ver),
            _ => {}
        }
    }
    let mut problems = Vec::new();
    for (id, versions) in &streamed {
        let first = last_copy.get(id).copied().unwrap_or(0) + 1;
        if versions.iter().zip(first..).any(|(v, want)| *v != want) {
            problems.push(format!(
                "key {id}: versions {versions:?} after copy {:?}",
                last_copy.get(id)
            ));
        }
    }
    let ends: BTreeMap<i64, Value> = latest
        .into_values()
        .flatten()
        .filter(|after| !after.is_null())
        .map(|after| (after["id"].as_i64().unwrap(), after))
        .collect();
    let mut ids: Vec<&i64> = ends.keys().chain(rows.keys()).collect();
    ids.sort();
    ids.dedup();
    for id in ids {
        if ends.get(id) != rows.get(id) {
            problems.push(format!(
                "key {id}: the topic ends with {:?}, the table has {:?}",
                ends.get(id),
                rows.get(id)
            ));
        }
    }
    (problems, copied)
}
