//! The query file: Spark SQL statements, split and pre-processed before DataFusion sees
//! them.
//!
//! - `SET name = value;` defines `${name}` for later statements (values given on the
//!   command line win, as with spark-sql's `--hivevar`).
//! - `CREATE [OR REPLACE] TEMPORARY VIEW name USING format OPTIONS (key 'value', ...);`
//!   declares a source or a sink (Spark's data source syntax).
//! - `CREATE [OR REPLACE] TEMPORARY VIEW name AS SELECT ...;` a view, planned by DataFusion.
//! - `INSERT INTO sink SELECT ...;` the streaming query, written to a declared sink. A bare
//!   `SELECT ...;` writes to the console.
//!
//! In queries, `relation WATERMARK column DELAY OF INTERVAL 10 SECONDS [AS alias]`
//! (Spark/Databricks' watermark clause) declares a watermark, `explode(...)` is
//! DataFusion's `unnest(...)`, and `SELECT DISTINCT ON (cols) WITHIN WATERMARK ...` is
//! Spark's `dropDuplicatesWithinWatermark(cols)` (see `dedup.rs`).

use crate::ddl;
use crate::dialect::{self, Names, Place, SourceMap};
use crate::error::{Result, SqlError};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, Whitespace, Word};
use std::collections::BTreeMap;

/// Largest query file accepted.
pub const MAX_SCRIPT_BYTES: usize = 1 << 20;

/// A `USING format OPTIONS (...)` declaration.
#[derive(Clone, Debug, PartialEq)]
pub struct Declaration {
    pub name: String,
    pub format: String,
    pub options: BTreeMap<String, String>,
}

/// A watermark declared with the WATERMARK clause.
#[derive(Clone, Debug, PartialEq)]
pub struct WatermarkDecl {
    pub column: String,
    pub delay_ms: i64,
}

/// A query as written (after `${var}` substitution), kept to rewrite it again once the
/// names it may refer to are known, and to point errors at the file.
#[derive(Clone, Debug, PartialEq)]
pub struct QuerySource {
    /// The whole statement.
    pub text: String,
    /// The index of the query's first token among the statement's tokens.
    pub from_token: usize,
    /// Where the statement starts in the file (1-based).
    pub line: u64,
    pub col: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Statement {
    Declare(Declaration),
    /// `CREATE VIEW name AS <sql>`, rewritten for DataFusion.
    View {
        name: String,
        sql: String,
        source: QuerySource,
    },
    /// The streaming query: target sink name (None = console) and rewritten SELECT.
    Query {
        sink: Option<String>,
        sql: String,
        source: QuerySource,
    },
}

/// A parsed query file.
#[derive(Clone, Debug, Default)]
pub struct Script {
    pub statements: Vec<Statement>,
    pub watermarks: Vec<WatermarkDecl>,
    pub vars: BTreeMap<String, String>,
    /// The file's text, for errors that show the line.
    pub text: String,
}

impl Script {
    /// Parses a script; `defines` are `${name}` values that override `SET`.
    pub fn parse(text: &str, defines: &BTreeMap<String, String>) -> Result<Script> {
        if text.len() > MAX_SCRIPT_BYTES {
            return Err(SqlError::Query(format!(
                "query file larger than {MAX_SCRIPT_BYTES} bytes"
            )));
        }
        let mut script = Script {
            vars: defines.clone(),
            text: text.to_string(),
            ..Script::default()
        };
        for (line, col, raw) in split_statements(text)? {
            let stmt = substitute(&raw, &script.vars)?;
            let (tokens, locs) = dialect::tokenize_located(&stmt)?;
            let source = |from_token: usize| QuerySource {
                text: stmt.clone(),
                from_token,
                line,
                col,
            };
            let words: Vec<&Token> = tokens.iter().filter(|t| !is_ws(t)).collect();
            let Some(first) = words.first() else { continue };
            if word_is(first, "SET") {
                let (k, v) = parse_set(&stmt)?;
                script.vars.entry(k).or_insert(v);
            } else if word_is(first, "CREATE") {
                script.statements.push(parse_create(
                    &tokens,
                    &locs,
                    &mut script.watermarks,
                    source,
                )?);
            } else if word_is(first, "INSERT") {
                // INSERT INTO name <query>
                let mut it = tokens.iter().enumerate().filter(|(_, t)| !is_ws(t));
                it.next();
                let (_, into) = it
                    .next()
                    .ok_or_else(|| SqlError::Query("INSERT needs INTO".into()))?;
                if !word_is(into, "INTO") {
                    return Err(SqlError::Query(
                        "expected INSERT INTO <sink> SELECT ...".into(),
                    ));
                }
                let (_, name) = it
                    .next()
                    .ok_or_else(|| SqlError::Query("INSERT INTO needs a sink name".into()))?;
                let Token::Word(w) = name else {
                    return Err(SqlError::Query("INSERT INTO needs a sink name".into()));
                };
                let (rest_at, _) = it
                    .next()
                    .ok_or_else(|| SqlError::Query("INSERT INTO needs a query".into()))?;
                let (sql, _) = rewrite_query(
                    &tokens[rest_at..],
                    &locs[rest_at..],
                    &mut script.watermarks,
                    None,
                )?;
                script.statements.push(Statement::Query {
                    sink: Some(w.value.clone()),
                    sql,
                    source: source(rest_at),
                });
            } else if word_is(first, "SELECT")
                || word_is(first, "WITH")
                || matches!(first, Token::LParen)
            {
                let (sql, _) = rewrite_query(&tokens, &locs, &mut script.watermarks, None)?;
                script.statements.push(Statement::Query {
                    sink: None,
                    sql,
                    source: source(0),
                });
            } else {
                return Err(SqlError::Query(format!(
                    "unsupported statement: {}",
                    first_line(&stmt)
                )));
            }
        }
        let queries = script
            .statements
            .iter()
            .filter(|s| matches!(s, Statement::Query { .. }))
            .count();
        if queries != 1 {
            return Err(SqlError::Query(format!(
                "a query file must contain exactly one streaming query (INSERT INTO ... or SELECT ...), found {queries}"
            )));
        }
        Ok(script)
    }

