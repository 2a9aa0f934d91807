//! Spark's SQL dialect on DataFusion's parser: names resolved case-insensitively (Spark's
//! `spark.sql.caseSensitive=false`), Spark's non-reserved keywords (`offset`,
//! `partition`, `timestamp`, `key`, `value`, ...) usable as column and field names,
//! backticks as identifier quotes and double quotes as strings, and errors that point at
//! the query file's line and column.
//!
//! DataFusion lower-cases unquoted identifiers and resolves them case-sensitively, and
//! its parser reads `offset` after a comma as the OFFSET clause. Runnel rewrites each
//! query's tokens before DataFusion sees them: an identifier that names a known column,
//! field or alias (`Names`) becomes that name, quoted, with the case it was declared
//! with. A `SourceMap` takes a position in the rewritten text back to the file.

use crate::error::SqlError;
use datafusion::arrow::datatypes::{DataType, Fields};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, Tokenizer, Word};
use std::collections::HashMap;

/// Spark's setting: `SET spark.sql.caseSensitive = true` makes names case-sensitive.
pub const CASE_SENSITIVE_KEY: &str = "spark.sql.caseSensitive";

/// Most structs listed in a "field not found" message, and fields per struct.
const MAX_LISTED_STRUCTS: usize = 12;
const MAX_LISTED_FIELDS: usize = 40;

/// The names a query may refer to: columns of the tables it can read, fields of the
/// structs in them and in its `from_json` schemas, and its own aliases.
#[derive(Debug, Default)]
pub struct Names {
    /// Lower-cased name -> the declared name, or None when two names differ only in case
    /// (then nothing is rewritten and DataFusion's own resolution decides).
    by_lower: HashMap<String, Option<String>>,
    /// (where, field names) of each struct type, for "field not found" messages.
    structs: Vec<(String, Vec<String>)>,
    /// Lower-cased names of the columns and fields that hold a struct.
    struct_columns: std::collections::HashSet<String>,
}

impl Names {
    pub fn add(&mut self, name: &str) {
        let lower = name.to_lowercase();
        match self.by_lower.get_mut(&lower) {
            None => {
                self.by_lower.insert(lower, Some(name.to_string()));
            }
            Some(Some(seen)) if seen != name => {
                self.by_lower.insert(lower, None);
            }
            Some(_) => {}
        }
    }

    /// Adds the fields of a table or struct (`label` names it in messages), and of the
    /// structs nested in them.
    pub fn add_fields(&mut self, label: &str, fields: &Fields) {
        for f in fields {
            self.add(f.name());
            self.add_type(&format!("{label}.{}", f.name()), f.data_type());
        }
    }

    /// Whether `name` (any case) is a column or field holding a struct.
    pub fn is_struct_column(&self, name: &str) -> bool {
        self.struct_columns.contains(&name.to_lowercase())
    }

