//! Kafka RecordBatch v2 (magic 2), byte for byte.
//!
//! ```text
//! offset  size  field
//!      0     8  base_offset            (stamped by the leader; outside the CRC)
//!      8     4  batch_length           (bytes after this field)
//!     12     4  partition_leader_epoch (stamped by the leader; outside the CRC)
//!     16     1  magic = 2
//!     17     4  crc                    (CRC-32C of bytes 21..end)
//!     21     2  attributes             (bits 0-2 codec, 3 timestamp type, 4 transactional, 5 control)
//!     23     4  last_offset_delta
//!     27     8  base_timestamp
//!     35     8  max_timestamp
//!     43     8  producer_id
//!     51     2  producer_epoch
//!     53     4  base_sequence
//!     57     4  record_count
//!     61     -  records (compressed as a whole when the codec is not none)
//! ```
//!
//! Each record: varint length, then attributes (i8), varlong timestamp delta, varint
//! offset delta, varint key length (-1 = null) and key, varint value length and value,
//! varint header count and headers (varint key length, UTF-8 key, varint value length, value).
//!
//! A [`RecordBatch`] always holds exactly one batch whose length, magic and CRC have
//! been checked; [`RecordBatch::validate`] additionally walks every record. Nothing here
//! panics on input: every malformation is a [`BatchError`].

use bytes::Bytes;

use crate::compression::{Compression, CompressionError};
use crate::limits::{
    BATCH_BYTES_MAX, BATCH_HEADER_BYTES, LOG_OVERHEAD_BYTES, RECORD_BYTES_MIN,
    UNCOMPRESSED_BATCH_BYTES_MAX,
};
use crate::varint::{self, VarintError};

const LENGTH_AT: usize = 8;
const LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORD_COUNT_AT: usize = 57;

const CODEC_MASK: u16 = 0x07;
const TIMESTAMP_TYPE_BIT: u16 = 0x08;
const TRANSACTIONAL_BIT: u16 = 0x10;
const CONTROL_BIT: u16 = 0x20;

/// The only magic this codec reads or writes.
pub const MAGIC_V2: i8 = 2;

/// Whether record timestamps were set by the producer or by the broker on append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestampType {
    #[default]
    CreateTime,
    LogAppendTime,
}

/// Why bytes are not a valid record batch. Each variant names what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("batch truncated: need {needed} bytes, have {available}")]
    Truncated { needed: usize, available: usize },
    #[error("batch_length {batch_length} is impossible (min {min}, max {max})")]
    BadLength {
        batch_length: i64,
        min: usize,
        max: usize,
    },
    #[error("unsupported magic {magic}: only RecordBatch v2 (magic 2) is accepted")]
    BadMagic { magic: i8 },
    #[error("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadCrc { stored: u32, computed: u32 },
    #[error(transparent)]
    Compression(#[from] CompressionError),
    #[error("record count {declared} is impossible for {bytes} bytes of records")]
    BadRecordCount { declared: i32, bytes: usize },
    #[error("record {index}: {reason}")]
    BadRecord { index: usize, reason: String },
    #[error("record {index}: offset delta {found} does not follow {previous}")]
    OffsetDeltaOutOfOrder {
        index: usize,
        previous: i64,
        found: i32,
    },
    #[error("last_offset_delta is {declared} but the last record has delta {found}")]
    LastOffsetDeltaMismatch { declared: i32, found: i32 },
    #[error("{bytes} bytes follow the last declared record")]
    TrailingBytes { bytes: usize },
    #[error("a produced batch must carry at least one record")]
    Empty,
}

impl BatchError {
    fn record(index: usize, reason: impl Into<String>) -> BatchError {
        BatchError::BadRecord {
            index,
            reason: reason.into(),
        }
    }
}

/// One record header. Kafka requires header keys to be UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub key: String,
    pub value: Option<Bytes>,
}

/// One decoded record. Offsets and timestamps are deltas from the batch's base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset_delta: i32,
    pub timestamp_delta: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

/// How strictly [`RecordBatch::validate`] checks the records.
#[derive(Debug, Clone, Copy)]
pub struct ValidateOptions {
    /// Bound on the inflated size of a compressed batch.
    pub uncompressed_bytes_max: usize,
    /// Require offset deltas 0, 1, 2, … and at least one record, as a producer must
    /// send them. Batches read back from a compacted log may have gaps.
    pub from_producer: bool,
}

