//! `project`: a JSON object cut down to the members a schema names, before Arrow's JSON
//! decoder sees it. `from_json` with a partial schema (the usual case: two fields of a
//! tweet's twenty) otherwise has Arrow tokenize every member into its tape only to skip
//! the ones the schema lacks; scanning past them here is a few times cheaper.
//!
//! The cut never changes an answer: a member the schema names keeps its text as is (or,
//! for a struct, or a list of structs, is cut the same way member by member), in its
//! order, duplicates included, and Arrow matches names exactly, so decoding the cut text
//! gives what decoding the whole text gives. Whatever this module is not sure Arrow
//! reads the same way (anything outside the strict JSON grammar, `\u` escapes, escaped
//! member names, deep nesting) is refused, and the caller decodes the whole text as
//! before. Arrow's reader is laxer than the strict grammar (it takes `{"a":1,,}`), never
//! stricter, so text accepted here is text Arrow accepts.

use datafusion::arrow::datatypes::{DataType, Fields};

/// Deepest nesting followed; deeper text is left to the full decode (no deep recursion
/// on untrusted input).
const MAX_DEPTH: usize = 64;

/// Appends to `out` the JSON object `text` (whitespace around it allowed) with only the
/// members `fields` names. Returns false, `out` unchanged, where the text is not one
/// strictly valid JSON object, or uses what the cut leaves to the full decode.
pub fn project(text: &[u8], fields: &Fields, out: &mut Vec<u8>) -> bool {
    let mark = out.len();
    let mut s = Scanner { s: text, i: 0 };
    s.ws();
    let ok = s.peek() == Some(b'{') && s.object(fields, out, 0) && {
        s.ws();
        s.i == text.len()
    };
    if !ok {
        out.truncate(mark);
    }
    ok
}

/// What a value of a type is cut to: the members of a struct, or each item of a list.
enum Shape<'a> {
    Struct(&'a Fields),
    List(&'a DataType),
}

fn shape(t: &DataType) -> Option<Shape<'_>> {
    match t {
        DataType::Struct(f) => Some(Shape::Struct(f)),
        DataType::List(item) | DataType::LargeList(item) => {
            shape(item.data_type()).map(|_| Shape::List(item.data_type()))
        }
        _ => None,
    }
}

