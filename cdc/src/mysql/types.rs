//! MariaDB/MySQL values as JSON. Both paths — the initial copy (a prepared SELECT, so the
//! binary protocol) and the binlog (row events) — hand over a `mysql_common::Value`; one
//! function maps it, guided by the column's [`Kind`] from `information_schema`, so the
//! same row gives the same JSON whichever way it came.
//!
//! | MariaDB | JSON |
//! |---|---|
//! | TINYINT … BIGINT, signed or UNSIGNED (BIGINT UNSIGNED fits u64) | number |
//! | DECIMAL / NUMERIC | string, exact, with the column's scale (`"12.50"`) |
//! | FLOAT, DOUBLE | number (FLOAT through its shortest decimal form: `1.1`, not `1.100000023841858`) |
//! | CHAR, VARCHAR, TEXT, JSON (MariaDB: LONGTEXT) | string |
//! | JSON (MySQL's binary JSON) | string, the document re-serialized compactly |
//! | BINARY, VARBINARY, BLOB, BIT | string, base64 |
//! | ENUM | string (the label), SET: string, labels joined by `,` |
//! | DATE | number: days since the epoch |
//! | DATETIME | number: microseconds since the epoch (the wall time read as UTC) |
//! | TIMESTAMP | string, ISO 8601 in UTC (`2024-05-01T10:00:00.000000Z`) |
//! | TIME | number: microseconds (negative allowed) |
//! | YEAR | number |
//! | zero dates (`0000-00-00`, also with a zero month or day) | null |
//! | NULL | null |

use base64::Engine;
use chrono::{DateTime, NaiveDate};
use mysql_async::Value as My;
use serde_json::Value;

/// How a column's values are carried, from `information_schema.COLUMNS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Int,
    UInt,
    Float,
    Double,
    Decimal,
    Text,
    Json,
    Bytes,
    Bit,
    Enum(Vec<String>),
    Set(Vec<String>),
    Date,
    DateTime,
    Timestamp,
    Time,
    Year,
    /// Anything else (geometry, vectors, …): by the value's own shape.
    Other,
}

impl Kind {
    /// `DATA_TYPE` and `COLUMN_TYPE` of `information_schema.COLUMNS`.
    pub fn of(data_type: &str, column_type: &str) -> Kind {
        let unsigned = column_type.to_ascii_lowercase().contains("unsigned");
        match data_type.to_ascii_lowercase().as_str() {
            "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" => {
                if unsigned {
                    Kind::UInt
                } else {
                    Kind::Int
                }
            }
            "float" => Kind::Float,
            "double" | "real" | "double precision" => Kind::Double,
            "decimal" | "numeric" | "dec" | "fixed" => Kind::Decimal,
            "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => Kind::Text,
            "json" => Kind::Json,
            "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => Kind::Bytes,
            "bit" => Kind::Bit,
            "enum" => Kind::Enum(labels(column_type)),
            "set" => Kind::Set(labels(column_type)),
            "date" => Kind::Date,
            "datetime" => Kind::DateTime,
            "timestamp" => Kind::Timestamp,
            "time" => Kind::Time,
            "year" => Kind::Year,
            _ => Kind::Other,
        }
    }
}

/// The labels of `enum('a','b''c')` / `set(...)`, in declaration order.
fn labels(column_type: &str) -> Vec<String> {
    let Some(open) = column_type.find('(') else {
        return Vec::new();
    };
    let body = &column_type[open + 1..];
    let mut out = Vec::new();
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut label = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    label.push('\'');
                }
                '\'' => break,
                '\\' => {
                    if let Some(n) = chars.next() {
                        label.push(n);
                    }
                }
                c => label.push(c),
            }
        }
        out.push(label);
    }
    out
}

