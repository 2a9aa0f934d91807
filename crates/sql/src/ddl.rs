//! Spark's DDL type strings (`id BIGINT, user STRUCT<name: STRING>, tags ARRAY<STRING>`)
//! and interval strings (`'1 minute'`, `10 SECONDS`).

use crate::error::{Result, SqlError};
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, TimeUnit};
use std::sync::Arc;

/// Parses a Spark DDL schema (`a INT, b STRUCT<c: STRING>`) into Arrow fields.
/// Also accepts a bare `STRUCT<...>` type.
pub fn parse_schema(ddl: &str) -> Result<Schema> {
    let mut p = Parser::new(ddl);
    p.skip_ws();
    let fields = if p.peek_word_is("struct") && p.rest().trim_end().ends_with('>') {
        match p.data_type()? {
            DataType::Struct(fields) => fields.iter().map(|f| f.as_ref().clone()).collect(),
            _ => unreachable!("struct parsed"),
        }
    } else {
        p.field_list(None)?
    };
    p.skip_ws();
    if !p.at_end() {
        return Err(p.error("unexpected text after the schema"));
    }
    if fields.is_empty() {
        return Err(SqlError::Query(format!("empty schema: {ddl:?}")));
    }
    Ok(Schema::new(fields))
}

/// Parses one Spark type name (`BIGINT`, `ARRAY<STRING>`, `DECIMAL(10,2)`).
pub fn parse_type(ddl: &str) -> Result<DataType> {
    let mut p = Parser::new(ddl);
    let t = p.data_type()?;
    p.skip_ws();
    if !p.at_end() {
        return Err(p.error("unexpected text after the type"));
    }
    Ok(t)
}

/// Nesting limit for types, so a hostile schema string cannot exhaust the stack.
const MAX_DEPTH: usize = 32;