    pub fn declaration(&self, name: &str) -> Option<&Declaration> {
        self.statements.iter().find_map(|s| match s {
            Statement::Declare(d) if d.name.eq_ignore_ascii_case(name) => Some(d),
            _ => None,
        })
    }

    /// The query's sink name and SQL.
    pub fn query(&self) -> (Option<&str>, &str) {
        self.statements
            .iter()
            .find_map(|s| match s {
                Statement::Query { sink, sql, .. } => Some((sink.as_deref(), sql.as_str())),
                _ => None,
            })
            .expect("parse checked there is one query")
    }

    /// The streaming query's source text.
    pub fn query_source(&self) -> &QuerySource {
        self.statements
            .iter()
            .find_map(|s| match s {
                Statement::Query { source, .. } => Some(source),
                _ => None,
            })
            .expect("parse checked there is one query")
    }

    /// Whether `SET spark.sql.caseSensitive = true` (Spark's default is false).
    pub fn case_sensitive(&self) -> bool {
        self.vars.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case(dialect::CASE_SENSITIVE_KEY)
                && v.trim().eq_ignore_ascii_case("true")
        })
    }

    /// Rewrites a view's or the query's text again, now resolving `names` as Spark
    /// does; also gives the map from the rewritten text back to the statement.
    pub fn resolve(&self, source: &QuerySource, names: &Names) -> Result<(String, SourceMap)> {
        let (tokens, locs) = dialect::tokenize_located(&source.text)?;
        let from = source.from_token.min(tokens.len());
        let mut scratch = Vec::new();
        rewrite_query(
            &tokens[from..],
            &locs[from..],
            &mut scratch,
            Some((names, self.case_sensitive())),
        )
    }

    /// Where a statement is in the file, for errors.
    pub fn place<'a>(&'a self, source: &QuerySource) -> Place<'a> {
        Place {
            file: &self.text,
            line: source.line,
            col: source.col,
        }
    }
}

fn first_line(s: &str) -> String {
    s.trim()
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(80)
        .collect()
}

fn is_ws(t: &Token) -> bool {
    matches!(t, Token::Whitespace(_))
}

fn word_is(t: &Token, w: &str) -> bool {
    matches!(t, Token::Word(word) if word.quote_style.is_none() && word.value.eq_ignore_ascii_case(w))
}

/// The statement's tokens, with where each came from in the statement.
#[derive(Default)]
struct Located {
    toks: Vec<Token>,
    locs: Vec<Location>,
}

impl Located {
    fn push(&mut self, t: Token, at: Location) {
        self.toks.push(t);
        self.locs.push(at);
    }

    fn pop(&mut self) -> Option<Token> {
        self.locs.pop();
        self.toks.pop()
    }