impl Default for ValidateOptions {
    fn default() -> Self {
        ValidateOptions {
            uncompressed_bytes_max: UNCOMPRESSED_BATCH_BYTES_MAX,
            from_producer: true,
        }
    }
}

/// What [`RecordBatch::validate`] learned while walking the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordsSummary {
    pub record_count: u32,
    /// Largest `base_timestamp + timestamp_delta` over the records.
    pub max_timestamp: Option<i64>,
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Checks the length and magic of the batch at the start of `buf` without reading the
/// CRC, and returns the batch's total size. Used to walk a log file batch by batch.
pub fn batch_size(buf: &[u8]) -> Result<usize, BatchError> {
    if buf.len() < BATCH_HEADER_BYTES {
        return Err(BatchError::Truncated {
            needed: BATCH_HEADER_BYTES,
            available: buf.len(),
        });
    }
    let batch_length = be_i32(buf, LENGTH_AT) as i64;
    let min = BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES;
    let max = BATCH_BYTES_MAX - LOG_OVERHEAD_BYTES;
    if batch_length < min as i64 || batch_length > max as i64 {
        return Err(BatchError::BadLength {
            batch_length,
            min,
            max,
        });
    }
    let magic = buf[MAGIC_AT] as i8;
    if magic != MAGIC_V2 {
        return Err(BatchError::BadMagic { magic });
    }
    let total = LOG_OVERHEAD_BYTES + batch_length as usize;
    if buf.len() < total {
        return Err(BatchError::Truncated {
            needed: total,
            available: buf.len(),
        });
    }
    Ok(total)
}

/// CRC-32C of a batch's checksummed bytes (attributes to end). `buf` is one whole batch.
fn compute_crc(buf: &[u8]) -> u32 {
    crc32c::crc32c(&buf[ATTRIBUTES_AT..])
}

/// Writes the two fields a leader assigns, which lie outside the CRC.
pub fn stamp(buf: &mut [u8], base_offset: i64, partition_leader_epoch: i32) {
    buf[..8].copy_from_slice(&base_offset.to_be_bytes());
    buf[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4]
        .copy_from_slice(&partition_leader_epoch.to_be_bytes());
}

/// Marks a batch as broker-timestamped (`message.timestamp.type=LogAppendTime`): sets
/// the timestamp-type bit and `max_timestamp`, then recomputes the CRC they are under.
pub fn set_log_append_time(buf: &mut [u8], timestamp: i64) {
    let (header, records) = buf.split_at_mut(BATCH_HEADER_BYTES);
    set_log_append_time_header(header, timestamp, records);
}