struct Parser<'a> {
    text: &'a str,
    pos: usize,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Parser {
            text,
            pos: 0,
            depth: 0,
        }
    }
    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }
    fn at_end(&self) -> bool {
        self.pos >= self.text.len()
    }
    fn error(&self, what: &str) -> SqlError {
        SqlError::Query(format!(
            "schema {:?}: {what} at position {}",
            self.text, self.pos
        ))
    }
    fn skip_ws(&mut self) {
        while let Some(c) = self.rest().chars().next() {
            if c.is_whitespace() {
                self.pos += c.len_utf8();
            } else {
                break;
            }
        }
    }
    fn peek_word_is(&self, w: &str) -> bool {
        let r = self.rest();
        r.len() >= w.len()
            && r[..w.len()].eq_ignore_ascii_case(w)
            && !r[w.len()..]
                .chars()
                .next()
                .is_some_and(|c| c.is_alphanumeric() || c == '_')
    }
    fn eat(&mut self, c: char) -> bool {
        self.skip_ws();
        if self.rest().starts_with(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }
    fn expect(&mut self, c: char) -> Result<()> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.error(&format!("expected '{c}'")))
        }
    }
    fn ident(&mut self) -> Result<String> {
        self.skip_ws();
        if self.rest().starts_with('`') {
            let body = &self.rest()[1..];
            let end = body.find('`').ok_or_else(|| self.error("unterminated `"))?;
            let name = body[..end].to_string();
            self.pos += end + 2;
            return Ok(name);
        }
        let len = self
            .rest()
            .char_indices()
            .find(|(_, c)| !(c.is_alphanumeric() || *c == '_'))
            .map(|(i, _)| i)
            .unwrap_or(self.rest().len());
        if len == 0 {
            return Err(self.error("expected a name"));
        }
        let name = self.rest()[..len].to_string();
        self.pos += len;
        Ok(name)
    }
    fn number(&mut self) -> Result<u32> {
        let w = self.ident()?;
        w.parse().map_err(|_| self.error("expected a number"))
    }

    /// `name type [NOT NULL] [COMMENT '...'], ...` until `close` (or end of text).
    fn field_list(&mut self, close: Option<char>) -> Result<Vec<Field>> {
        let mut fields = Vec::new();
        loop {
            self.skip_ws();
            if self.at_end() || close.is_some_and(|c| self.rest().starts_with(c)) {
                break;
            }
            let name = self.ident()?;
            self.eat(':');
            let t = self.data_type()?;
            self.skip_ws();
            let mut nullable = true;
            if self.peek_word_is("not") {
                self.ident()?;
                self.skip_ws();
                if !self.peek_word_is("null") {
                    return Err(self.error("expected NULL after NOT"));
                }
                self.ident()?;
                nullable = false;
                self.skip_ws();
            }
            if self.peek_word_is("comment") {
                self.ident()?;
                self.skip_ws();
                let q = self
                    .rest()
                    .chars()
                    .next()
                    .ok_or_else(|| self.error("expected a comment"))?;
                if q != '\'' && q != '"' {
                    return Err(self.error("expected a quoted comment"));
                }
                let body = &self.rest()[1..];
                let end = body
                    .find(q)
                    .ok_or_else(|| self.error("unterminated comment"))?;
                self.pos += end + 2;
            }
            fields.push(Field::new(name, t, nullable));
            if !self.eat(',') {
                break;
            }
        }
        Ok(fields)
    }

    fn data_type(&mut self) -> Result<DataType> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error("type nested too deeply"));
        }
        let name = self.ident()?.to_ascii_lowercase();
        let t = match name.as_str() {
            "string" | "varchar" | "char" | "text" => {
                if self.eat('(') {
                    self.number()?;
                    self.expect(')')?;
                }
                DataType::Utf8
            }
            "bigint" | "long" => DataType::Int64,
            "int" | "integer" => DataType::Int32,
            "smallint" | "short" => DataType::Int16,
            "tinyint" | "byte" => DataType::Int8,
            "boolean" | "bool" => DataType::Boolean,
            "double" => DataType::Float64,
            "float" | "real" => DataType::Float32,
            "date" => DataType::Date32,
            "timestamp" | "timestamp_ltz" | "timestamp_ntz" => {
                DataType::Timestamp(TimeUnit::Microsecond, None)
            }
            "binary" => DataType::Binary,
            "decimal" | "dec" | "numeric" => {
                let (mut p, mut s) = (10u32, 0u32);
                if self.eat('(') {
                    p = self.number()?;
                    if self.eat(',') {
                        s = self.number()?;
                    }
                    self.expect(')')?;
                }
                if p == 0 || p > 38 || s > p {
                    return Err(
                        self.error("decimal precision must be 1..=38 and scale <= precision")
                    );
                }
                DataType::Decimal128(p as u8, s as i8)
            }
            "array" => {
                self.expect('<')?;
                let item = self.data_type()?;
                self.expect('>')?;
                DataType::List(Arc::new(Field::new("item", item, true)))
            }
            "map" => {
                self.expect('<')?;
                let k = self.data_type()?;
                self.expect(',')?;
                let v = self.data_type()?;
                self.expect('>')?;
                let entries = Field::new(
                    "entries",
                    DataType::Struct(Fields::from(vec![
                        Field::new("key", k, false),
                        Field::new("value", v, true),
                    ])),
                    false,
                );
                DataType::Map(Arc::new(entries), false)
            }
            "struct" => {
                self.expect('<')?;
                let fields = self.field_list(Some('>'))?;
                self.expect('>')?;
                DataType::Struct(Fields::from(fields))
            }
            other => return Err(self.error(&format!("unknown type {other:?}"))),
        };
        self.depth -= 1;
        Ok(t)
    }
}

