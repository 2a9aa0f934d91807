//! Kafka's naming rules and identifiers, decided in one place.

/// Why `name` is not a valid Kafka topic name (1-249 characters of `[a-zA-Z0-9._-]`, not
/// `.` or `..`), or None when it is. The name is echoed only when short: it is client
/// input of any length.
pub fn topic_name_error(name: &str) -> Option<String> {
    let why = if name.is_empty() {
        "it is empty"
    } else if name == "." || name == ".." {
        "'.' and '..' are reserved"
    } else if name.len() > 249 {
        "longer than 249 characters"
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
    {
        "only ASCII letters, digits, '.', '_' and '-' are allowed"
    } else {
        return None;
    };
    Some(if name.len() <= 249 {
        format!("topic name '{name}' is invalid: {why}")
    } else {
        format!("topic name of {} bytes is invalid: {why}", name.len())
    })
}

/// A new cluster id the way Kafka makes one: a random UUID in URL-safe base64 without
/// padding, 22 characters.
pub fn new_cluster_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let v = uuid::Uuid::new_v4().as_u128();
    // 128 bits = 21 groups of 6 bits and 2 bits left over (padded with 4 zero bits).
    let mut out = String::with_capacity(22);
    for i in 0..21 {
        let shift = 128 - 6 * (i + 1);
        out.push(ALPHABET[((v >> shift) & 0x3f) as usize] as char);
    }
    out.push(ALPHABET[((v & 0x3) << 4) as usize] as char);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafkas_rule() {
        for good in ["tweets", "a.b_c-D9", &"x".repeat(249)] {
            assert_eq!(topic_name_error(good), None, "{good}");
        }
        for bad in ["", ".", "..", "a b", "é", "a/b", &"x".repeat(250)] {
            assert!(topic_name_error(bad).is_some(), "{bad}");
        }
        let long = topic_name_error(&"x".repeat(100_000)).unwrap();
        assert!(long.len() < 100, "a long name is not echoed: {long}");
    }

    #[test]
    fn cluster_ids_look_like_kafkas() {
        let a = new_cluster_id();
        assert_eq!(a.len(), 22);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_ne!(a, new_cluster_id());
    }
}