/// [`set_log_append_time`] for a batch held as a separate header (the first
/// [`BATCH_HEADER_BYTES`]) and records, so the records need not be copied.
pub fn set_log_append_time_header(header: &mut [u8], timestamp: i64, records: &[u8]) {
    let attrs = be_i16(header, ATTRIBUTES_AT) as u16 | TIMESTAMP_TYPE_BIT;
    header[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attrs.to_be_bytes());
    header[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&timestamp.to_be_bytes());
    let crc = crc32c::crc32c_append(
        crc32c::crc32c(&header[ATTRIBUTES_AT..BATCH_HEADER_BYTES]),
        records,
    );
    header[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Exactly one record batch whose length, magic and CRC are known to be good (the CRC
/// unless it was taken with [`RecordBatch::from_bytes_check_crc`] and the check off).
#[derive(Clone, PartialEq, Eq)]
pub struct RecordBatch {
    /// Invariant: `buf.len() == batch_size(&buf)` and the CRC matches (unless taken
    /// with the CRC check off).
    buf: Bytes,
}

impl std::fmt::Debug for RecordBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordBatch")
            .field("base_offset", &self.base_offset())
            .field("last_offset_delta", &self.last_offset_delta())
            .field("record_count", &self.record_count())
            .field("bytes", &self.buf.len())
            .finish()
    }
}

impl RecordBatch {
    /// Checks `buf` holds exactly one batch with a good CRC.
    pub fn from_bytes(buf: Bytes) -> Result<RecordBatch, BatchError> {
        RecordBatch::from_bytes_check_crc(buf, true)
    }

    /// [`RecordBatch::from_bytes`], reading the CRC only when `check_crc` is true
    /// (a consumer's `check.crcs`): length and magic are always checked, and so are the
    /// records when decoded, but a batch taken without the check may hold bytes that
    /// changed after its producer computed the CRC.
    pub fn from_bytes_check_crc(buf: Bytes, check_crc: bool) -> Result<RecordBatch, BatchError> {
        let size = batch_size(&buf)?;
        if size != buf.len() {
            return Err(BatchError::TrailingBytes {
                bytes: buf.len() - size,
            });
        }
        if check_crc {
            let stored = be_i32(&buf, CRC_AT) as u32;
            let computed = compute_crc(&buf);
            if stored != computed {
                return Err(BatchError::BadCrc { stored, computed });
            }
        }
        Ok(RecordBatch { buf })
    }

    /// Splits the first batch off `buf`, returning it and the rest.
    pub fn split_first(buf: &Bytes) -> Result<(RecordBatch, Bytes), BatchError> {
        RecordBatch::split_first_check_crc(buf, true)
    }

    /// [`RecordBatch::split_first`], reading the CRC only when `check_crc` is true.
    pub fn split_first_check_crc(
        buf: &Bytes,
        check_crc: bool,
    ) -> Result<(RecordBatch, Bytes), BatchError> {
        let size = batch_size(buf)?;
        Ok((
            RecordBatch::from_bytes_check_crc(buf.slice(..size), check_crc)?,
            buf.slice(size..),
        ))
    }

    pub fn as_bytes(&self) -> &Bytes {
        &self.buf
    }
    pub fn into_bytes(self) -> Bytes {
        self.buf
    }
    /// Total size in bytes, header included.
    pub fn size(&self) -> usize {
        self.buf.len()
    }
    pub fn base_offset(&self) -> i64 {
        be_i64(&self.buf, 0)
    }
    /// Offset of the last record, inclusive.
    pub fn last_offset(&self) -> i64 {
        self.base_offset() + i64::from(self.last_offset_delta())
    }
    /// The offset after this batch (exclusive end).
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }
    pub fn partition_leader_epoch(&self) -> i32 {
        be_i32(&self.buf, LEADER_EPOCH_AT)
    }
    pub fn crc(&self) -> u32 {
        be_i32(&self.buf, CRC_AT) as u32
    }
    pub fn attributes(&self) -> u16 {
        be_i16(&self.buf, ATTRIBUTES_AT) as u16
    }
    /// The codec, or an error for the reserved ids 5..=7.
    pub fn compression(&self) -> Result<Compression, CompressionError> {
        Compression::from_id((self.attributes() & CODEC_MASK) as u8)
    }
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes() & TIMESTAMP_TYPE_BIT != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes() & TRANSACTIONAL_BIT != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes() & CONTROL_BIT != 0
    }
    pub fn last_offset_delta(&self) -> i32 {
        be_i32(&self.buf, LAST_OFFSET_DELTA_AT)
    }
    pub fn base_timestamp(&self) -> i64 {
        be_i64(&self.buf, BASE_TIMESTAMP_AT)
    }
    pub fn max_timestamp(&self) -> i64 {
        be_i64(&self.buf, MAX_TIMESTAMP_AT)
    }
    pub fn producer_id(&self) -> i64 {
        be_i64(&self.buf, PRODUCER_ID_AT)
    }
    pub fn producer_epoch(&self) -> i16 {
        be_i16(&self.buf, PRODUCER_EPOCH_AT)
    }
    pub fn base_sequence(&self) -> i32 {
        be_i32(&self.buf, BASE_SEQUENCE_AT)
    }
    /// The declared count; trust it only after [`RecordBatch::validate`].
    pub fn record_count(&self) -> i32 {
        be_i32(&self.buf, RECORD_COUNT_AT)
    }

    /// The record bytes, inflated when the batch is compressed.
    fn records_data(&self, uncompressed_bytes_max: usize) -> Result<Bytes, BatchError> {
        let raw = self.buf.slice(BATCH_HEADER_BYTES..);
        match self.compression()? {
            Compression::None => Ok(raw),
            codec => Ok(Bytes::from(codec.decompress(&raw, uncompressed_bytes_max)?)),
        }
    }

    /// Walks every record: counts, lengths, varints, offset deltas, header keys.
    pub fn validate(&self, opts: &ValidateOptions) -> Result<RecordsSummary, BatchError> {
        let data = self.records_data(opts.uncompressed_bytes_max)?;
        let mut summary = RecordsSummary {
            record_count: 0,
            max_timestamp: None,
        };
        let base_ts = self.base_timestamp();
        self.walk(&data, opts.from_producer, |view| {
            summary.record_count += 1;
            let ts = base_ts.wrapping_add(view.timestamp_delta);
            summary.max_timestamp = Some(summary.max_timestamp.map_or(ts, |m| m.max(ts)));
            Ok(())
        })?;
        Ok(summary)
    }

    /// Decodes every record. Keys and values share the batch's memory when uncompressed.
    pub fn records(&self) -> Result<Vec<Record>, BatchError> {
        let data = self.records_data(UNCOMPRESSED_BATCH_BYTES_MAX)?;
        let mut out = Vec::new();
        self.walk(&data, false, |view| {
            out.push(view.to_record(&data)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// [`RecordBatch::records`] without collecting them: `visit` gets each record as it
    /// is decoded, so a caller building its own records allocates no `Vec<Record>`.
    pub fn for_each_record(&self, mut visit: impl FnMut(Record)) -> Result<(), BatchError> {
        let data = self.records_data(UNCOMPRESSED_BATCH_BYTES_MAX)?;
        self.walk(&data, false, |view| {
            visit(view.to_record(&data)?);
            Ok(())
        })
    }

    fn walk<'a>(
        &self,
        data: &'a [u8],
        from_producer: bool,
        mut visit: impl FnMut(RecordView<'a>) -> Result<(), BatchError>,
    ) -> Result<(), BatchError> {
        let declared = self.record_count();
        if declared < 0 || declared as usize > data.len() / RECORD_BYTES_MIN {
            return Err(BatchError::BadRecordCount {
                declared,
                bytes: data.len(),
            });
        }
        if from_producer && declared == 0 {
            return Err(BatchError::Empty);
        }
        let mut pos = 0usize;
        let mut previous: i64 = -1;
        for index in 0..declared as usize {
            let view = RecordView::parse(data, &mut pos, index)?;
            let delta = view.offset_delta;
            let in_order = if from_producer {
                i64::from(delta) == previous + 1
            } else {
                i64::from(delta) > previous
            };
            if !in_order {
                return Err(BatchError::OffsetDeltaOutOfOrder {
                    index,
                    previous,
                    found: delta,
                });
            }
            previous = i64::from(delta);
            visit(view)?;
        }
        if pos != data.len() {
            return Err(BatchError::TrailingBytes {
                bytes: data.len() - pos,
            });
        }
        // A compacted batch keeps its last offset delta after its last records went,
        // so only a producer's batch must end exactly there.
        let last = i64::from(self.last_offset_delta());
        if declared > 0 && (previous > last || (from_producer && previous != last)) {
            return Err(BatchError::LastOffsetDeltaMismatch {
                declared: self.last_offset_delta(),
                found: previous as i32,
            });
        }
        Ok(())
    }
}

/// A record parsed in place, borrowing the records bytes.
struct RecordView<'a> {
    /// Bytes of the record in the records data, its length prefix included.
    encoded_len: usize,
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    headers: Vec<(&'a str, Option<&'a [u8]>)>,
}

fn take<'a>(
    rec: &'a [u8],
    pos: &mut usize,
    len: i32,
    index: usize,
    what: &str,
) -> Result<Option<&'a [u8]>, BatchError> {
    if len == -1 {
        return Ok(None);
    }
    if len < -1 {
        return Err(BatchError::record(
            index,
            format!("negative {what} length {len}"),
        ));
    }
    let end = pos
        .checked_add(len as usize)
        .filter(|&e| e <= rec.len())
        .ok_or_else(|| {
            BatchError::record(index, format!("{what} length {len} runs past the record"))
        })?;
    let out = &rec[*pos..end];
    *pos = end;
    Ok(Some(out))
}

