//! [`Table<K, V>`]: a [`RawTable`] whose keys and values are JSON (serde). Values are
//! stored raw and decoded on each read, so bootstrap never decodes and memory holds
//! only the bytes. A key is looked up by its JSON encoding (`serde_json::to_vec`), so
//! it must serialize to exactly the bytes the producer wrote (CDC writes compact JSON
//! objects in column order, which a struct with the same field order reproduces).

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{PosRequest, RawTable, SourcePos, TableConfig};
use crate::{ClientConfig, Error};

/// A table of typed rows over one topic.
pub struct Table<K, V> {
    raw: RawTable,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for Table<K, V> {
    fn clone(&self) -> Self {
        Table {
            raw: self.raw.clone(),
            _types: PhantomData,
        }
    }
}

fn decode_error(topic: &str, what: &str, e: serde_json::Error) -> Error {
    Error::Invalid(format!("{topic}: {what} is not the expected JSON: {e}"))
}

impl<K: Serialize + DeserializeOwned, V: DeserializeOwned> Table<K, V> {
    /// See [`RawTable::open`].
    pub async fn open(
        client: &ClientConfig,
        topic: &str,
        config: TableConfig,
    ) -> Result<Table<K, V>, Error> {
        Ok(Table::from_raw(
            RawTable::open(client, topic, config).await?,
        ))
    }

    /// See [`RawTable::open_with_snapshot`].
    pub async fn open_with_snapshot(
        client: &ClientConfig,
        topic: &str,
        config: TableConfig,
        dir: &Path,
    ) -> Result<Table<K, V>, Error> {
        Ok(Table::from_raw(
            RawTable::open_with_snapshot(client, topic, config, dir).await?,
        ))
    }

    /// Typed access to a raw table (e.g. one of a [`super::TableSet`]).
    pub fn from_raw(raw: RawTable) -> Table<K, V> {
        Table {
            raw,
            _types: PhantomData,
        }
    }

    pub fn raw(&self) -> &RawTable {
        &self.raw
    }

    pub async fn ready(&self) -> Result<(), Error> {
        self.raw.ready().await
    }

    pub fn is_ready(&self) -> bool {
        self.raw.is_ready()
    }

    /// The value of `key`, decoded; `None` when absent or when the stored value is
    /// not a `V` (see [`Table::try_get`] for the reason).
    pub fn get(&self, key: &K) -> Option<V> {
        self.try_get(key).ok().flatten()
    }

    /// The value of `key`, or why it could not be decoded.
    pub fn try_get(&self, key: &K) -> Result<Option<V>, Error> {
        let k = serde_json::to_vec(key)
            .map_err(|e| Error::Invalid(format!("key does not serialize to JSON: {e}")))?;
        match self.raw.get(&k) {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| decode_error(self.raw.topic(), "value", e)),
        }
    }

    pub fn len(&self) -> usize {
        self.raw.len()
    }

    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Every row that decodes, from one consistent snapshot; rows that do not decode
    /// are skipped (see [`Table::try_iter`]).
    pub fn iter(&self) -> Vec<(K, V)> {
        let mut out = Vec::with_capacity(self.len());
        self.raw.for_each(|k, v| {
            if let (Ok(k), Ok(v)) = (serde_json::from_slice(k), serde_json::from_slice(v)) {
                out.push((k, v));
            }
        });
        out
    }

    /// Every row, from one consistent snapshot; an error names the first row that
    /// does not decode.
    pub fn try_iter(&self) -> Result<Vec<(K, V)>, Error> {
        let mut raw = Vec::with_capacity(self.len());
        self.raw.for_each(|k, v| raw.push((k.to_vec(), v.to_vec())));
        let topic = self.raw.topic();
        raw.into_iter()
            .map(|(k, v)| {
                Ok((
                    serde_json::from_slice(&k).map_err(|e| decode_error(topic, "key", e))?,
                    serde_json::from_slice(&v).map_err(|e| decode_error(topic, "value", e))?,
                ))
            })
            .collect()
    }

    pub fn position(&self) -> BTreeMap<u32, u64> {
        self.raw.position()
    }

    pub async fn wait_for(&self, offsets: &[(u32, u64)], timeout: Duration) -> Result<(), Error> {
        self.raw.wait_for(offsets, timeout).await
    }

    /// See [`RawTable::source_position`].
    pub fn source_position(&self) -> Option<SourcePos> {
        self.raw.source_position()
    }

    /// See [`RawTable::wait_for_source`].
    pub async fn wait_for_source(
        &self,
        request: &PosRequest,
        timeout: Duration,
    ) -> Result<(), Error> {
        self.raw.wait_for_source(request, timeout).await
    }

    /// Raw change sets (keys and values as bytes, as stored).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<std::sync::Arc<super::ChangeSet>> {
        self.raw.subscribe()
    }

    pub fn stats(&self) -> super::TableStats {
        self.raw.stats()
    }

    pub fn close(&self) {
        self.raw.close()
    }
}
