//! Output of consumed records: kcat-style format strings and JSON lines.

use runnel_client::ConsumerRecord;

/// One piece of a parsed `--format`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(Vec<u8>),
    Topic,
    Partition,
    Offset,
    Timestamp,
    Key,
    KeyLen,
    Value,
    ValueLen,
    Headers,
}

/// A parsed `--format` string. Placeholders (as kcat's -f): %t topic, %p partition,
/// %o offset, %T timestamp (ms), %k key, %K key length, %v or %s value, %S value length,
/// %h headers (k=v,k2=v2), %% a percent sign; escapes \n \t \r \\. A null key or value
/// prints as nothing and its length as -1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pieces: Vec<Piece>,
}

impl Format {
    pub fn parse(template: &str) -> Result<Format, String> {
        let mut pieces = Vec::new();
        let mut literal = Vec::new();
        let mut chars = template.chars();
        while let Some(c) = chars.next() {
            match c {
                '%' => {
                    let piece = match chars.next() {
                        Some('t') => Piece::Topic,
                        Some('p') => Piece::Partition,
                        Some('o') => Piece::Offset,
                        Some('T') => Piece::Timestamp,
                        Some('k') => Piece::Key,
                        Some('K') => Piece::KeyLen,
                        Some('v') | Some('s') => Piece::Value,
                        Some('S') => Piece::ValueLen,
                        Some('h') => Piece::Headers,
                        Some('%') => {
                            literal.push(b'%');
                            continue;
                        }
                        Some(other) => {
                            return Err(format!(
                                "unknown placeholder %{other} in --format (use %t %p %o %T %k %K %v %s %S %h %%)"
                            ))
                        }
                        None => return Err("--format ends with a lone %".to_string()),
                    };
                    if !literal.is_empty() {
                        pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                    }
                    pieces.push(piece);
                }
                '\\' => match chars.next() {
                    Some('n') => literal.push(b'\n'),
                    Some('t') => literal.push(b'\t'),
                    Some('r') => literal.push(b'\r'),
                    Some('0') => literal.push(0),
                    Some('\\') => literal.push(b'\\'),
                    Some(other) => {
                        literal.push(b'\\');
                        let mut buf = [0; 4];
                        literal.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
                    }
                    None => literal.push(b'\\'),
                },
                c => {
                    let mut buf = [0; 4];
                    literal.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        Ok(Format { pieces })
    }

    /// Appends `record` formatted to `out`.
    pub fn write(&self, out: &mut Vec<u8>, topic: &str, partition: i32, r: &ConsumerRecord) {
        let len = |b: &Option<bytes::Bytes>| b.as_ref().map_or(-1, |b| b.len() as i64);
        for piece in &self.pieces {
            match piece {
                Piece::Literal(l) => out.extend_from_slice(l),
                Piece::Topic => out.extend_from_slice(topic.as_bytes()),
                Piece::Partition => out.extend_from_slice(partition.to_string().as_bytes()),
                Piece::Offset => out.extend_from_slice(r.offset.to_string().as_bytes()),
                Piece::Timestamp => out.extend_from_slice(r.timestamp_ms.to_string().as_bytes()),
                Piece::Key => out.extend_from_slice(r.key.as_deref().unwrap_or_default()),
                Piece::KeyLen => out.extend_from_slice(len(&r.key).to_string().as_bytes()),
                Piece::Value => out.extend_from_slice(r.value.as_deref().unwrap_or_default()),
                Piece::ValueLen => out.extend_from_slice(len(&r.value).to_string().as_bytes()),
                Piece::Headers => {
                    for (i, (k, v)) in r.headers.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        out.extend_from_slice(k.as_bytes());
                        out.push(b'=');
                        out.extend_from_slice(v.as_deref().unwrap_or_default());
                    }
                }
            }
        }
    }
}

/// A JSON string, or for bytes that are not UTF-8 an object {"base64": "..."}, or null.
fn json_bytes(b: &Option<bytes::Bytes>) -> String {
    match b {
        None => "null".to_string(),
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => serde_json::to_string(s).expect("strings serialise"),
            Err(_) => format!("{{\"base64\":\"{}\"}}", base64(b)),
        },
    }
}

/// One JSON line: {"topic","partition","offset","timestamp","key","value","headers"}, with
/// headers as an object whose values are strings (or null, or {"base64": ...}).
pub fn json_line(out: &mut Vec<u8>, topic: &str, partition: i32, r: &ConsumerRecord) {
    let headers: Vec<String> = r
        .headers
        .iter()
        .map(|(k, v)| {
            format!(
                "{}:{}",
                serde_json::to_string(k).expect("strings serialise"),
                json_bytes(v)
            )
        })
        .collect();
    let line = format!(
        "{{\"topic\":{},\"partition\":{},\"offset\":{},\"timestamp\":{},\"key\":{},\"value\":{},\"headers\":{{{}}}}}\n",
        serde_json::to_string(topic).expect("strings serialise"),
        partition,
        r.offset,
        r.timestamp_ms,
        json_bytes(&r.key),
        json_bytes(&r.value),
        headers.join(",")
    );
    out.extend_from_slice(line.as_bytes());
}

pub use runnel_client::records::base64;

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn record() -> ConsumerRecord {
        ConsumerRecord {
            offset: 7,
            timestamp_ms: 1234,
            log_append_time: false,
            key: Some(Bytes::from("k1")),
            value: Some(Bytes::from("hello \"world\"")),
            headers: vec![("a".into(), Some(Bytes::from("1"))), ("b".into(), None)],
        }
    }

    fn render(template: &str, r: &ConsumerRecord) -> String {
        let mut out = Vec::new();
        Format::parse(template)
            .unwrap()
            .write(&mut out, "tweets", 3, r);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn formats_like_kcat() {
        let r = record();
        assert_eq!(
            render("%k %v %p %o %T %h\\n", &r),
            "k1 hello \"world\" 3 7 1234 a=1,b=\n"
        );
        assert_eq!(
            render("%t/%p@%o %K %S 100%%\\t|", &r),
            "tweets/3@7 2 13 100%\t|"
        );
        let null = ConsumerRecord {
            key: None,
            value: None,
            headers: vec![],
            ..r
        };
        assert_eq!(render("[%k][%s][%h] %K %S", &null), "[][][] -1 -1");
    }

    #[test]
    fn bad_formats_are_refused() {
        assert!(Format::parse("%x").unwrap_err().contains("%x"));
        assert!(Format::parse("abc%").is_err());
    }

    #[test]
    fn json_lines_keep_field_order_and_escape() {
        let mut out = Vec::new();
        json_line(&mut out, "tweets", 3, &record());
        let line = String::from_utf8(out).unwrap();
        assert_eq!(
            line,
            "{\"topic\":\"tweets\",\"partition\":3,\"offset\":7,\"timestamp\":1234,\"key\":\"k1\",\
             \"value\":\"hello \\\"world\\\"\",\"headers\":{\"a\":\"1\",\"b\":null}}\n"
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["value"], "hello \"world\"");
        let binary = ConsumerRecord {
            key: None,
            value: Some(Bytes::from_static(&[0xff, 0, 1])),
            ..record()
        };
        let mut out = Vec::new();
        json_line(&mut out, "t", 0, &binary);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["key"], serde_json::Value::Null);
        assert_eq!(v["value"]["base64"], "/wAB");
    }
}