impl<'a> RecordView<'a> {
    fn parse(data: &'a [u8], pos: &mut usize, index: usize) -> Result<RecordView<'a>, BatchError> {
        let v = |e: VarintError| BatchError::record(index, e.to_string());
        let start = *pos;
        let len = varint::read_varint(data, pos).map_err(v)?;
        if len < 0 || (len as usize) > data.len() - *pos {
            return Err(BatchError::record(
                index,
                format!("length {len} runs past the batch"),
            ));
        }
        let rec = &data[*pos..*pos + len as usize];
        *pos += len as usize;
        let mut p = 0usize;
        if rec.is_empty() {
            return Err(BatchError::record(index, "empty record"));
        }
        p += 1; // record attributes: unused in v2
        let timestamp_delta = varint::read_varlong(rec, &mut p).map_err(v)?;
        let offset_delta = varint::read_varint(rec, &mut p).map_err(v)?;
        let key_len = varint::read_varint(rec, &mut p).map_err(v)?;
        let key = take(rec, &mut p, key_len, index, "key")?;
        let value_len = varint::read_varint(rec, &mut p).map_err(v)?;
        let value = take(rec, &mut p, value_len, index, "value")?;
        let header_count = varint::read_varint(rec, &mut p).map_err(v)?;
        if header_count < 0 || header_count as usize > rec.len() - p {
            return Err(BatchError::record(
                index,
                format!("impossible header count {header_count}"),
            ));
        }
        let mut headers = Vec::with_capacity(header_count as usize);
        for _ in 0..header_count {
            let klen = varint::read_varint(rec, &mut p).map_err(v)?;
            let key = take(rec, &mut p, klen, index, "header key")?
                .ok_or_else(|| BatchError::record(index, "null header key"))?;
            let key = std::str::from_utf8(key)
                .map_err(|_| BatchError::record(index, "header key is not UTF-8"))?;
            let vlen = varint::read_varint(rec, &mut p).map_err(v)?;
            headers.push((key, take(rec, &mut p, vlen, index, "header value")?));
        }
        if p != rec.len() {
            return Err(BatchError::record(
                index,
                format!("{} bytes past the last header", rec.len() - p),
            ));
        }
        Ok(RecordView {
            encoded_len: *pos - start,
            timestamp_delta,
            offset_delta,
            key,
            value,
            headers,
        })
    }

    fn to_record(&self, data: &Bytes) -> Result<Record, BatchError> {
        let slice = |s: Option<&[u8]>| s.map(|s| data.slice_ref(s));
        Ok(Record {
            offset_delta: self.offset_delta,
            timestamp_delta: self.timestamp_delta,
            key: slice(self.key),
            value: slice(self.value),
            headers: self
                .headers
                .iter()
                .map(|(k, v)| Header {
                    key: (*k).to_owned(),
                    value: slice(*v),
                })
                .collect(),
        })
    }
}

/// Builds one batch, record by record. Offset deltas are 0, 1, 2, …; the base
/// timestamp is the first record's. Base offset and leader epoch are left for the
/// leader to stamp.
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    compression: Compression,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    transactional: bool,
    control: bool,
    base_timestamp: Option<i64>,
    max_timestamp: i64,
    count: i32,
    records: Vec<u8>,
}

