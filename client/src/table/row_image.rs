//! The row image of a Debezium envelope: its `after` object, found without building a
//! JSON tree (the fetch tasks call this for every envelope record of a table opened
//! with [`super::TableConfig::row_images`], outside any lock). serde_json parses each
//! member's name and skips its value; the image is a slice of the record's own bytes,
//! exactly as the connector wrote it (column order kept).

use bytes::Bytes;
use serde::de::{DeserializeOwned, IgnoredAny};

/// `Some(Some(row))`: the `after` object; `Some(None)`: `after` is null (a delete's
/// envelope: the key goes); `None`: not an envelope (not a JSON object, no `after`
/// member, or an `after` that is neither an object nor null) — the value is kept.
pub(crate) fn envelope_after(value: &Bytes) -> Option<Option<Bytes>> {
    let b = &value[..];
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    loop {
        i = skip_ws(b, i);
        match b.get(i)? {
            b'}' => return None,
            b',' => i = skip_ws(b, i + 1),
            _ => {}
        }
        let (name, len) = one::<String>(&b[i..])?;
        i = skip_ws(b, i + len);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(b, i + 1);
        let start = i;
        let (_, len) = one::<IgnoredAny>(&b[i..])?;
        i += len;
        if name == "after" {
            return match b[start] {
                b'{' => Some(Some(value.slice(start..i))),
                b'n' => Some(None),
                _ => None,
            };
        }
    }
}

/// One JSON value at the start of `b`, and how many bytes it took.
fn one<T: DeserializeOwned>(b: &[u8]) -> Option<(T, usize)> {
    let mut values = serde_json::Deserializer::from_slice(b).into_iter::<T>();
    let v = values.next()?.ok()?;
    Some((v, values.byte_offset()))
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(|c| c.is_ascii_whitespace()) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(s: &str) -> Option<Option<String>> {
        envelope_after(&Bytes::from(s.to_string()))
            .map(|a| a.map(|b| String::from_utf8(b.to_vec()).unwrap()))
    }

    #[test]
    fn the_after_object_is_sliced_out_exactly() {
        let env = r#"{"before":{"id":1,"n":"a,}\"after\":"},"after":{"id":1,"n":"b","x":[1,{"y":null}],"f":1.5e3},"source":{"lsn":1},"op":"u","ts_ms":5,"transaction":null}"#;
        assert_eq!(
            after(env),
            Some(Some(
                r#"{"id":1,"n":"b","x":[1,{"y":null}],"f":1.5e3}"#.into()
            ))
        );
        // Whitespace and member order do not matter.
        assert_eq!(
            after(" { \"op\" : \"c\" , \"after\" : {\"id\":2} } "),
            Some(Some(r#"{"id":2}"#.into()))
        );
        // A delete's envelope: the key goes.
        assert_eq!(
            after(r#"{"before":{"id":1},"after":null,"op":"d"}"#),
            Some(None)
        );
    }

    #[test]
    fn values_that_are_not_envelopes_are_left_alone() {
        for v in [
            r#"{"id":1,"name":"x"}"#,
            r#"{"after":"text"}"#,
            r#"{"after":12}"#,
            "[1,2]",
            "not json",
            r#"{"after":{"id":1"#,
            r#"{"id":1,"#,
            "",
        ] {
            assert_eq!(after(v), None, "{v}");
        }
    }
}