struct Scanner<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        self.ws();
        let ok = self.peek() == Some(b);
        if ok {
            self.i += 1;
        }
        ok
    }

    /// A value of type `t` into `out`: cut where the type has a shape, else copied.
    fn value(&mut self, t: &DataType, out: &mut Vec<u8>, depth: usize) -> bool {
        self.ws();
        match (shape(t), self.peek()) {
            (Some(Shape::Struct(f)), Some(b'{')) => self.object(f, out, depth + 1),
            (Some(Shape::List(item)), Some(b'[')) => self.list(item, out, depth + 1),
            _ => {
                let start = self.i;
                let ok = self.skip(depth + 1);
                out.extend_from_slice(&self.s[start..self.i]);
                ok
            }
        }
    }

    /// At `{`: the object's members `fields` names, into `out`.
    fn object(&mut self, fields: &Fields, out: &mut Vec<u8>, depth: usize) -> bool {
        if depth > MAX_DEPTH || !self.eat(b'{') {
            return false;
        }
        out.push(b'{');
        let mut first = true;
        if !self.eat(b'}') {
            loop {
                self.ws();
                let Some(name) = self.name() else {
                    return false;
                };
                if !self.eat(b':') {
                    return false;
                }
                let mut named = fields.iter().filter(|f| f.name().as_bytes() == name);
                let ok = match (named.next(), named.next()) {
                    (Some(f), None) => {
                        if !first {
                            out.push(b',');
                        }
                        first = false;
                        out.push(b'"');
                        out.extend_from_slice(name);
                        out.extend_from_slice(b"\":");
                        self.value(f.data_type(), out, depth)
                    }
                    // Two fields of one name: the whole text goes to the full decode.
                    (Some(_), Some(_)) => false,
                    (None, _) => {
                        self.ws();
                        self.skip(depth + 1)
                    }
                };
                if !ok {
                    return false;
                }
                if self.eat(b'}') {
                    break;
                }
                if !self.eat(b',') {
                    return false;
                }
            }
        }
        out.push(b'}');
        true
    }

    /// At `[`: each item cut to `item`'s shape, into `out`.
    fn list(&mut self, item: &DataType, out: &mut Vec<u8>, depth: usize) -> bool {
        if depth > MAX_DEPTH || !self.eat(b'[') {
            return false;
        }
        out.push(b'[');
        if !self.eat(b']') {
            loop {
                if !self.value(item, out, depth) {
                    return false;
                }
                if self.eat(b']') {
                    break;
                }
                if !self.eat(b',') {
                    return false;
                }
                out.push(b',');
            }
        }
        out.push(b']');
        true
    }

    /// A member name without escapes (Arrow would unescape it before matching).
    fn name(&mut self) -> Option<&'a [u8]> {
        if self.peek() != Some(b'"') {
            return None;
        }
        let start = self.i + 1;
        let end = start + memchr::memchr2(b'"', b'\\', &self.s[start..])?;
        if self.s[end] != b'"' {
            return None;
        }
        self.i = end + 1;
        let s: &'a [u8] = self.s;
        Some(&s[start..end])
    }

    /// Past one strictly valid value (at its first byte).
    fn skip(&mut self, depth: usize) -> bool {
        if depth > MAX_DEPTH {
            return false;
        }
        match self.peek() {
            Some(b'"') => self.string(),
            Some(b'{') => {
                self.i += 1;
                if self.eat(b'}') {
                    return true;
                }
                loop {
                    self.ws();
                    if !(self.string() && self.eat(b':')) {
                        return false;
                    }
                    self.ws();
                    if !self.skip(depth + 1) {
                        return false;
                    }
                    if self.eat(b'}') {
                        return true;
                    }
                    if !self.eat(b',') {
                        return false;
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                if self.eat(b']') {
                    return true;
                }
                loop {
                    self.ws();
                    if !self.skip(depth + 1) {
                        return false;
                    }
                    if self.eat(b']') {
                        return true;
                    }
                    if !self.eat(b',') {
                        return false;
                    }
                }
            }
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => false,
        }
    }

    /// Past a string; `\u` escapes are refused (Arrow checks their surrogates).
    fn string(&mut self) -> bool {
        if self.peek() != Some(b'"') {
            return false;
        }
        self.i += 1;
        loop {
            let Some(n) = memchr::memchr2(b'"', b'\\', &self.s[self.i..]) else {
                return false;
            };
            self.i += n;
            if self.s[self.i] == b'"' {
                self.i += 1;
                return true;
            }
            match self.s.get(self.i + 1) {
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 2,
                _ => return false,
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        let ok = self.s[self.i..].starts_with(word);
        if ok {
            self.i += word.len();
        }
        ok
    }

    /// Past a number: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self) -> bool {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return false,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return false;
            }
            self.digits();
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return false;
            }
            self.digits();
        }
        true
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::functions::parse_json_column;
    use datafusion::arrow::array::{Array, StringArray, StructArray};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::arrow::json::ReaderBuilder;
    use std::sync::Arc;

    fn cut(text: &str, fields: &Fields) -> Option<String> {
        let mut out = b"x".to_vec();
        if project(text.as_bytes(), fields, &mut out) {
            Some(String::from_utf8(out[1..].to_vec()).unwrap())
        } else {
            assert_eq!(out, b"x", "a refused text leaves the output as it was");
            None
        }
    }

    /// Each row decoded alone and whole, as `from_json` did before the cut: null where
    /// the text is null, not an object, or malformed.
    fn whole(texts: &[Option<&str>], fields: &Fields) -> StructArray {
        let schema = Arc::new(Schema::new(fields.clone()));
        let one = |t: &str| -> Option<StructArray> {
            if !t.trim_start().starts_with('{') {
                return None;
            }
            let mut d = ReaderBuilder::new(schema.clone())
                .with_strict_mode(false)
                .build_decoder()
                .unwrap();
            d.decode(t.as_bytes()).ok()?;
            let b = d.flush().ok()??;
            (b.num_rows() == 1).then(|| StructArray::from(b))
        };
        let null = || StructArray::new_null(fields.clone(), 1);
        let rows: Vec<StructArray> = texts
            .iter()
            .map(|t| t.and_then(one).unwrap_or_else(null))
            .collect();
        let refs: Vec<&dyn Array> = rows.iter().map(|r| r as &dyn Array).collect();
        let all = datafusion::arrow::compute::concat(&refs).unwrap();
        all.as_any().downcast_ref::<StructArray>().unwrap().clone()
    }

    fn tweet_fields() -> Fields {
        crate::ddl::parse_schema(
            "entities STRUCT<hashtags: ARRAY<STRUCT<text: STRING>>>, timestamp_ms STRING, \
             user STRUCT<id: BIGINT, verified: BOOLEAN>, n DOUBLE, tags MAP<STRING, INT>",
        )
        .unwrap()
        .fields()
        .clone()
    }

    #[test]
    fn cut_keeps_only_the_named_members() {
        let f = tweet_fields();
        let t = r#" {"created_at":"Mon","entities":{"hashtags":[{"text":"a","indices":[1,2]},{"indices":[]}],"urls":[{"u":"x\"y"}]},"id":-1.5e+3,"timestamp_ms":"17","truncated":false,"user":{"id":3,"name":"n","verified":true,"x":null}} "#;
        assert_eq!(
            cut(t, &f).unwrap(),
            r#"{"entities":{"hashtags":[{"text":"a"},{}]},"timestamp_ms":"17","user":{"id":3,"verified":true}}"#
        );
        // Duplicates stay, in order; a member of another type is copied as it is.
        assert_eq!(
            cut(r#"{"n":1,"n":"x","entities":[1],"tags":{"k":1}}"#, &f).unwrap(),
            r#"{"n":1,"n":"x","entities":[1],"tags":{"k":1}}"#
        );
        assert_eq!(cut("{}", &f).unwrap(), "{}");
        assert_eq!(cut(r#"{"Timestamp_ms":"1"}"#, &f).unwrap(), "{}");
    }

    #[test]
    fn what_the_cut_is_unsure_of_is_refused() {
        let f = tweet_fields();
        for t in [
            r#"{"a":"\u00e9"}"#,            // \u escape: Arrow checks surrogates
            r#"{"time\u0073tamp_ms":"1"}"#, // escaped member name
            r#"{"a":1,}"#,                  // Arrow takes it, the strict grammar does not
            r#"{"a":1 "b":2}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":tru}"#,
            r#"{"a":"x}"#,
            r#"{"a":1}{"b":2}"#,
            r#"{"a":1} x"#,
            r#"{"a" 1}"#,
            r#"{1:1}"#,
            r#"{"a":[1,]}"#,
            r#"{"a":"\q"}"#,
            "[1]",
            "",
        ] {
            assert_eq!(cut(t, &f), None, "{t}");
        }
        let deep = format!("{}1{}", r#"{"a":["#.repeat(100), "]}".repeat(100));
        assert_eq!(cut(&deep, &f), None);
        let two = Fields::from(vec![
            Field::new("a", DataType::Utf8, true),
            Field::new("a", DataType::Int64, true),
        ]);
        assert_eq!(cut(r#"{"a":1}"#, &two), None);
    }

    #[test]
    fn decoding_the_cut_equals_decoding_the_whole() {
        let f = tweet_fields();
        let texts = [
            Some(
                r#"{"entities":{"hashtags":[{"text":"Rust"},{"text":null}],"urls":[]},"timestamp_ms":"1796654515180","user":{"id":7,"verified":false,"name":"x"},"n":2.5,"tags":{"a":1},"extra":{"deep":[[{"x":"\"y\""}]]}}"#,
            ),
            None,
            Some("not json"),
            Some(r#"{"entities": "#),
            Some(r#"  {"timestamp_ms": "1", "entities": null}"#),
            Some(r#"{"entities":{"hashtags":[{"text":"\u00e9"}]}}"#),
            Some(r#"{"entities":{"hashtags":[{"text":1}]}}"#), // type conflict: null row
            Some(r#"{"n":1,"n":2}"#),
            Some(r#"{"n":"x"}"#),
            Some(r#"{"a":1,,"n":3}"#),
            Some(r#"{"user":{"id":1.5}}"#),
            Some(r#"{"Entities":{"hashtags":[{"text":"x"}]},"timestamp_ms":"9"}"#),
            Some(r#"{"entities":{"hashtags":[]},"x":[1,{"y":true}]}"#),
            Some("{}"),
        ];
        let input = StringArray::from(texts.to_vec());
        assert_eq!(parse_json_column(&input, &f).unwrap(), whole(&texts, &f));
        // Only well-formed rows: the fast path, all of it cut.
        let good: Vec<Option<&str>> = [0, 1, 4, 5, 7, 11, 12, 13]
            .iter()
            .map(|&i| texts[i])
            .collect();
        let input = StringArray::from(good.clone());
        assert_eq!(parse_json_column(&input, &f).unwrap(), whole(&good, &f));
    }
}