    fn last(&self) -> Option<&Token> {
        self.toks.last()
    }
}

fn render(tokens: &[Token]) -> String {
    tokens.iter().map(|t| t.to_string()).collect()
}

/// Splits on `;` outside quotes and comments: each statement with the line and column
/// (1-based) of its first character. Comments become spaces (their newlines stay), so a
/// position in a statement is the same position in the file.
pub fn split_statements(text: &str) -> Result<Vec<(u64, u64, String)>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = text.chars().collect();
    let (mut line, mut col) = (1u64, 1u64);
    let mut start = (1u64, 1u64);
    let mut i = 0;
    // Appends chars[i] (or a blank in its place) and moves the position past it.
    let mut take = |cur: &mut String, c: char, blank: bool| {
        cur.push(if blank && c != '\n' { ' ' } else { c });
        if c == '\n' {
            line += 1;
            col = 1;
        } else {
            col += 1;
        }
        (line, col)
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\'' | '"' | '`' => {
                take(&mut cur, c, false);
                i += 1;
                loop {
                    let Some(&d) = chars.get(i) else {
                        return Err(SqlError::Query(format!("unterminated {c} quote")));
                    };
                    take(&mut cur, d, false);
                    i += 1;
                    if d == c {
                        if chars.get(i) == Some(&c) {
                            take(&mut cur, c, false);
                            i += 1;
                            continue;
                        }
                        break;
                    }
                }
                continue;
            }
            '-' if chars.get(i + 1) == Some(&'-') => {
                while i < chars.len() && chars[i] != '\n' {
                    take(&mut cur, chars[i], true);
                    i += 1;
                }
                continue;
            }
            '/' if chars.get(i + 1) == Some(&'*') => {
                let end = (i + 2..chars.len())
                    .find(|&j| chars[j] == '*' && chars.get(j + 1) == Some(&'/'))
                    .map_or(chars.len(), |j| j + 2);
                while i < end {
                    take(&mut cur, chars[i], true);
                    i += 1;
                }
                continue;
            }
            ';' => {
                if !cur.trim().is_empty() {
                    out.push((start.0, start.1, std::mem::take(&mut cur)));
                }
                cur.clear();
                start = take(&mut String::new(), c, false);
            }
            _ => {
                take(&mut cur, c, false);
            }
        }
        i += 1;
    }
    if !cur.trim().is_empty() {
        out.push((start.0, start.1, cur));
    }
    Ok(out)
}