    fn add_type(&mut self, label: &str, t: &DataType) {
        match t {
            DataType::Struct(fields) => {
                let last = label
                    .rsplit('.')
                    .next()
                    .unwrap_or(label)
                    .trim_end_matches("[]");
                self.struct_columns.insert(last.to_lowercase());
                if self.structs.len() < MAX_LISTED_STRUCTS {
                    let names = fields.iter().map(|f| f.name().clone()).collect();
                    self.structs.push((label.to_string(), names));
                }
                self.add_fields(label, fields);
            }
            DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
                self.add_type(&format!("{label}[]"), f.data_type())
            }
            DataType::Map(f, _) => self.add_type(label, f.data_type()),
            _ => {}
        }
    }

    /// Adds what a statement declares itself: the fields of its schema strings
    /// (`from_json(value, 'a INT, b STRUCT<c: INT>') AS d`) and its aliases (`AS name`).
    pub fn add_statement(&mut self, tokens: &[Token]) {
        let idx: Vec<usize> = (0..tokens.len())
            .filter(|&i| !matches!(tokens[i], Token::Whitespace(_)))
            .collect();
        // Whether each open parenthesis belongs to CAST: `AS type` there is no alias.
        let mut parens: Vec<bool> = Vec::new();
        for (n, &i) in idx.iter().enumerate() {
            let prev = n.checked_sub(1).map(|p| &tokens[idx[p]]);
            match &tokens[i] {
                Token::LParen => {
                    parens.push(prev.is_some_and(|p| word_is(p, "CAST") || word_is(p, "TRY_CAST")))
                }
                Token::RParen => {
                    parens.pop();
                }
                Token::SingleQuotedString(s) => {
                    if let Ok(schema) = crate::ddl::parse_schema(s) {
                        let label = schema_alias(tokens, &idx[n + 1..])
                            .unwrap_or_else(|| "from_json".to_string());
                        let fields = schema.fields().clone();
                        self.add_type(&label, &DataType::Struct(fields));
                    }
                }
                Token::Word(w)
                    if parens.last() != Some(&true) && prev.is_some_and(|p| word_is(p, "AS")) =>
                {
                    self.add(&w.value);
                }
                _ => {}
            }
        }
    }

    /// The token an identifier `w` becomes, if it names something known: that name,
    /// quoted, in its declared case (or as written, when names are case-sensitive).
    /// `prev` and `next` are the tokens around it, whitespace skipped.
    pub fn resolve(
        &self,
        w: &Word,
        prev: Option<&Token>,
        next: Option<&Token>,
        case_sensitive: bool,
    ) -> Option<Token> {
        let backticked = w.quote_style == Some('`');
        if !(w.quote_style.is_none() || backticked) {
            return None;
        }
        let as_written = || Token::make_word(&w.value, Some('"'));
        if !backticked && next == Some(&Token::LParen) {
            return None; // a function call
        }
        let Some(entry) = self.by_lower.get(&w.value.to_lowercase()) else {
            return backticked.then(as_written);
        };
        if !backticked && w.keyword != Keyword::NoKeyword && !identifier_position(prev, next) {
            return None;
        }
        if case_sensitive {
            return Some(as_written());
        }
        match entry {
            Some(name) => {
                // A lower-case name written unquoted, not a keyword: DataFusion finds it.
                if !backticked && w.keyword == Keyword::NoKeyword && *name == name.to_lowercase() {
                    return None;
                }
                Some(Token::make_word(name, Some('"')))
            }
            None => backticked.then(as_written),
        }
    }

    /// The fields of the structs in view, for a "field not found" message.
    fn struct_listing(&self) -> String {
        self.structs
            .iter()
            .map(|(label, fields)| {
                let mut list: Vec<&str> = fields
                    .iter()
                    .take(MAX_LISTED_FIELDS)
                    .map(String::as_str)
                    .collect();
                if fields.len() > MAX_LISTED_FIELDS {
                    list.push("...");
                }
                format!("{label}: {}", list.join(", "))
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The alias after the call a schema string is an argument of: `from_json(v, '..') AS d`.
fn schema_alias(tokens: &[Token], after: &[usize]) -> Option<String> {
    let mut depth = 0i32;
    let mut it = after.iter().map(|&i| &tokens[i]);
    for t in it.by_ref() {
        match t {
            Token::LParen => depth += 1,
            Token::RParen if depth == 0 => break,
            Token::RParen => depth -= 1,
            _ => {}
        }
    }
    match (it.next(), it.next()) {
        (Some(a), Some(Token::Word(w))) if word_is(a, "AS") => Some(w.value.clone()),
        _ => None,
    }
}

fn word_is(t: &Token, w: &str) -> bool {
    matches!(t, Token::Word(word) if word.quote_style.is_none() && word.value.eq_ignore_ascii_case(w))
}

/// Whether a keyword between `prev` and `next` stands where an expression does (so it is
/// a column: `SELECT partition, offset FROM`), not where it starts a clause (`OFFSET 5`,
/// `PARTITION BY`), a typed literal (`TIMESTAMP '...'`) or a type (`AS TIMESTAMP`).
fn identifier_position(prev: Option<&Token>, next: Option<&Token>) -> bool {
    const BEFORE: &[&str] = &[
        "SELECT", "BY", "WHERE", "AND", "OR", "NOT", "ON", "HAVING", "DISTINCT", "WHEN", "THEN",
        "ELSE", "CASE", "IN", "IS",
    ];
    let prev_ok = match prev {
        None => false,
        Some(
            Token::Comma
            | Token::LParen
            | Token::Period
            | Token::LBracket
            | Token::Eq
            | Token::DoubleEq
            | Token::Neq
            | Token::Lt
            | Token::Gt
            | Token::LtEq
            | Token::GtEq
            | Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::Mod
            | Token::StringConcat,
        ) => true,
        Some(t) => BEFORE.iter().any(|w| word_is(t, w)),
    };
    let next_ok = !matches!(
        next,
        Some(Token::SingleQuotedString(_) | Token::Number(_, _) | Token::LParen)
    ) && !next.is_some_and(|t| word_is(t, "BY"));
    prev_ok && next_ok
}

/// Tokens of `sql` with where each starts (1-based line and column in `sql`).
pub fn tokenize_located(sql: &str) -> crate::error::Result<(Vec<Token>, Vec<Location>)> {
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| SqlError::Query(format!("{e}")))?;
    Ok(tokens.into_iter().map(|t| (t.token, t.span.start)).unzip())
}

/// Where each token of a rewritten query came from: (line, column) in the rewritten
/// text -> (line, column) in the statement as written.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SourceMap {
    marks: Vec<((u64, u64), (u64, u64))>,
}

impl SourceMap {
    /// Renders `tokens` (each with the place it came from) and maps their positions.
    pub fn render(tokens: &[Token], origins: &[Location]) -> (String, SourceMap) {
        let mut text = String::new();
        let mut marks = Vec::with_capacity(tokens.len());
        let (mut line, mut col) = (1u64, 1u64);
        for (t, o) in tokens.iter().zip(origins) {
            let s = t.to_string();
            if !matches!(t, Token::Whitespace(_)) && o.line > 0 {
                marks.push(((line, col), (o.line, o.column)));
            }
            for c in s.chars() {
                if c == '\n' {
                    line += 1;
                    col = 1;
                } else {
                    col += 1;
                }
            }
            text.push_str(&s);
        }
        (text, SourceMap { marks })
    }

    /// The written position of the token at or before `at` in the rewritten text.
    pub fn origin(&self, at: (u64, u64)) -> Option<(u64, u64)> {
        self.marks
            .iter()
            .take_while(|(out, _)| *out <= at)
            .last()
            .map(|(_, o)| *o)
    }
}

/// Where a statement is: the file's text and the statement's first character in it.
#[derive(Clone, Copy, Debug)]
pub struct Place<'a> {
    pub file: &'a str,
    pub line: u64,
    pub col: u64,
}