impl BatchBuilder {
    pub fn new(compression: Compression) -> BatchBuilder {
        BatchBuilder {
            compression,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            transactional: false,
            control: false,
            base_timestamp: None,
            max_timestamp: -1,
            count: 0,
            records: vec![0; BATCH_HEADER_BYTES],
        }
    }

    /// A builder whose buffer starts with room for `bytes` of records, so a batch that
    /// is filled up to a known size never reallocates.
    pub fn with_capacity(compression: Compression, bytes: usize) -> BatchBuilder {
        let mut b = BatchBuilder::new(compression);
        b.records.reserve(bytes);
        b
    }

    /// [`BatchBuilder::with_capacity`] reusing `buf` (its contents are discarded): a
    /// producer recycles the buffers of batches already sent, so a new batch writes to
    /// memory that is already mapped rather than page-faulting on fresh pages.
    pub fn with_buffer(compression: Compression, mut buf: Vec<u8>, bytes: usize) -> BatchBuilder {
        buf.clear();
        buf.resize(BATCH_HEADER_BYTES, 0);
        buf.reserve(bytes);
        BatchBuilder {
            records: buf,
            ..BatchBuilder::new(compression)
        }
    }

    /// Idempotent producer fields (`-1` everywhere for a plain producer).
    pub fn producer(mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }
    /// [`BatchBuilder::producer`] on a builder already holding records.
    pub fn set_producer(&mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
    }
    pub fn transactional(mut self, yes: bool) -> Self {
        self.transactional = yes;
        self
    }
    pub fn control(mut self, yes: bool) -> Self {
        self.control = yes;
        self
    }
    pub fn len(&self) -> usize {
        self.count as usize
    }
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    /// Size of the batch if built now without compression.
    pub fn uncompressed_size(&self) -> usize {
        self.records.len()
    }

