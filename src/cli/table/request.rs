//! Request parsing for `sluice table serve` (serve.rs): the raw path, RFC 3986 query
//! strings decoded to bytes, base64 keys, `wait_for` positions (record offsets or a CDC
//! source position), and the JSON error every refusal carries. Pure functions: bad
//! input becomes an [`ApiError`] (400 with what was wrong and what to send instead),
//! never a panic.

use std::collections::BTreeMap;

use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use percent_encoding::percent_decode_str;
use serde_json::json;
use sluice_client::PosRequest;

/// A failed request: a status and `{"error": message, ..extra}`.
#[derive(Debug)]
pub(super) struct ApiError {
    pub(super) status: StatusCode,
    pub(super) body: serde_json::Value,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: json!({"error": message.into()}),
        }
    }

    pub(super) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub(super) fn with(mut self, field: &str, value: serde_json::Value) -> ApiError {
        self.body[field] = value;
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(self.status, &self.body)
    }
}

pub(super) fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut text = body.to_string();
    text.push('\n');
    (status, [(header::CONTENT_TYPE, "application/json")], text).into_response()
}

/// The raw (still percent-encoded) topic and, for `/rows/{key}`, key of a path.
pub(super) fn raw_topic_and_key(path: &str) -> (&str, Option<&str>) {
    let rest = path.strip_prefix("/tables/").unwrap_or(path);
    match rest.split_once('/') {
        Some((topic, tail)) => (topic, tail.strip_prefix("rows/")),
        None => (rest, None),
    }
}

pub(super) fn decode_topic(raw: &str) -> Result<String, ApiError> {
    percent_decode_str(raw)
        .decode_utf8()
        .map(|t| t.into_owned())
        .map_err(|_| {
            ApiError::bad_request("the topic in the path is not UTF-8 once percent-decoded")
        })
}

/// Query parameters: names UTF-8, values percent-decoded bytes (`+` stays a plus).
/// A name outside `known`, or given twice, is a 400 that lists the known ones.
pub(super) fn query(uri: &Uri, known: &[&str]) -> Result<BTreeMap<String, Vec<u8>>, ApiError> {
    let mut params = BTreeMap::new();
    for pair in uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_decode_str(name).decode_utf8_lossy().into_owned();
        if !known.contains(&name.as_str()) {
            let expected = match known {
                [] => "this endpoint takes no query parameters".to_string(),
                _ => format!("this endpoint takes {}", known.join(", ")),
            };
            return Err(ApiError::bad_request(format!(
                "unknown query parameter {name:?}; {expected}"
            )));
        }
        let value: Vec<u8> = percent_decode_str(value).collect();
        if params.insert(name.clone(), value).is_some() {
            return Err(ApiError::bad_request(format!(
                "query parameter {name} is given twice"
            )));
        }
    }
    Ok(params)
}

pub(super) fn utf8_param<'a>(
    params: &'a BTreeMap<String, Vec<u8>>,
    name: &str,
) -> Result<Option<&'a str>, ApiError> {
    params
        .get(name)
        .map(|v| {
            std::str::from_utf8(v).map_err(|_| {
                ApiError::bad_request(format!("{name} is not UTF-8 once percent-decoded"))
            })
        })
        .transpose()
}

/// Standard or URL-safe base64, padded or not.
pub(super) fn decode_base64(b: &[u8]) -> Result<Vec<u8>, ApiError> {
    const CONFIG: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, CONFIG);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, CONFIG);
    STANDARD
        .decode(b)
        .or_else(|_| URL_SAFE.decode(b))
        .map_err(|e| ApiError::bad_request(format!("key_base64 is not base64 ({e}); percent-encode + / = as %2B %2F %3D, or use the URL-safe alphabet")))
}

/// What a `wait_for` waits for.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum WaitFor {
    /// Record offsets, one per partition at most: `PARTITION:OFFSET[,..]`.
    Offsets(Vec<(u32, u64)>),
    /// A database source position (CDC): a Postgres LSN, a MariaDB GTID set or a
    /// binlog `file:offset`.
    Source(PosRequest),
}

const OFFSETS_FORM: &str =
    "record offsets as PARTITION:OFFSET[,PARTITION:OFFSET..] (e.g. 0:123,1:456)";