/// An error from DataFusion about a rewritten statement `sql`, made to name the file's
/// line and column with a caret under the place, and (for a struct field it cannot find)
/// the fields there are. `line_shift` is how many lines precede the statement in the
/// text DataFusion got.
pub fn locate(
    err: SqlError,
    place: Place,
    sql: &str,
    map: &SourceMap,
    line_shift: u64,
    names: &Names,
) -> SqlError {
    let SqlError::DataFusion(e) = &err else {
        return err;
    };
    let span = e
        .iter()
        .find_map(|e| e.diagnostic())
        .and_then(|d| d.span)
        .map(|s| (s.start.line, s.start.column))
        .filter(|(l, _)| *l > 0);
    let text = e.to_string();
    let at = span
        .or_else(|| parser_location(&text))
        .or_else(|| missing_field_location(&text, sql).map(|(l, c)| (l + line_shift, c)));
    let mut message = clean_message(&text);
    if message.contains("not found in struct") && !names.structs.is_empty() {
        message.push_str(&format!(
            " (structs and their fields: {})",
            names.struct_listing()
        ));
    }
    let written = at
        .filter(|(l, _)| *l > line_shift)
        .and_then(|(l, c)| map.origin((l - line_shift, c)));
    let Some((l, c)) = written else {
        return SqlError::Query(message);
    };
    let line = place.line + l - 1;
    let col = if l == 1 { place.col + c - 1 } else { c };
    SqlError::Query(format!("{message}\n{}", caret(place.file, line, col)))
}