    /// Appends one record.
    pub fn append(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
    ) {
        let base = *self.base_timestamp.get_or_insert(timestamp);
        self.max_timestamp = self.max_timestamp.max(timestamp);
        let ts_delta = timestamp.wrapping_sub(base);
        let opt_len = |b: Option<&[u8]>| b.map_or(-1, |b| b.len() as i32);
        let opt_size = |b: Option<&[u8]>| varint::varint_len(opt_len(b)) + b.map_or(0, |b| b.len());
        let mut body = 1
            + varint::varlong_len(ts_delta)
            + varint::varint_len(self.count)
            + opt_size(key)
            + opt_size(value)
            + varint::varint_len(headers.len() as i32);
        for h in headers {
            body += opt_size(Some(h.key.as_bytes())) + opt_size(h.value.as_deref());
        }
        let out = &mut self.records;
        out.reserve(body + 5);
        varint::write_varint(out, body as i32);
        out.push(0);
        varint::write_varlong(out, ts_delta);
        varint::write_varint(out, self.count);
        let put = |out: &mut Vec<u8>, b: Option<&[u8]>| {
            varint::write_varint(out, opt_len(b));
            if let Some(b) = b {
                out.extend_from_slice(b);
            }
        };
        put(out, key);
        put(out, value);
        varint::write_varint(out, headers.len() as i32);
        for h in headers {
            put(out, Some(h.key.as_bytes()));
            put(out, h.value.as_deref());
        }
        self.count += 1;
    }

    /// Encodes the batch with base offset 0 and leader epoch -1 ("not yet stamped").
    pub fn build(self) -> Result<RecordBatch, BatchError> {
        // `records` starts with room for the header, so an uncompressed batch is
        // built in place, without copying the records.
        let mut buf = if self.compression == Compression::None {
            self.records
        } else {
            let mut compressed = Vec::with_capacity(self.records.len() / 2 + 64);
            compressed.resize(BATCH_HEADER_BYTES, 0);
            self.compression
                .compress(&self.records[BATCH_HEADER_BYTES..], &mut compressed)?;
            compressed
        };
        let total = buf.len();
        if total > BATCH_BYTES_MAX {
            return Err(BatchError::BadLength {
                batch_length: (total - LOG_OVERHEAD_BYTES) as i64,
                min: BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES,
                max: BATCH_BYTES_MAX - LOG_OVERHEAD_BYTES,
            });
        }
        let mut attrs = u16::from(self.compression.id());
        if self.transactional {
            attrs |= TRANSACTIONAL_BIT;
        }
        if self.control {
            attrs |= CONTROL_BIT;
        }
        let b = &mut buf[..];
        b[LENGTH_AT..LENGTH_AT + 4]
            .copy_from_slice(&((total - LOG_OVERHEAD_BYTES) as i32).to_be_bytes());
        b[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4].copy_from_slice(&(-1i32).to_be_bytes());
        b[MAGIC_AT] = MAGIC_V2 as u8;
        b[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attrs.to_be_bytes());
        b[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4]
            .copy_from_slice(&(self.count - 1).max(0).to_be_bytes());
        let base_ts = self.base_timestamp.unwrap_or(-1);
        b[BASE_TIMESTAMP_AT..BASE_TIMESTAMP_AT + 8].copy_from_slice(&base_ts.to_be_bytes());
        b[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8]
            .copy_from_slice(&self.max_timestamp.to_be_bytes());
        b[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&self.producer_id.to_be_bytes());
        b[PRODUCER_EPOCH_AT..PRODUCER_EPOCH_AT + 2]
            .copy_from_slice(&self.producer_epoch.to_be_bytes());
        b[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4]
            .copy_from_slice(&self.base_sequence.to_be_bytes());
        b[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&self.count.to_be_bytes());
        let crc = compute_crc(b);
        b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        Ok(RecordBatch {
            buf: Bytes::from(buf),
        })
    }
}

/// Iterates the batches of a buffer holding several back to back (a fetch response, a
/// log read). Stops with an error at the first bad batch.
pub struct Batches {
    rest: Bytes,
    check_crc: bool,
}

impl Batches {
    pub fn new(buf: Bytes) -> Batches {
        Batches::check_crc(buf, true)
    }

    /// Reads each batch's CRC only when `check_crc` is true (a consumer's `check.crcs`;
    /// see [`RecordBatch::from_bytes_check_crc`]).
    pub fn check_crc(buf: Bytes, check_crc: bool) -> Batches {
        Batches {
            rest: buf,
            check_crc,
        }
    }
}

impl Iterator for Batches {
    type Item = Result<RecordBatch, BatchError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match RecordBatch::split_first_check_crc(&self.rest, self.check_crc) {
            Ok((batch, rest)) => {
                self.rest = rest;
                Some(Ok(batch))
            }
            Err(e) => {
                self.rest = Bytes::new();
                Some(Err(e))
            }
        }
    }
}

#[path = "batch_compact.rs"]
pub mod compact;

#[cfg(test)]
#[path = "batch_tests.rs"]
mod tests;