const SOURCE_FORM: &str = "a source position: a Postgres LSN (0/16B3748), a MariaDB GTID set \
                           (0-1-42[,1-2-7]) or a binlog FILE:OFFSET (mysql-bin.000003:1234)";

/// A `wait_for` value. Only digits, `:` and `,` is record offsets (so a binlog file
/// named only by digits cannot be asked for; real ones have a base name); anything
/// else is a source position (`PosRequest`: with `/` an LSN, with `:` a binlog
/// coordinate, with `-` a GTID set).
pub(super) fn parse_wait_for(s: &str) -> Result<WaitFor, String> {
    let offsets_like = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, ':' | ',' | ' '));
    if offsets_like {
        return parse_offsets(s).map(WaitFor::Offsets);
    }
    s.parse::<PosRequest>()
        .map(WaitFor::Source)
        .map_err(|e| format!("wait_for: {e}; give {SOURCE_FORM}, or {OFFSETS_FORM}"))
}

fn parse_offsets(s: &str) -> Result<Vec<(u32, u64)>, String> {
    let mut positions: Vec<(u32, u64)> = Vec::new();
    for piece in s.split(',') {
        let parsed = piece.split_once(':').and_then(|(p, o)| {
            Some((p.trim().parse::<u32>().ok()?, o.trim().parse::<u64>().ok()?))
        });
        let Some((partition, offset)) = parsed else {
            return Err(format!(
                "wait_for={s:?}: {piece:?} is not PARTITION:OFFSET; give {OFFSETS_FORM}"
            ));
        };
        if positions.iter().any(|&(p, _)| p == partition) {
            return Err(format!(
                "wait_for={s:?} names partition {partition} twice; give {OFFSETS_FORM}"
            ));
        }
        positions.push((partition, offset));
    }
    Ok(positions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_for_takes_partition_offsets_or_source_positions() {
        let offsets = |s: &str| {
            parse_wait_for(s).map(|w| match w {
                WaitFor::Offsets(o) => o,
                WaitFor::Source(r) => panic!("{s:?} read as a source position {r:?}"),
            })
        };
        assert_eq!(offsets("0:123"), Ok(vec![(0, 123)]));
        assert_eq!(offsets("0:123,1:456"), Ok(vec![(0, 123), (1, 456)]));
        for bad in [
            "", "0", "0:", ":5", "0:1,0:2", "0:1,", "0:-1", "0/zz", "hello", "a:b",
        ] {
            let e = parse_wait_for(bad).unwrap_err();
            assert!(!e.contains('\n'), "one line: {e}");
        }
        let source = |s: &str| match parse_wait_for(s) {
            Ok(WaitFor::Source(r)) => r,
            other => panic!("{s:?}: {other:?}"),
        };
        assert!(matches!(source("0/16B3748"), PosRequest::Lsn(_)));
        assert!(matches!(source("0-1-42,1-2-7"), PosRequest::Gtids(_)));
        assert!(matches!(
            source("mysql-bin.000003:1234"),
            PosRequest::Binlog(_)
        ));
    }

    #[test]
    fn paths_and_queries_decode_to_bytes() {
        assert_eq!(
            raw_topic_and_key("/tables/t/rows/a%2Fb/c"),
            ("t", Some("a%2Fb/c"))
        );
        assert_eq!(raw_topic_and_key("/tables/t"), ("t", None));
        let uri: Uri = "/tables/t/rows?key_base64=/w%3D%3D".parse().unwrap();
        let q = query(&uri, &["key", "key_base64"]).unwrap();
        assert_eq!(decode_base64(&q["key_base64"]).unwrap(), b"\xff");
        assert_eq!(decode_base64(b"_w").unwrap(), b"\xff");
        assert!(decode_base64(b"*").is_err());
        let uri: Uri = "/tables/t?wait_fr=0:1".parse().unwrap();
        assert!(query(&uri, &["wait_for"]).is_err());
        let uri: Uri = "/tables/t?wait_for=0:1&wait_for=0:2".parse().unwrap();
        assert!(query(&uri, &["wait_for"]).is_err());
    }
}