/// Replaces `${name}` (and `${name:-default}`) with variable values.
fn substitute(stmt: &str, vars: &BTreeMap<String, String>) -> Result<String> {
    let mut out = String::with_capacity(stmt.len());
    let mut rest = stmt;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| SqlError::Query("unterminated ${...}".into()))?;
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n.trim(), Some(d)),
            None => (inner.trim(), None),
        };
        match vars.get(name).map(String::as_str).or(default) {
            Some(v) => out.push_str(v),
            None => {
                return Err(SqlError::Query(format!(
                    "${{{name}}} is not defined (SET {name} = ...; or --define {name}=...)"
                )))
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn parse_set(stmt: &str) -> Result<(String, String)> {
    let body = stmt.trim();
    let body = body[3..].trim();
    let (k, v) = body
        .split_once('=')
        .ok_or_else(|| SqlError::Query(format!("expected SET name = value: {body}")))?;
    let v = v.trim();
    let v = v
        .strip_prefix('\'')
        .and_then(|s| s.strip_suffix('\''))
        .unwrap_or(v);
    Ok((k.trim().to_string(), v.to_string()))
}

fn parse_create(
    tokens: &[Token],
    locs: &[Location],
    wms: &mut Vec<WatermarkDecl>,
    source: impl Fn(usize) -> QuerySource,
) -> Result<Statement> {
    let idx: Vec<usize> = (0..tokens.len()).filter(|&i| !is_ws(&tokens[i])).collect();
    let mut k = 1;
    let at = |k: usize| idx.get(k).map(|&i| &tokens[i]);
    if at(k).is_some_and(|t| word_is(t, "OR")) {
        k += 2; // OR REPLACE
    }
    if at(k).is_some_and(|t| word_is(t, "TEMPORARY") || word_is(t, "TEMP")) {
        k += 1;
    }
    if !at(k).is_some_and(|t| word_is(t, "VIEW") || word_is(t, "TABLE")) {
        return Err(SqlError::Query("expected CREATE [TEMPORARY] VIEW".into()));
    }
    k += 1;
    let name = match at(k) {
        Some(Token::Word(w)) => w.value.clone(),
        _ => return Err(SqlError::Query("CREATE VIEW needs a name".into())),
    };
    k += 1;
    match at(k) {
        Some(t) if word_is(t, "USING") => {
            let format = match at(k + 1) {
                Some(Token::Word(w)) => w.value.to_ascii_lowercase(),
                _ => return Err(SqlError::Query(format!("{name}: USING needs a format"))),
            };
            let options = match at(k + 2) {
                Some(t) if word_is(t, "OPTIONS") => parse_options(&tokens[idx[k + 2] + 1..])?,
                None => BTreeMap::new(),
                Some(other) => {
                    return Err(SqlError::Query(format!(
                        "{name}: expected OPTIONS, found {other}"
                    )))
                }
            };
            Ok(Statement::Declare(Declaration {
                name,
                format,
                options,
            }))
        }
        Some(t) if word_is(t, "AS") => {
            let from = idx[k] + 1;
            let (sql, _) = rewrite_query(&tokens[from..], &locs[from..], wms, None)?;
            Ok(Statement::View {
                name,
                sql,
                source: source(from),
            })
        }
        _ => Err(SqlError::Query(format!(
            "{name}: expected USING format OPTIONS (...) or AS SELECT ..."
        ))),
    }
}

/// `( key value, 'key' = value, ... )`; keys may be dotted words or strings.
fn parse_options(tokens: &[Token]) -> Result<BTreeMap<String, String>> {
    let toks: Vec<&Token> = tokens.iter().filter(|t| !is_ws(t)).collect();
    if toks.first() != Some(&&Token::LParen) {
        return Err(SqlError::Query("OPTIONS must be followed by (".into()));
    }
    let mut out = BTreeMap::new();
    let mut i = 1;
    loop {
        match toks.get(i) {
            Some(Token::RParen) => {
                i += 1;
                break;
            }
            None => return Err(SqlError::Query("OPTIONS: missing )".into())),
            _ => {}
        }
        let mut key = String::new();
        match toks.get(i) {
            Some(Token::Word(w)) => key.push_str(&w.value),
            Some(Token::SingleQuotedString(s)) | Some(Token::DoubleQuotedString(s)) => {
                key.push_str(s)
            }
            _ => {}
        }
        if !key.is_empty() {
            i += 1;
            // Dotted keys: kafka.bootstrap.servers
            while toks.get(i) == Some(&&Token::Period) {
                match toks.get(i + 1) {
                    Some(Token::Word(w)) => {
                        key.push('.');
                        key.push_str(&w.value);
                        i += 2;
                    }
                    _ => break,
                }
            }
        }
        if key.is_empty() {
            return Err(SqlError::Query(format!(
                "OPTIONS: expected a key, found {:?}",
                toks.get(i)
            )));
        }
        if toks.get(i) == Some(&&Token::Eq) {
            i += 1;
        }
        let value = match toks.get(i) {
            Some(Token::SingleQuotedString(s)) | Some(Token::DoubleQuotedString(s)) => s.clone(),
            Some(Token::Number(n, _)) => n.clone(),
            Some(Token::Word(w)) => w.value.clone(),
            other => {
                return Err(SqlError::Query(format!(
                    "OPTIONS: {key} needs a value, found {other:?}"
                )))
            }
        };
        i += 1;
        out.insert(key, value);
        match toks.get(i) {
            Some(Token::Comma) => i += 1,
            Some(Token::RParen) => {}
            other => {
                return Err(SqlError::Query(format!(
                    "OPTIONS: expected , or ) found {other:?}"
                )))
            }
        }
    }
    if i < toks.len() && !matches!(toks[i], Token::EOF) {
        return Err(SqlError::Query(format!(
            "unexpected text after OPTIONS (...): {}",
            toks[i]
        )));
    }
    Ok(out)
}

const UNIT_WORDS: &[&str] = &[
    "MILLISECOND",
    "MILLISECONDS",
    "SECOND",
    "SECONDS",
    "MINUTE",
    "MINUTES",
    "HOUR",
    "HOURS",
    "DAY",
    "DAYS",
    "WEEK",
    "WEEKS",
    "MS",
    "S",
    "M",
    "H",
    "D",
];
const CLAUSE_WORDS: &[&str] = &[
    "WHERE",
    "GROUP",
    "JOIN",
    "INNER",
    "LEFT",
    "RIGHT",
    "FULL",
    "CROSS",
    "ON",
    "ORDER",
    "LIMIT",
    "HAVING",
    "UNION",
    "WINDOW",
    "WATERMARK",
];

/// Rewrites a query's tokens (each with where it is in the statement): the WATERMARK
/// clause, `explode(`, double-quoted strings (Spark's), and with `names` (and whether
/// they are case-sensitive) identifiers as Spark resolves them (`dialect.rs`).
fn rewrite_query(
    tokens: &[Token],
    locs: &[Location],
    wms: &mut Vec<WatermarkDecl>,
    names: Option<(&Names, bool)>,
) -> Result<(String, SourceMap)> {
    let mut out = Located::default();
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i];
        let at = locs[i];
        if word_is(t, "EXPLODE")
            && next_non_ws(tokens, i + 1).is_some_and(|j| tokens[j] == Token::LParen)
        {
            out.push(Token::make_word("unnest", None), at);
            i += 1;
            continue;
        }
        if let Token::Word(w) = t {
            // In Spark a double-quoted text is a string; backticks quote names.
            if w.quote_style == Some('"') {
                out.push(Token::SingleQuotedString(w.value.clone()), at);
                i += 1;
                continue;
            }
            if let Some((names, case_sensitive)) = names {
                let prev = out.toks.iter().rev().find(|t| !is_ws(t));
                let next = next_non_ws(tokens, i + 1).map(|j| &tokens[j]);
                if let Some(r) = names.resolve(w, prev, next, case_sensitive) {
                    out.push(r, at);
                    i += 1;
                    continue;
                }
            }
            // A keyword after a dot is a field name (tweet.user.name): quote it so the
            // SQL parser does not read USER as a function.
            if w.quote_style.is_none()
                && w.keyword != Keyword::NoKeyword
                && out.last() == Some(&Token::Period)
            {
                out.push(Token::make_word(&w.value, Some('"')), at);
                i += 1;
                continue;
            }
        }
        // `DISTINCT ON (k) WITHIN WATERMARK`: a marker key the planner recognises.
        if word_is(t, "WITHIN") {
            if let Some(j) =
                next_non_ws(tokens, i + 1).filter(|&j| word_is(&tokens[j], "WATERMARK"))
            {
                while out.last().is_some_and(is_ws) {
                    out.pop();
                }
                if out.pop() != Some(Token::RParen) {
                    return Err(SqlError::Query(
                        "WITHIN WATERMARK must follow DISTINCT ON (columns)".into(),
                    ));
                }
                out.push(Token::Comma, at);
                out.push(
                    Token::SingleQuotedString(crate::dedup::WITHIN_WATERMARK_MARKER.into()),
                    at,
                );
                out.push(Token::RParen, at);
                out.push(Token::Whitespace(Whitespace::Space), at);
                i = j + 1;
                continue;
            }
        }
        if !word_is(t, "WATERMARK") {
            out.push(t.clone(), at);
            i += 1;
            continue;
        }
        // The relation before the clause: a (dotted) name or a parenthesised subquery.
        while out.last().is_some_and(is_ws) {
            out.pop();
        }
        let rel_start = relation_start(&out.toks)?;
        let relation: Vec<Token> = out.toks.split_off(rel_start);
        let rel_at = out.locs.split_off(rel_start).first().copied().unwrap_or(at);
        // named_expression up to DELAY OF
        let mut j = i + 1;
        let expr_start = j;
        while j < tokens.len() && !word_is(&tokens[j], "DELAY") {
            j += 1;
        }
        if j >= tokens.len() {
            return Err(SqlError::Query(
                "WATERMARK clause needs DELAY OF INTERVAL ...".into(),
            ));
        }
        let expr_tokens = trim_ws(&tokens[expr_start..j]);
        j += 1;
        let j_of = next_non_ws(tokens, j).filter(|&k| word_is(&tokens[k], "OF"));
        let Some(k) = j_of else {
            return Err(SqlError::Query(
                "WATERMARK clause: expected DELAY OF".into(),
            ));
        };
        j = k + 1;
        // INTERVAL <literal> [unit]...
        let mut interval = String::new();
        let mut k = next_non_ws(tokens, j)
            .ok_or_else(|| SqlError::Query("WATERMARK: missing interval".into()))?;
        if word_is(&tokens[k], "INTERVAL") {
            k = next_non_ws(tokens, k + 1)
                .ok_or_else(|| SqlError::Query("WATERMARK: missing interval".into()))?;
        }
        loop {
            match &tokens[k] {
                Token::SingleQuotedString(s) => interval.push_str(s),
                Token::Number(n, _) => interval.push_str(n),
                Token::Word(w)
                    if w.quote_style.is_none()
                        && UNIT_WORDS.iter().any(|u| u.eq_ignore_ascii_case(&w.value)) =>
                {
                    interval.push_str(&w.value)
                }
                _ => break,
            }
            interval.push(' ');
            match next_non_ws(tokens, k + 1) {
                Some(n) => k = n,
                None => {
                    k = tokens.len();
                    break;
                }
            }
        }
        let delay_ms = ddl::parse_interval_ms(&interval)?;
        if delay_ms < 0 {
            return Err(SqlError::Query(
                "WATERMARK delay must not be negative".into(),
            ));
        }
        // Optional alias.
        let mut alias: Option<Token> = None;
        if k < tokens.len() {
            if word_is(&tokens[k], "AS") {
                let a = next_non_ws(tokens, k + 1)
                    .ok_or_else(|| SqlError::Query("WATERMARK: AS needs an alias".into()))?;
                alias = Some(tokens[a].clone());
                k = a + 1;
            } else if let Token::Word(w) = &tokens[k] {
                if w.keyword == Keyword::NoKeyword
                    || !CLAUSE_WORDS
                        .iter()
                        .any(|c| c.eq_ignore_ascii_case(&w.value))
                {
                    if !CLAUSE_WORDS
                        .iter()
                        .any(|c| c.eq_ignore_ascii_case(&w.value))
                    {
                        alias = Some(tokens[k].clone());
                        k += 1;
                    }
                }
            }
        }
        // The column the watermark tracks.
        let (column, simple) = watermark_column(&expr_tokens)?;
        wms.push(WatermarkDecl {
            column: column.clone(),
            delay_ms,
        });
        let rel_text = render(&relation);
        let alias_text = alias.as_ref().map(|a| a.to_string());
        let replacement = if simple {
            match &alias_text {
                Some(a) => format!("{rel_text} AS {a}"),
                None => rel_text,
            }
        } else {
            let inner_rel = if relation.first() == Some(&Token::LParen) {
                format!("{rel_text} AS __wm_src")
            } else {
                rel_text.clone()
            };
            let expr_text = render(&strip_alias(&expr_tokens));
            let outer = alias_text.unwrap_or_else(|| {
                relation
                    .iter()
                    .rev()
                    .find_map(|t| match t {
                        Token::Word(w) => Some(w.to_string()),
                        _ => None,
                    })
                    .filter(|_| relation.first() != Some(&Token::LParen))
                    .unwrap_or_else(|| "__wm".into())
            });
            format!("(SELECT *, {expr_text} AS {column} FROM {inner_rel}) AS {outer}")
        };
        out.push(Token::Whitespace(Whitespace::Space), rel_at);
        out.push(Token::make_word(&replacement, None), rel_at);
        out.push(Token::Whitespace(Whitespace::Space), rel_at);
        i = k;
    }
    if let Some((names, _)) = names {
        name_field_selections(&mut out, names);
    }
    Ok(SourceMap::render(&out.toks, &out.locs))
}

