//! Kafka's `sasl.jaas.config` values: one JAAS login module,
//! `<class> <flag> key="value" key2=value2;`, as Kafka's `JaasConfig` reads them.
//! Errors name what is wrong and where, never a password.

use std::collections::BTreeMap;

/// One parsed login module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JaasModule {
    pub class: String,
    pub flag: String,
    pub options: BTreeMap<String, String>,
}

pub const PLAIN_MODULE: &str = "org.apache.kafka.common.security.plain.PlainLoginModule";
pub const SCRAM_MODULE: &str = "org.apache.kafka.common.security.scram.ScramLoginModule";

const FLAGS: &[&str] = &["required", "requisite", "sufficient", "optional"];

struct Cursor<'a> {
    text: &'a str,
    pos: usize,
}

impl Cursor<'_> {
    fn skip_ws(&mut self) {
        let rest = &self.text[self.pos..];
        self.pos += rest.len() - rest.trim_start().len();
    }

    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    /// A bare word: letters, digits and `_ . $ - /` (class names, option names, values).
    fn word(&mut self) -> &str {
        self.skip_ws();
        let start = self.pos;
        let rest = &self.text[start..];
        let len = rest
            .find(|c: char| !(c.is_alphanumeric() || "_.$-/:+@*".contains(c)))
            .unwrap_or(rest.len());
        self.pos += len;
        &self.text[start..start + len]
    }

    /// A double-quoted value with `\"` and `\\` escapes; the cursor is on the quote.
    fn quoted(&mut self, key: &str) -> Result<String, String> {
        let mut out = String::new();
        let mut chars = self.text[self.pos + 1..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += 1 + i + 1;
                    return Ok(out);
                }
                '\\' => match chars.next() {
                    Some((_, e)) => out.push(e),
                    None => break,
                },
                c => out.push(c),
            }
        }
        Err(format!("the value of option {key} has no closing '\"'"))
    }
}

/// Parses a `sasl.jaas.config` value.
pub fn parse(text: &str) -> Result<JaasModule, String> {
    let mut c = Cursor { text, pos: 0 };
    let class = c.word().to_string();
    if class.is_empty() {
        return Err("expected a login module class name first, e.g. \
             org.apache.kafka.common.security.plain.PlainLoginModule"
            .into());
    }
    let flag = c.word().to_ascii_lowercase();
    if !FLAGS.contains(&flag.as_str()) {
        return Err(format!(
            "after {class}: expected a control flag ({}), found {:?}",
            FLAGS.join(", "),
            flag
        ));
    }
    let mut options = BTreeMap::new();
    loop {
        c.skip_ws();
        match c.peek() {
            None => return Err("missing ';' at the end of the login module".into()),
            Some(';') => {
                c.pos += 1;
                break;
            }
            Some(_) => {}
        }
        let key = c.word().to_string();
        if key.is_empty() {
            return Err(format!(
                "unexpected {:?} where an option name was expected",
                c.peek().unwrap_or(' ')
            ));
        }
        c.skip_ws();
        if c.peek() != Some('=') {
            return Err(format!("option {key} has no '=' and value"));
        }
        c.pos += 1;
        c.skip_ws();
        let value = if c.peek() == Some('"') {
            c.quoted(&key)?
        } else {
            let v = c.word().to_string();
            if v.is_empty() {
                return Err(format!(
                    "option {key} has an empty value (quote it: {key}=\"\")"
                ));
            }
            v
        };
        if options.insert(key.clone(), value).is_some() {
            return Err(format!("option {key} is given twice"));
        }
    }
    c.skip_ws();
    if c.pos < text.len() {
        return Err(
            "more than one login module: Kafka takes exactly one in sasl.jaas.config".into(),
        );
    }
    Ok(JaasModule {
        class,
        flag,
        options,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafkas_plain_example_parses() {
        let m = parse(
            r#"org.apache.kafka.common.security.plain.PlainLoginModule required
               username="admin" password="admin-secret"
               user_admin="admin-secret" user_alice="al\"ice";"#,
        )
        .unwrap();
        assert_eq!(m.class, PLAIN_MODULE);
        assert_eq!(m.flag, "required");
        assert_eq!(m.options["user_alice"], "al\"ice");
        assert_eq!(m.options["username"], "admin");
        let bare = parse("x.Y optional a=b;").unwrap();
        assert_eq!(bare.options["a"], "b");
    }

    #[test]
    fn errors_name_the_problem() {
        let e = |t: &str| parse(t).unwrap_err();
        assert!(e("").contains("class name"));
        assert!(e("a.B sometimes;").contains("control flag"));
        assert!(e("a.B required x=\"y\"").contains("';'"));
        assert!(e("a.B required x;").contains("option x"));
        assert!(e("a.B required x=\"y;").contains("closing"));
        assert!(e("a.B required x=1 x=2;").contains("twice"));
        assert!(e("a.B required; c.D required;").contains("more than one"));
        assert!(!e("a.B required password=\"secret").contains("secret"));
    }
}