fn base64_of(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn text(b: &[u8]) -> Value {
    Value::String(String::from_utf8_lossy(b).into_owned())
}

fn float(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or_else(|| Value::String(f.to_string()), Value::Number)
}

/// A decimal's text without redundant leading zeros (`0000000005.00` → `5.00`): the
/// binlog's decoder writes whole 9-digit groups, the server's text does not.
fn decimal(s: &str) -> Value {
    let (sign, digits) = match s.strip_prefix('-') {
        Some(d) => ("-", d),
        None => ("", s),
    };
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (digits, None),
    };
    let int = int.trim_start_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let zero = int == "0" && frac.is_none_or(|f| f.bytes().all(|b| b == b'0'));
    let sign = if zero { "" } else { sign };
    Value::String(match frac {
        Some(f) => format!("{sign}{int}.{f}"),
        None => format!("{sign}{int}"),
    })
}

fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("a valid date")
}

/// `None` for zero and partly-zero dates (MariaDB's `0000-00-00`, `2024-00-10`).
fn date(y: u16, m: u8, d: u8) -> Option<NaiveDate> {
    if m == 0 || d == 0 {
        return None;
    }
    NaiveDate::from_ymd_opt(i32::from(y), u32::from(m), u32::from(d))
}

fn micros_of(y: u16, mo: u8, d: u8, h: u8, mi: u8, s: u8, us: u32) -> Option<i64> {
    let dt = date(y, mo, d)?.and_hms_micro_opt(u32::from(h), u32::from(mi), u32::from(s), us)?;
    Some(dt.and_utc().timestamp_micros())
}

fn iso_utc(micros: i64) -> Value {
    match DateTime::from_timestamp_micros(micros) {
        Some(t) => Value::String(t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()),
        None => Value::Null,
    }
}

/// A TIMESTAMP from the binlog: `seconds[.micros]` since the epoch, `0` the zero value.
fn timestamp_text(s: &str) -> Value {
    let (sec, frac) = s.split_once('.').unwrap_or((s, ""));
    let Ok(sec) = sec.parse::<i64>() else {
        return Value::String(s.to_string());
    };
    let us: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}")[..6].parse().unwrap_or(0)
    };
    if sec == 0 && us == 0 {
        return Value::Null;
    }
    iso_utc(sec * 1_000_000 + us)
}

/// One value. Never an error: a value that does not fit its kind is carried by its
/// own shape (a feed must not stop on a value it cannot refine).
pub fn to_json(kind: &Kind, v: &My) -> Value {
    match (kind, v) {
        (_, My::NULL) => Value::Null,
        (Kind::UInt, My::Int(i)) => Value::from(*i as u64),
        (Kind::Float, My::Float(f)) => float(f.to_string().parse().unwrap_or(f64::from(*f))),
        (Kind::Float | Kind::Double, My::Bytes(b)) => match std::str::from_utf8(b) {
            Ok(s) => s.parse::<f64>().map_or_else(|_| text(b), float),
            Err(_) => text(b),
        },
        (Kind::Decimal, My::Bytes(b)) => decimal(&String::from_utf8_lossy(b)),
        (Kind::Json, My::Bytes(b)) => match serde_json::from_slice::<Value>(b) {
            Ok(doc) => Value::String(doc.to_string()),
            Err(_) => text(b),
        },
        (Kind::Bytes | Kind::Bit, My::Bytes(b)) => Value::String(base64_of(b)),
        (Kind::Enum(labels), My::Int(i)) => match usize::try_from(*i) {
            Ok(0) => Value::String(String::new()),
            Ok(i) => labels
                .get(i - 1)
                .map_or_else(|| Value::from(i), |l| Value::String(l.clone())),
            Err(_) => Value::from(*i),
        },
        (Kind::Enum(labels), My::UInt(i)) => {
            to_json(&Kind::Enum(labels.clone()), &My::Int(*i as i64))
        }
        (Kind::Set(labels), My::Bytes(b))
            if !labels.is_empty() && b.len() <= 8 && !is_label_text(labels, b) =>
        {
            // The binlog's bitmask, little-endian.
            let mut mask = 0u64;
            for (i, byte) in b.iter().enumerate() {
                mask |= u64::from(*byte) << (8 * i);
            }
            let chosen: Vec<&str> = labels
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, l)| l.as_str())
                .collect();
            Value::String(chosen.join(","))
        }
        (Kind::Date, My::Date(y, m, d, ..)) => match date(*y, *m, *d) {
            Some(d) => Value::from((d - epoch()).num_days()),
            None => Value::Null,
        },
        (Kind::DateTime, My::Date(y, mo, d, h, mi, s, us)) => {
            micros_of(*y, *mo, *d, *h, *mi, *s, *us).map_or(Value::Null, Value::from)
        }
        (Kind::Timestamp, My::Date(y, mo, d, h, mi, s, us)) => {
            micros_of(*y, *mo, *d, *h, *mi, *s, *us).map_or(Value::Null, iso_utc)
        }
        (Kind::Timestamp, My::Bytes(b)) => timestamp_text(&String::from_utf8_lossy(b)),
        (Kind::Timestamp, My::Int(secs)) => {
            if *secs == 0 {
                Value::Null
            } else {
                iso_utc(secs * 1_000_000)
            }
        }
        (Kind::Year, My::Bytes(b)) => String::from_utf8_lossy(b)
            .parse::<i64>()
            .map_or_else(|_| text(b), Value::from),
        // By the value's own shape.
        (_, My::Int(i)) => Value::from(*i),
        (_, My::UInt(u)) => Value::from(*u),
        (_, My::Float(f)) => float(f.to_string().parse().unwrap_or(f64::from(*f))),
        (_, My::Double(f)) => float(*f),
        (_, My::Bytes(b)) => text(b),
        (_, My::Date(y, mo, d, h, mi, s, us)) => {
            micros_of(*y, *mo, *d, *h, *mi, *s, *us).map_or(Value::Null, Value::from)
        }
        (_, My::Time(neg, days, h, m, s, us)) => {
            let t =
                ((i64::from(*days) * 24 + i64::from(*h)) * 60 + i64::from(*m)) * 60 + i64::from(*s);
            let us = t * 1_000_000 + i64::from(*us);
            Value::from(if *neg { -us } else { us })
        }
    }
}