/// Spark names a selected struct field by the field (`SELECT d.device` gives a column
/// `device`; DataFusion would call it `d[device]`): such select items get `AS field`.
/// A two-part name is a field only when its first part is a struct column (`t.id` with
/// `t` a table keeps DataFusion's name, so `a.id, b.id` of a join stay two columns).
fn name_field_selections(out: &mut Located, names: &Names) {
    // Per open parenthesis: where the current select item starts, if in a select list.
    let mut items: Vec<Option<usize>> = vec![None];
    let mut ends = Vec::new();
    for (i, t) in out.toks.iter().enumerate() {
        let item = items.last_mut().expect("the outermost level stays");
        match t {
            t if word_is(t, "SELECT") => *item = Some(i + 1),
            t if word_is(t, "DISTINCT")
                && item.is_some_and(|s| out.toks[s..i].iter().all(is_ws)) =>
            {
                *item = Some(i + 1)
            }
            Token::Comma if item.is_some() => {
                ends.push((item.replace(i + 1).expect("checked"), i));
            }
            t if item.is_some() && CLAUSE_END.iter().any(|w| word_is(t, w)) => {
                ends.push((item.take().expect("checked"), i));
            }
            Token::LParen => items.push(None),
            Token::RParen => {
                if let Some(Some(start)) = items.pop() {
                    ends.push((start, i));
                }
                if items.is_empty() {
                    items.push(None);
                }
            }
            _ => {}
        }
    }
    if let Some(Some(start)) = items.pop() {
        ends.push((start, out.toks.len()));
    }
    ends.sort();
    for (start, end) in ends.into_iter().rev() {
        let n: Vec<&Token> = out.toks[start..end].iter().filter(|t| !is_ws(t)).collect();
        let path = n.len() >= 3
            && n.len() % 2 == 1
            && n.iter().enumerate().all(|(i, t)| {
                if i % 2 == 0 {
                    matches!(t, Token::Word(_))
                } else {
                    **t == Token::Period
                }
            });
        let struct_field = n.len() >= 5
            || matches!(n.first(), Some(Token::Word(w)) if names.is_struct_column(&w.value));
        let Some(Token::Word(field)) = n.last().copied().filter(|_| path && struct_field) else {
            continue;
        };
        let alias = Token::make_word(&field.value, Some('"'));
        let at = out.locs[end.saturating_sub(1)];
        let tail = [
            Token::Whitespace(Whitespace::Space),
            Token::make_word("AS", None),
            Token::Whitespace(Whitespace::Space),
            alias,
            Token::Whitespace(Whitespace::Space),
        ];
        for (k, t) in tail.into_iter().enumerate() {
            out.toks.insert(end + k, t);
            out.locs.insert(end + k, at);
        }
    }
}

