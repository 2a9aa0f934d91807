//! The reference tables of `docs/configuration.md`, generated from `keys::CONFIGS`.
//! Each table sits between two markers in the document; the prose around them is
//! written by hand. The test fails when a table and the document disagree.

use super::keys::{self, ConfigDef, DefaultValue, Dynamic, Kind, Scope, Section};

const DOC_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md");
const REGENERATE: &str =
    "RUNNEL_WRITE_DOCS=1 cargo test -p runnel-broker config::docs (writes the tables into docs/configuration.md)";

fn begin(section: Section) -> String {
    format!(
        "<!-- BEGIN generated config table '{}': from crates/broker/src/config/keys.rs; regenerate with {REGENERATE} -->",
        section.id()
    )
}

fn end(section: Section) -> String {
    format!("<!-- END generated config table '{}' -->", section.id())
}

fn kind_text(kind: Kind) -> String {
    let range = |name: &str, min: i64, max: i64, top: i64| match (min, max) {
        (i64::MIN, _) if max == top => name.to_string(),
        (_, _) if max == top => format!("{name}, at least {min}"),
        _ => format!("{name}, {min} to {max}"),
    };
    match kind {
        Kind::Int(min, max) => range("int", min, max, i32::MAX as i64),
        Kind::Long(min, max) => range("long", min, max, i64::MAX),
        Kind::Short(min) => range("short", min, i16::MAX as i64, i16::MAX as i64),
        Kind::Bool => "boolean".into(),
        Kind::Double(min, max) if max.is_finite() => format!("double, {min} to {max}"),
        Kind::Double(min, _) => format!("double, at least {min}"),
        Kind::OneOf(values) => format!("one of {}", values.join(", ")),
        Kind::ListOf(values) => format!("list of {}", values.join(", ")),
        Kind::List => "list".into(),
        Kind::Str => "string".into(),
        Kind::Class => "class".into(),
        Kind::Password => "password".into(),
    }
}

fn default_text(d: &ConfigDef) -> String {
    match d.default {
        DefaultValue::Value("") => "empty".into(),
        DefaultValue::Value(v) => format!("`{v}`"),
        DefaultValue::None => "unset".into(),
        DefaultValue::Doc(text) => text.into(),
    }
}

fn mode_text(d: &ConfigDef) -> &'static str {
    match d.dynamic {
        Dynamic::ReadOnly => "read-only",
        Dynamic::PerBroker => "per-broker",
        Dynamic::Stored => "per-broker, stored only",
    }
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// One section's table, as it appears in the document (markers included).
pub fn table(section: Section) -> String {
    let rows = keys::CONFIGS.iter().filter(|d| d.section == section);
    let mut out = vec![begin(section)];
    if section == Section::Topic {
        out.push("| key | type | default | broker default from | what it does |".into());
        out.push("|---|---|---|---|---|".into());
        for d in rows {
            let synonyms: Vec<String> = keys::broker_synonyms(d.name)
                .map(|b| format!("`{}`", b.name))
                .collect();
            out.push(format!(
                "| `{}` | {} | {} | {} | {} |",
                d.name,
                kind_text(d.kind),
                default_text(d),
                if synonyms.is_empty() {
                    "-".into()
                } else {
                    synonyms.join(", ")
                },
                cell(d.doc)
            ));
        }
    } else {
        out.push("| key | type | default | update mode | what it does |".into());
        out.push("|---|---|---|---|---|".into());
        for d in rows.filter(|d| d.scope == Scope::Broker) {
            let doc = if d.doc.is_empty() {
                keys::STORED_DOC
            } else {
                d.doc
            };
            let doc = if d.set.is_none() && d.section == Section::NoEffect {
                format!("no effect: {doc}")
            } else {
                doc.to_string()
            };
            out.push(format!(
                "| `{}` | {} | {} | {} | {} |",
                d.name,
                kind_text(d.kind),
                default_text(d),
                mode_text(d),
                cell(&doc)
            ));
        }
    }
    out.push(end(section));
    out.join("\n")
}