/// MariaDB's `latin1` (Windows-1252) as UTF-8: how a SELECT over a UTF-8 connection
/// shows text the binlog carries as latin1 bytes.
pub fn latin1_to_utf8(b: &[u8]) -> Vec<u8> {
    // 0x80..=0x9F: Windows-1252's printable characters; MariaDB maps the five holes
    // (0x81, 0x8D, 0x8F, 0x90, 0x9D) to the C1 controls of the same number.
    const HIGH: [char; 32] = [
        '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8D}', 'Ž',
        '\u{8F}', '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9D}',
        'ž', 'Ÿ',
    ];
    let mut out = String::with_capacity(b.len() + b.len() / 4);
    for &c in b {
        match c {
            0x80..=0x9F => out.push(HIGH[usize::from(c - 0x80)]),
            c => out.push(char::from(c)),
        }
    }
    out.into_bytes()
}

/// Whether SET bytes are already the labels' text (the SELECT path) rather than the
/// binlog's bitmask: a bitmask's bytes are rarely all printable label characters.
fn is_label_text(labels: &[String], b: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(b) else {
        return false;
    };
    s.split(',').all(|p| labels.iter().any(|l| l == p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kinds_come_from_information_schema() {
        assert_eq!(Kind::of("bigint", "bigint(20) unsigned"), Kind::UInt);
        assert_eq!(Kind::of("INT", "int(11)"), Kind::Int);
        assert_eq!(Kind::of("longtext", "longtext"), Kind::Text);
        assert_eq!(Kind::of("varbinary", "varbinary(4)"), Kind::Bytes);
        assert_eq!(
            Kind::of("enum", "enum('a','b''c','d\\\\e')"),
            Kind::Enum(vec!["a".into(), "b'c".into(), "d\\e".into()])
        );
        assert_eq!(Kind::of("geometry", "geometry"), Kind::Other);
    }

    #[test]
    fn latin1_text_reads_as_utf8() {
        assert_eq!(latin1_to_utf8(b"h\xe9llo \x80"), "héllo €".as_bytes());
        assert_eq!(latin1_to_utf8(b"plain"), b"plain");
    }

    #[test]
    fn values_map_as_documented() {
        let b = |s: &str| My::Bytes(s.as_bytes().to_vec());
        assert_eq!(to_json(&Kind::UInt, &My::UInt(u64::MAX)), json!(u64::MAX));
        assert_eq!(to_json(&Kind::UInt, &My::Int(-1)), json!(u64::MAX));
        assert_eq!(to_json(&Kind::Int, &My::Int(i64::MIN)), json!(i64::MIN));
        assert_eq!(to_json(&Kind::Decimal, &b("12.50")), json!("12.50"));
        assert_eq!(to_json(&Kind::Decimal, &b("0000000005.00")), json!("5.00"));
        assert_eq!(to_json(&Kind::Decimal, &b("-0000.10")), json!("-0.10"));
        assert_eq!(to_json(&Kind::Decimal, &b("-0.00")), json!("0.00"));
        assert_eq!(to_json(&Kind::Float, &My::Float(1.1)), json!(1.1));
        assert_eq!(to_json(&Kind::Double, &My::Double(-2.5)), json!(-2.5));
        assert_eq!(to_json(&Kind::Text, &b("héllo")), json!("héllo"));
        assert_eq!(to_json(&Kind::Json, &b("{\"a\": 1}")), json!("{\"a\":1}"));
        assert_eq!(
            to_json(&Kind::Bytes, &My::Bytes(vec![0, 0xff, 0x10])),
            json!("AP8Q")
        );
        assert_eq!(
            to_json(&Kind::Date, &My::Date(1970, 1, 11, 0, 0, 0, 0)),
            json!(10)
        );
        assert_eq!(
            to_json(&Kind::Date, &My::Date(1969, 12, 31, 0, 0, 0, 0)),
            json!(-1)
        );
        assert_eq!(
            to_json(&Kind::Date, &My::Date(0, 0, 0, 0, 0, 0, 0)),
            json!(null)
        );
        assert_eq!(
            to_json(&Kind::Date, &My::Date(2024, 0, 5, 0, 0, 0, 0)),
            json!(null)
        );
        assert_eq!(
            to_json(&Kind::DateTime, &My::Date(1970, 1, 1, 0, 0, 1, 500_000)),
            json!(1_500_000)
        );
        assert_eq!(
            to_json(&Kind::DateTime, &My::Date(0, 0, 0, 0, 0, 0, 0)),
            json!(null)
        );
        // TIMESTAMP: the SELECT path (session time zone UTC) and the binlog's seconds.
        let iso = json!("2024-05-01T10:00:00.250000Z");
        assert_eq!(
            to_json(&Kind::Timestamp, &My::Date(2024, 5, 1, 10, 0, 0, 250_000)),
            iso
        );
        assert_eq!(to_json(&Kind::Timestamp, &b("1714557600.250000")), iso);
        assert_eq!(to_json(&Kind::Timestamp, &b("1714557600.25")), iso);
        assert_eq!(to_json(&Kind::Timestamp, &b("0")), json!(null));
        assert_eq!(
            to_json(&Kind::Time, &My::Time(true, 1, 2, 0, 0, 5)),
            json!(-(26 * 3600 * 1_000_000i64 + 5))
        );
        assert_eq!(to_json(&Kind::Year, &b("2024")), json!(2024));
        assert_eq!(to_json(&Kind::Year, &My::UInt(2024)), json!(2024));
        let e = Kind::Enum(vec!["small".into(), "large".into()]);
        assert_eq!(to_json(&e, &My::Int(2)), json!("large"));
        assert_eq!(to_json(&e, &b("large")), json!("large"));
        let s = Kind::Set(vec!["a".into(), "b".into(), "c".into()]);
        assert_eq!(to_json(&s, &My::Bytes(vec![0b101])), json!("a,c"));
        assert_eq!(to_json(&s, &b("a,c")), json!("a,c"));
        assert_eq!(to_json(&Kind::Text, &My::NULL), json!(null));
        // Unknown kinds keep the value's own shape.
        assert_eq!(to_json(&Kind::Other, &b("x")), json!("x"));
        assert_eq!(to_json(&Kind::Int, &b("oops")), json!("oops"));
    }
}