/// Words that end a select list.
const CLAUSE_END: &[&str] = &[
    "FROM", "WHERE", "GROUP", "HAVING", "ORDER", "LIMIT", "UNION", "WINDOW",
];

fn next_non_ws(tokens: &[Token], from: usize) -> Option<usize> {
    (from..tokens.len()).find(|&i| !is_ws(&tokens[i]))
}

fn trim_ws(t: &[Token]) -> Vec<Token> {
    let s = t.iter().position(|x| !is_ws(x)).unwrap_or(t.len());
    let e = t.iter().rposition(|x| !is_ws(x)).map_or(s, |e| e + 1);
    t[s..e].to_vec()
}

fn strip_alias(expr: &[Token]) -> Vec<Token> {
    let toks = trim_ws(expr);
    let n: Vec<usize> = (0..toks.len()).filter(|&i| !is_ws(&toks[i])).collect();
    if n.len() >= 3 && word_is(&toks[n[n.len() - 2]], "AS") {
        return trim_ws(&toks[..n[n.len() - 2]]);
    }
    toks
}

/// The watermark's column name and whether the expression is just that column.
fn watermark_column(expr: &[Token]) -> Result<(String, bool)> {
    let n: Vec<&Token> = expr.iter().filter(|t| !is_ws(t)).collect();
    if n.is_empty() {
        return Err(SqlError::Query(
            "WATERMARK needs a column or expression".into(),
        ));
    }
    // col | t.col
    let dotted = n.iter().enumerate().all(|(i, t)| {
        if i % 2 == 0 {
            matches!(t, Token::Word(_))
        } else {
            **t == Token::Period
        }
    }) && n.len() % 2 == 1;
    if dotted {
        if let Token::Word(Word { value, .. }) = n[n.len() - 1] {
            return Ok((value.clone(), true));
        }
    }
    if n.len() >= 3 && word_is(n[n.len() - 2], "AS") {
        if let Token::Word(w) = n[n.len() - 1] {
            return Ok((w.value.clone(), false));
        }
    }
    Err(SqlError::Query(
        "WATERMARK: an expression needs a name (WATERMARK expr AS name DELAY OF ...)".into(),
    ))
}