/// The document with every generated table replaced by the table's current text.
fn regenerate(doc: &str) -> Result<String, String> {
    let mut out = doc.to_string();
    for section in Section::ALL {
        let (b, e) = (begin(section), end(section));
        let start = out
            .find(&b)
            .ok_or_else(|| format!("no table '{}' (its marker line is missing)", section.id()))?;
        let stop = out[start..]
            .find(&e)
            .ok_or_else(|| format!("table '{}' has no END marker", section.id()))?
            + start
            + e.len();
        out.replace_range(start..stop, &table(section));
    }
    Ok(out)
}

/// The keys of a markdown table's rows (first cell, back-quoted).
fn row_keys(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let key = l.strip_prefix("| `")?.split('`').next()?;
            Some((key.to_string(), l.to_string()))
        })
        .collect()
}

#[test]
fn doc_tables_match_the_config_table() {
    let doc = std::fs::read_to_string(DOC_PATH).expect("docs/configuration.md");
    let want = match regenerate(&doc) {
        Ok(w) => w,
        Err(e) => panic!("docs/configuration.md: {e}; add the markers, then run {REGENERATE}"),
    };
    if want == doc {
        return;
    }
    if std::env::var_os("RUNNEL_WRITE_DOCS").is_some() {
        std::fs::write(DOC_PATH, &want).expect("write docs/configuration.md");
        return;
    }
    let (have, should) = (generated_rows(&doc), generated_rows(&want));
    let mut problems = Vec::new();
    for (k, line) in &should {
        match have.iter().find(|(h, _)| h == k) {
            None => problems.push(format!("missing from the doc: {k}")),
            Some((_, l)) if l != line => {
                problems.push(format!("differs: {k}\n  doc:   {l}\n  table: {line}"))
            }
            _ => {}
        }
    }
    for (k, _) in &have {
        if !should.iter().any(|(s, _)| s == k) {
            problems.push(format!(
                "stale: {k} is in a generated table but not in keys.rs"
            ));
        }
    }
    panic!(
        "docs/configuration.md disagrees with crates/broker/src/config/keys.rs:\n{}\n\
         Regenerate the tables with: {REGENERATE}",
        if problems.is_empty() {
            "(text around the rows differs)".to_string()
        } else {
            problems.join("\n")
        }
    );
}

/// The rows inside the generated tables of `doc` (hand-written tables elsewhere may
/// name the same keys).
fn generated_rows(doc: &str) -> Vec<(String, String)> {
    Section::ALL
        .iter()
        .flat_map(|s| {
            let (b, e) = (begin(*s), end(*s));
            let Some(start) = doc.find(&b) else {
                return Vec::new();
            };
            let Some(len) = doc[start..].find(&e) else {
                return Vec::new();
            };
            let rows = row_keys(&doc[start..start + len]);
            rows.into_iter()
                .map(|(k, line)| (format!("{k} (table '{}')", s.id()), line))
                .collect()
        })
        .collect()
}

fn doc_table_key(doc: &str, key: &str) -> bool {
    generated_rows(doc)
        .iter()
        .any(|(k, _)| k.split(' ').next() == Some(key))
}

#[test]
fn a_stale_or_wrong_row_is_reported() {
    let doc = std::fs::read_to_string(DOC_PATH).expect("docs/configuration.md");
    let Ok(good) = regenerate(&doc) else { return };
    // A wrong default is replaced, a stale key is dropped, a missing key comes back.
    let wrong = good.replace(
        "| `num.partitions` | int, at least 1 | `1` |",
        "| `num.partitions` | int, at least 1 | `7` |",
    );
    assert_ne!(wrong, good);
    assert_eq!(regenerate(&wrong).unwrap(), good);
    let stale = good.replacen(
        "| `num.partitions` |",
        "| `num.partitionz` | x |\n| `num.partitions` |",
        1,
    );
    assert!(doc_table_key(&stale, "num.partitionz"));
    assert_eq!(regenerate(&stale).unwrap(), good);
    let missing: String = good
        .lines()
        .filter(|l| !l.starts_with("| `num.partitions` |"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(!row_keys(&missing)
        .iter()
        .any(|(k, _)| k == "num.partitions"));
    assert!(row_keys(&regenerate(&missing).unwrap())
        .iter()
        .any(|(k, _)| k == "num.partitions"));
}