/// Parses an interval such as `1 minute`, `10 seconds`, `1 hour 30 minutes`, `500 ms`,
/// `INTERVAL 10 SECONDS` or `interval '1' minute`, into milliseconds.
pub fn parse_interval_ms(text: &str) -> Result<i64> {
    let cleaned: String = text.replace(['\'', '"'], " ");
    let mut words = cleaned.split_whitespace().peekable();
    if words
        .peek()
        .is_some_and(|w| w.eq_ignore_ascii_case("interval"))
    {
        words.next();
    }
    let mut total: i64 = 0;
    let mut any = false;
    while let Some(w) = words.next() {
        // Accept both "10 seconds" and "10s".
        let (num, unit) = match w.find(|c: char| c.is_alphabetic()) {
            Some(i) if i > 0 => (&w[..i], w[i..].to_string()),
            _ => (
                w,
                words
                    .next()
                    .ok_or_else(|| SqlError::Query(format!("interval {text:?}: missing unit")))?
                    .to_string(),
            ),
        };
        let n: f64 = num
            .parse()
            .map_err(|_| SqlError::Query(format!("interval {text:?}: {num:?} is not a number")))?;
        let unit_ms: f64 = match unit.to_ascii_lowercase().as_str() {
            "us" | "micro" | "micros" | "microsecond" | "microseconds" => 0.001,
            "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => 1.0,
            "s" | "sec" | "secs" | "second" | "seconds" => 1000.0,
            "m" | "min" | "mins" | "minute" | "minutes" => 60_000.0,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3_600_000.0,
            "d" | "day" | "days" => 86_400_000.0,
            "w" | "week" | "weeks" => 604_800_000.0,
            _ => {
                return Err(SqlError::Query(format!(
                    "interval {text:?}: unknown unit {unit:?}"
                )))
            }
        };
        let ms = n * unit_ms;
        if !ms.is_finite() || ms.abs() > 1e15 {
            return Err(SqlError::Query(format!(
                "interval {text:?} is out of range"
            )));
        }
        total += ms as i64;
        any = true;
    }
    if !any {
        return Err(SqlError::Query(format!("interval {text:?} is empty")));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_schema() {
        let s = parse_schema(
            "id BIGINT, text STRING, user STRUCT<name: STRING, followers_count: INT>, \
             entities STRUCT<hashtags: ARRAY<STRUCT<text: STRING, indices: ARRAY<INT>>>>, \
             price DECIMAL(10,2), m MAP<STRING, BIGINT>, `odd name` TIMESTAMP NOT NULL COMMENT 'x'",
        )
        .unwrap();
        assert_eq!(s.fields().len(), 7);
        assert_eq!(s.field(0).data_type(), &DataType::Int64);
        assert!(matches!(s.field(3).data_type(), DataType::Struct(f) if f.len() == 1));
        assert_eq!(s.field(4).data_type(), &DataType::Decimal128(10, 2));
        assert_eq!(s.field(6).name(), "odd name");
        assert!(!s.field(6).is_nullable());
        assert_eq!(
            parse_schema("STRUCT<a: INT, b: STRING>")
                .unwrap()
                .fields()
                .len(),
            2
        );
    }

    #[test]
    fn bad_schemas_are_errors_not_panics() {
        for bad in [
            "",
            "a",
            "a FOO",
            "a ARRAY<INT",
            "a STRUCT<b INT",
            "a DECIMAL(99,1)",
            "a INT b INT",
            "a INT,,",
        ] {
            assert!(parse_schema(bad).is_err(), "{bad:?} should fail");
        }
        let deep = format!("a {}INT{}", "ARRAY<".repeat(100), ">".repeat(100));
        assert!(parse_schema(&deep).is_err());
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_interval_ms("1 minute").unwrap(), 60_000);
        assert_eq!(parse_interval_ms("10 seconds").unwrap(), 10_000);
        assert_eq!(parse_interval_ms("INTERVAL 10 SECONDS").unwrap(), 10_000);
        assert_eq!(parse_interval_ms("interval '1' hour").unwrap(), 3_600_000);
        assert_eq!(parse_interval_ms("1 hour 30 minutes").unwrap(), 5_400_000);
        assert_eq!(parse_interval_ms("500 ms").unwrap(), 500);
        assert_eq!(parse_interval_ms("2s").unwrap(), 2000);
        assert!(parse_interval_ms("ten seconds").is_err());
        assert!(parse_interval_ms("5 fortnights").is_err());
        assert!(parse_interval_ms("").is_err());
    }
}