/// Index in `out` where the relation before WATERMARK starts.
fn relation_start(out: &[Token]) -> Result<usize> {
    let Some(last) = out.len().checked_sub(1) else {
        return Err(SqlError::Query(
            "WATERMARK must follow a table or subquery".into(),
        ));
    };
    if out[last] == Token::RParen {
        let mut depth = 0i32;
        for i in (0..=last).rev() {
            match out[i] {
                Token::RParen => depth += 1,
                Token::LParen => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(i);
                    }
                }
                _ => {}
            }
        }
        return Err(SqlError::Query("WATERMARK: unbalanced parentheses".into()));
    }
    let mut i = last;
    if !matches!(out[i], Token::Word(_)) {
        return Err(SqlError::Query(
            "WATERMARK must follow a table or subquery".into(),
        ));
    }
    while i >= 2 && out[i - 1] == Token::Period && matches!(out[i - 2], Token::Word(_)) {
        i -= 2;
    }
    Ok(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_script() {
        let text = r#"
            SET bootstrap = '127.0.0.1:9092';
            -- the source; semicolons in 'quotes;' are kept
            CREATE TEMPORARY VIEW raw USING kafka OPTIONS (
              kafka.bootstrap.servers '${bootstrap}', subscribe = 'tweets', 'startingOffsets' 'earliest', maxOffsetsPerTrigger 1000);
            CREATE TEMPORARY VIEW out USING console OPTIONS (outputMode 'update', note 'a;b');
            CREATE OR REPLACE TEMPORARY VIEW tweets AS SELECT from_json(CAST(value AS STRING), 'id BIGINT') AS t, timestamp AS ts FROM raw;
            INSERT INTO out
            SELECT window(ts, '1 minute') AS w, explode(x) FROM tweets WATERMARK ts DELAY OF INTERVAL 30 SECONDS AS s GROUP BY 1;
        "#;
        let mut defines = BTreeMap::new();
        defines.insert("bootstrap".to_string(), "10.0.0.1:1".to_string());
        let s = Script::parse(text, &defines).unwrap();
        let raw = s.declaration("raw").unwrap();
        assert_eq!(raw.format, "kafka");
        assert_eq!(raw.options["kafka.bootstrap.servers"], "10.0.0.1:1");
        assert_eq!(raw.options["maxOffsetsPerTrigger"], "1000");
        assert_eq!(s.declaration("out").unwrap().options["note"], "a;b");
        assert_eq!(
            s.watermarks,
            vec![WatermarkDecl {
                column: "ts".into(),
                delay_ms: 30_000
            }]
        );
        let (sink, sql) = s.query();
        assert_eq!(sink, Some("out"));
        assert!(sql.contains("tweets AS s  GROUP BY"), "{sql}");
        assert!(sql.contains("unnest(x)"), "{sql}");
        assert!(!sql.to_ascii_uppercase().contains("WATERMARK"), "{sql}");
    }

    #[test]
    fn watermark_on_expression_and_subquery() {
        let s = Script::parse(
            "SELECT * FROM (SELECT * FROM a) WATERMARK CAST(x AS TIMESTAMP) AS ts DELAY OF INTERVAL '1 minute' AS q",
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(s.watermarks[0].delay_ms, 60_000);
        let (_, sql) = s.query();
        assert!(
            sql.contains(
                "(SELECT *, CAST(x AS TIMESTAMP) AS ts FROM (SELECT * FROM a) AS __wm_src) AS q"
            ),
            "{sql}"
        );
    }

    #[test]
    fn selected_struct_fields_are_named_by_the_field_and_table_columns_are_not() {
        use datafusion::arrow::datatypes::{DataType, Field, Fields};
        let mut names = Names::default();
        let inner = Fields::from(vec![Field::new("device", DataType::Utf8, true)]);
        names.add_fields(
            "t",
            &Fields::from(vec![
                Field::new("id", DataType::Int64, true),
                Field::new("d", DataType::Struct(inner), true),
            ]),
        );
        let s = Script::parse(
            "SELECT d.device, a.id, b.id FROM t a JOIN t b ON a.id = b.id",
            &BTreeMap::new(),
        )
        .unwrap();
        let (sql, _) = s.resolve(s.query_source(), &names).unwrap();
        assert!(sql.contains(r#"d.device AS "device" "#), "{sql}");
        assert!(sql.contains(r#"a."id", b."id" FROM"#), "{sql}");
    }

    #[test]
    fn errors() {
        let none = BTreeMap::new();
        for bad in [
            "",
            "SELECT 1; SELECT 2",
            "DROP TABLE x",
            "CREATE TEMPORARY VIEW v USING kafka OPTIONS (a 'b'",
            "CREATE TEMPORARY VIEW v USING kafka OPTIONS (a) ; SELECT 1",
            "SELECT * FROM t WATERMARK ts DELAY OF INTERVAL 5 fortnights",
            "SELECT * FROM t WATERMARK ts",
            "SELECT '${undefined}'",
            "SELECT 'unterminated",
        ] {
            assert!(Script::parse(bad, &none).is_err(), "{bad:?}");
        }
    }
}