/// `at line L, column C:` and the line with a caret under the column.
pub fn caret(file: &str, line: u64, col: u64) -> String {
    let text = file
        .lines()
        .nth(line.saturating_sub(1) as usize)
        .unwrap_or("");
    let gutter = line.to_string();
    let pad: String = text
        .chars()
        .take(col.saturating_sub(1) as usize)
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .collect();
    format!(
        "  at line {line}, column {col}:\n  {gutter} | {text}\n  {} | {pad}^",
        " ".repeat(gutter.len())
    )
}

/// Where the field a "Field x not found in struct" error names is accessed in `sql`
/// (`.x` or `."x"`), as (line, column).
fn missing_field_location(text: &str, sql: &str) -> Option<(u64, u64)> {
    let field = text
        .split("Field ")
        .nth(1)?
        .split(" not found in struct")
        .next()?;
    let at = [format!(".\"{field}\""), format!(".{field}")]
        .iter()
        .find_map(|p| {
            sql.match_indices(p.as_str()).map(|(i, _)| i).find(|&i| {
                !sql[i + p.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
            })
        })?
        + 1;
    let before = &sql[..at];
    let line = before.matches('\n').count() as u64 + 1;
    let col = before.rsplit('\n').next().unwrap_or("").chars().count() as u64 + 1;
    Some((line, col))
}

/// The `at Line: L, Column: C` sqlparser puts at the end of its errors.
fn parser_location(text: &str) -> Option<(u64, u64)> {
    let at = text.rfind("at Line: ")?;
    let rest = &text[at + "at Line: ".len()..];
    let (l, rest) = rest.split_once(", Column: ")?;
    let c: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((l.trim().parse().ok()?, c.parse().ok()?))
}

/// DataFusion's message without its position (which is in the rewritten text) and
/// without the advice to use double quotes (a string in Spark: backticks quote names).
fn clean_message(text: &str) -> String {
    let mut m = text.to_string();
    if let Some(inner) = m
        .strip_prefix("SQL error: ParserError(\"")
        .and_then(|s| s.strip_suffix("\")"))
    {
        m = format!("syntax error: {}", inner.replace("\\\"", "\""));
    }
    if let Some(at) = m.rfind(" at Line: ") {
        if parser_location(&m[at..]).is_some() {
            let end = m[at..]
                .find(|c: char| c == '\n')
                .map_or(m.len(), |e| at + e);
            m.replace_range(at..end, "");
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::Field;

    fn names() -> Names {
        let mut n = Names::default();
        n.add_fields(
            "raw",
            &Fields::from(vec![
                Field::new("offset", DataType::Int64, false),
                Field::new("partition", DataType::Int32, false),
                Field::new("timestampType", DataType::Int32, false),
                Field::new("value", DataType::Binary, true),
            ]),
        );
        n
    }

    fn rewrite(sql: &str, n: &Names, cs: bool) -> String {
        let (tokens, _) = tokenize_located(sql).unwrap();
        let idx: Vec<usize> = (0..tokens.len())
            .filter(|&i| !matches!(tokens[i], Token::Whitespace(_)))
            .collect();
        let mut out = tokens.clone();
        for (k, &i) in idx.iter().enumerate() {
            if let Token::Word(w) = &tokens[i] {
                let prev = k.checked_sub(1).map(|p| &tokens[idx[p]]);
                let next = idx.get(k + 1).map(|&j| &tokens[j]);
                if let Some(t) = n.resolve(w, prev, next, cs) {
                    out[i] = t;
                }
            }
        }
        out.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn keywords_become_columns_only_where_an_expression_stands() {
        let n = names();
        assert_eq!(
            rewrite("SELECT partition, offset FROM raw", &n, false),
            r#"SELECT "partition", "offset" FROM raw"#
        );
        assert_eq!(
            rewrite(
                "SELECT x FROM raw ORDER BY Offset LIMIT 1 OFFSET 2",
                &n,
                false
            ),
            r#"SELECT x FROM raw ORDER BY "offset" LIMIT 1 OFFSET 2"#
        );
        assert_eq!(
            rewrite(
                "SELECT CAST(value AS STRING), count(*) OVER (PARTITION BY partition)",
                &n,
                false
            ),
            r#"SELECT CAST("value" AS STRING), count(*) OVER (PARTITION BY "partition")"#
        );
    }

    #[test]
    fn names_resolve_case_insensitively_unless_case_sensitive() {
        let n = names();
        assert_eq!(
            rewrite(
                "SELECT TIMESTAMPTYPE, `timestamptype`, timestampType FROM raw",
                &n,
                false
            ),
            r#"SELECT "timestampType", "timestampType", "timestampType" FROM raw"#
        );
        assert_eq!(
            rewrite("SELECT TIMESTAMPTYPE, timestampType FROM raw", &n, true),
            r#"SELECT "TIMESTAMPTYPE", "timestampType" FROM raw"#
        );
        // Unknown names and function calls are left alone.
        assert_eq!(
            rewrite("SELECT other, offset(1) FROM raw", &n, false),
            "SELECT other, offset(1) FROM raw"
        );
    }

    #[test]
    fn statement_names_come_from_schema_strings_and_aliases() {
        let mut n = Names::default();
        let (tokens, _) = tokenize_located(
            "SELECT from_json(CAST(value AS STRING), 'fooBar STRING, s STRUCT<innerX: INT>') AS d, x AS myCol FROM raw",
        )
        .unwrap();
        n.add_statement(&tokens);
        let w = |s: &str| Word {
            value: s.into(),
            quote_style: None,
            keyword: Keyword::NoKeyword,
        };
        let resolved = |s: &str| {
            n.resolve(&w(s), Some(&Token::Period), None, false)
                .map(|t| t.to_string())
        };
        assert_eq!(resolved("foobar").as_deref(), Some(r#""fooBar""#));
        assert_eq!(resolved("INNERX").as_deref(), Some(r#""innerX""#));
        assert_eq!(resolved("MYCOL").as_deref(), Some(r#""myCol""#));
        // `AS STRING` inside CAST is a type, not an alias.
        assert_eq!(resolved("string"), None);
        assert!(
            n.is_struct_column("D") && n.is_struct_column("s") && !n.is_struct_column("fooBar")
        );
        assert!(
            n.struct_listing().contains("d: fooBar, s"),
            "{}",
            n.struct_listing()
        );
        assert!(
            n.struct_listing().contains("d.s: innerX"),
            "{}",
            n.struct_listing()
        );
    }

    #[test]
    fn source_map_and_caret_point_into_the_file() {
        let (tokens, locs) = tokenize_located("SELECT a,\n  offset FROM t").unwrap();
        let mut out = tokens.clone();
        let at = tokens
            .iter()
            .position(|t| matches!(t, Token::Word(w) if w.value == "offset"))
            .unwrap();
        out[at] = Token::make_word("offset", Some('"'));
        let (text, map) = SourceMap::render(&out, &locs);
        assert_eq!(text, "SELECT a,\n  \"offset\" FROM t");
        assert_eq!(map.origin((2, 12)), Some((2, 10))); // FROM
        assert_eq!(map.origin((2, 5)), Some((2, 3))); // inside "offset"
        let file = "-- q\nSET x = 1;\nSELECT a,\n  offset FROM t";
        let c = caret(file, 4, 3);
        assert!(
            c.contains("at line 4, column 3:\n  4 |   offset FROM t\n    |   ^"),
            "{c}"
        );
        assert_eq!(
            missing_field_location(
                "Field nope not found in struct",
                "SELECT d.nopes,\n d.\"nope\""
            ),
            Some((2, 4))
        );
        assert_eq!(
            parser_location("Expected: end of statement, found: FROM at Line: 2, Column: 12"),
            Some((2, 12))
        );
        assert_eq!(
            clean_message(
                "SQL error: ParserError(\"Expected: x, found: y at Line: 1, Column: 5\")"
            ),
            "syntax error: Expected: x, found: y"
        );
    }
}
