//! Postgres values (pgoutput's text format) as JSON, following Debezium's defaults where
//! a JSON reader needs no schema to read them back:
//!
//! | Postgres | JSON |
//! |---|---|
//! | smallint, integer, bigint, oid | number |
//! | real, double precision | number; `"NaN"`, `"Infinity"`, `"-Infinity"` as strings |
//! | numeric | string, exact (`"12.50"`, `"NaN"`, `"Infinity"`) |
//! | boolean | true / false |
//! | bytea | string, base64 |
//! | json, jsonb | string (the document's text, as Debezium's `io.debezium.data.Json`) |
//! | timestamp | number: microseconds since the epoch (Debezium's MicroTimestamp) |
//! | timestamptz | string, ISO 8601 in UTC (`2024-05-01T10:00:00.123456Z`) |
//! | date | number: days since the epoch |
//! | `infinity` / `-infinity` timestamps and dates | the strings `"infinity"` / `"-infinity"` |
//! | everything else (text, varchar, uuid, time, intervals, arrays, enums) | string: Postgres's text form |

use base64::Engine;
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use serde_json::Value;

const BOOL: u32 = 16;
const BYTEA: u32 = 17;
const INT8: u32 = 20;
const INT2: u32 = 21;
const INT4: u32 = 23;
const OID: u32 = 26;
const JSON: u32 = 114;
const FLOAT4: u32 = 700;
const FLOAT8: u32 = 701;
const DATE: u32 = 1082;
const TIMESTAMP: u32 = 1114;
const TIMESTAMPTZ: u32 = 1184;
const NUMERIC: u32 = 1700;
const JSONB: u32 = 3802;

/// One value from its text form. Anything that does not parse as its type is kept as
/// its text (never an error: a feed must not stop on a value it cannot refine).
pub fn text_to_json(oid: u32, raw: &[u8]) -> Value {
    let s = String::from_utf8_lossy(raw);
    let text = || Value::String(s.to_string());
    match oid {
        INT2 | INT4 | INT8 | OID => s.parse::<i64>().map(Value::from).unwrap_or_else(|_| text()),
        FLOAT4 | FLOAT8 => match s.parse::<f64>() {
            Ok(f) if f.is_finite() => {
                serde_json::Number::from_f64(f).map_or_else(text, Value::Number)
            }
            _ => text(),
        },
        NUMERIC => text(),
        BOOL => match &*s {
            "t" => Value::Bool(true),
            "f" => Value::Bool(false),
            _ => text(),
        },
        BYTEA => match s.strip_prefix("\\x").map(hex) {
            Some(Some(bytes)) => {
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
            _ => text(),
        },
        JSON | JSONB => text(),
        TIMESTAMP => match &*s {
            "infinity" | "-infinity" => text(),
            _ => NaiveDateTime::parse_from_str(&s, "%Y-%m-%d %H:%M:%S%.f")
                .map(|t| Value::from(t.and_utc().timestamp_micros()))
                .unwrap_or_else(|_| text()),
        },
        TIMESTAMPTZ => match &*s {
            "infinity" | "-infinity" => text(),
            _ => parse_tz(&s)
                .map(|t| {
                    Value::String(
                        t.with_timezone(&chrono::Utc)
                            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                            .to_string(),
                    )
                })
                .unwrap_or_else(text),
        },
        DATE => match &*s {
            "infinity" | "-infinity" => text(),
            _ => NaiveDate::parse_from_str(&s, "%Y-%m-%d")
                .map(|d| {
                    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("a valid date");
                    Value::from((d - epoch).num_days())
                })
                .unwrap_or_else(|_| text()),
        },
        _ => text(),
    }
}

/// `2024-05-01 10:00:00.123+02`, `...+05:30`, `...+00`.
fn parse_tz(s: &str) -> Option<DateTime<chrono::FixedOffset>> {
    for f in [
        "%Y-%m-%d %H:%M:%S%.f%#z",
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%d %H:%M:%S%.f%z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(s, f) {
            return Some(t);
        }
    }
    None
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_map_as_documented() {
        let j = |oid, s: &str| text_to_json(oid, s.as_bytes());
        assert_eq!(j(INT8, "-9223372036854775808"), json!(i64::MIN));
        assert_eq!(j(INT4, "42"), json!(42));
        assert_eq!(j(FLOAT8, "1.5"), json!(1.5));
        assert_eq!(j(FLOAT8, "NaN"), json!("NaN"));
        assert_eq!(j(FLOAT4, "-Infinity"), json!("-Infinity"));
        assert_eq!(j(NUMERIC, "12.50"), json!("12.50"));
        assert_eq!(j(NUMERIC, "NaN"), json!("NaN"));
        assert_eq!(j(BOOL, "t"), json!(true));
        assert_eq!(j(BYTEA, "\\x00ff10"), json!("AP8Q"));
        assert_eq!(j(JSONB, "{\"a\": 1}"), json!("{\"a\": 1}"));
        assert_eq!(j(TIMESTAMP, "1970-01-01 00:00:01.5"), json!(1_500_000));
        assert_eq!(j(TIMESTAMP, "infinity"), json!("infinity"));
        assert_eq!(
            j(TIMESTAMPTZ, "2024-05-01 12:00:00.25+02"),
            json!("2024-05-01T10:00:00.250000Z")
        );
        assert_eq!(
            j(TIMESTAMPTZ, "2024-05-01 12:00:00+05:30"),
            json!("2024-05-01T06:30:00.000000Z")
        );
        assert_eq!(j(DATE, "1970-01-11"), json!(10));
        assert_eq!(j(DATE, "1969-12-31"), json!(-1));
        assert_eq!(j(25, "plain"), json!("plain"));
        assert_eq!(
            j(INT4, "oops"),
            json!("oops"),
            "unparsable values stay text"
        );
    }
}
