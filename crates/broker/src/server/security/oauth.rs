//! SASL/OAUTHBEARER (RFC 7628, KIP-255 and KIP-768): the client sends a JWT, the broker
//! validates it and takes the principal from a claim. Two modes, as in Kafka:
//! - unsecured (Kafka's default `OAuthBearerUnsecuredValidatorCallbackHandler`, for
//!   development): an `alg: none` token, checked for expiry and, if configured, scope;
//! - JWKS (`OAuthBearerValidatorCallbackHandler` with
//!   `sasl.oauthbearer.jwks.endpoint.url`): an RS256 or ES256 signature by a key of the
//!   JWKS, `exp`, and `sasl.oauthbearer.expected.audience` / `.expected.issuer`.
//!
//! Immutable after start; thread-safe.

use base64::Engine as _;
use ring::signature;
use serde_json::Value;

use super::scram::Step;

const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// One verification key from the JWKS.
#[derive(Debug, Clone)]
pub struct Jwk {
    pub kid: Option<String>,
    pub key: JwkKey,
}

#[derive(Debug, Clone)]
pub enum JwkKey {
    /// RS256: modulus and exponent (big-endian bytes).
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// ES256: the uncompressed P-256 point.
    P256(Vec<u8>),
}

#[derive(Debug, Clone)]
pub enum Mode {
    Unsecured {
        required_scope: Vec<String>,
    },
    Jwks {
        keys: Vec<Jwk>,
        audience: Vec<String>,
        issuer: Option<String>,
    },
}

/// One listener's OAUTHBEARER settings.
#[derive(Debug, Clone)]
pub struct OAuthSettings {
    pub mode: Mode,
    /// The claim naming the principal (`sasl.oauthbearer.sub.claim.name`, or
    /// `unsecuredValidatorPrincipalClaimName`; default `sub`).
    pub principal_claim: String,
    /// `scope` unless configured (`sasl.oauthbearer.scope.claim.name`).
    pub scope_claim: String,
    pub clock_skew_s: f64,
}

/// Reads a JWKS document (`{"keys": [...]}`); keys of other types are skipped.
pub fn parse_jwks(text: &str) -> Result<Vec<Jwk>, String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let keys = doc["keys"].as_array().ok_or("no \"keys\" array")?;
    let field = |k: &Value, name: &str| -> Result<Vec<u8>, String> {
        k[name]
            .as_str()
            .and_then(|s| B64URL.decode(s.trim_end_matches('=')).ok())
            .ok_or(format!("a key has no valid \"{name}\""))
    };
    let mut out = Vec::new();
    for k in keys {
        let kid = k["kid"].as_str().map(str::to_string);
        let key = match (k["kty"].as_str(), k["crv"].as_str()) {
            (Some("RSA"), _) => JwkKey::Rsa {
                n: field(k, "n")?,
                e: field(k, "e")?,
            },
            (Some("EC"), Some("P-256")) => {
                let mut point = vec![4u8];
                point.extend(field(k, "x")?);
                point.extend(field(k, "y")?);
                JwkKey::P256(point)
            }
            _ => continue,
        };
        out.push(Jwk { kid, key });
    }
    if out.is_empty() {
        return Err("no RSA or P-256 key in the JWKS".into());
    }
    Ok(out)
}

/// Validates the client's initial response (`n,,\x01auth=Bearer <jwt>\x01\x01`).
pub fn step(settings: &OAuthSettings, message: &[u8], now_s: f64) -> Step {
    match validate(settings, message, now_s) {
        Ok(principal) => Step::Done(principal, Vec::new()),
        Err(why) => Step::Fail(why),
    }
}

fn validate(s: &OAuthSettings, message: &[u8], now_s: f64) -> Result<String, String> {
    let text = std::str::from_utf8(message).map_err(|_| "message is not UTF-8")?;
    let (gs2, rest) = text
        .split_once('\x01')
        .ok_or("message has no key-value pairs")?;
    if !gs2.starts_with("n,") && !gs2.starts_with("y,") {
        return Err("message has no gs2 header".into());
    }
    let token = rest
        .split('\x01')
        .find_map(|kv| kv.strip_prefix("auth="))
        .and_then(|a| {
            a.strip_prefix("Bearer ")
                .or_else(|| a.strip_prefix("bearer "))
        })
        .ok_or("message has no auth=Bearer token")?
        .trim();
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("the token is not a JWS (header.payload.signature)".into());
    };
    let json = |part: &str, what: &str| -> Result<Value, String> {
        let raw = B64URL
            .decode(part.trim_end_matches('='))
            .map_err(|_| format!("the token's {what} is not base64url"))?;
        serde_json::from_slice(&raw).map_err(|_| format!("the token's {what} is not JSON"))
    };
    let header = json(h, "header")?;
    let claims = json(p, "payload")?;
    let alg = header["alg"].as_str().unwrap_or("");
    match &s.mode {
        Mode::Unsecured { .. } => {
            if alg != "none" || !sig.is_empty() {
                return Err(format!("unsecured mode takes alg none tokens, not {alg:?}"));
            }
        }
        Mode::Jwks { keys, .. } => {
            let sig = B64URL
                .decode(sig.trim_end_matches('='))
                .map_err(|_| "the token's signature is not base64url")?;
            let signed = &token.as_bytes()[..h.len() + 1 + p.len()];
            let kid = header["kid"].as_str();
            let verified = keys
                .iter()
                .filter(|k| kid.is_none() || k.kid.as_deref() == kid)
                .any(|k| match (&k.key, alg) {
                    (JwkKey::Rsa { n, e }, "RS256") => signature::RsaPublicKeyComponents { n, e }
                        .verify(&signature::RSA_PKCS1_2048_8192_SHA256, signed, &sig)
                        .is_ok(),
                    (JwkKey::P256(point), "ES256") => signature::UnparsedPublicKey::new(
                        &signature::ECDSA_P256_SHA256_FIXED,
                        point,
                    )
                    .verify(signed, &sig)
                    .is_ok(),
                    _ => false,
                });
            if !verified {
                return Err(format!("the token's {alg} signature matches no JWKS key"));
            }
        }
    }
    let exp = claims["exp"]
        .as_f64()
        .ok_or("the token has no numeric exp claim")?;
    if exp + s.clock_skew_s < now_s {
        return Err("the token has expired".into());
    }
    if let Some(nbf) = claims["nbf"].as_f64() {
        if nbf - s.clock_skew_s > now_s {
            return Err("the token is not valid yet (nbf)".into());
        }
    }
    match &s.mode {
        Mode::Unsecured { required_scope } => {
            let scope: Vec<&str> = match &claims[&s.scope_claim] {
                Value::String(v) => v.split(' ').collect(),
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            if let Some(missing) = required_scope.iter().find(|r| !scope.contains(&r.as_str())) {
                return Err(format!("the token lacks the required scope {missing:?}"));
            }
        }
        Mode::Jwks {
            audience, issuer, ..
        } => {
            if let Some(iss) = issuer {
                if claims["iss"].as_str() != Some(iss.as_str()) {
                    return Err("the token's issuer is not sasl.oauthbearer.expected.issuer".into());
                }
            }
            if !audience.is_empty() {
                let aud: Vec<&str> = match &claims["aud"] {
                    Value::String(v) => vec![v.as_str()],
                    Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                    _ => Vec::new(),
                };
                if !aud.iter().any(|a| audience.iter().any(|x| x == a)) {
                    return Err(
                        "the token's audience is not sasl.oauthbearer.expected.audience".into(),
                    );
                }
            }
        }
    }
    match claims[&s.principal_claim].as_str() {
        Some(p) if !p.trim().is_empty() => Ok(p.to_string()),
        _ => Err(format!(
            "the token has no {:?} claim naming the principal",
            s.principal_claim
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unsecured(claims: &str) -> Vec<u8> {
        let token = format!(
            "{}.{}.",
            B64URL.encode(r#"{"alg":"none"}"#),
            B64URL.encode(claims)
        );
        format!("n,,\x01auth=Bearer {token}\x01\x01").into_bytes()
    }

    fn settings(required: &[&str]) -> OAuthSettings {
        OAuthSettings {
            mode: Mode::Unsecured {
                required_scope: required.iter().map(|s| s.to_string()).collect(),
            },
            principal_claim: "sub".into(),
            scope_claim: "scope".into(),
            clock_skew_s: 0.0,
        }
    }

    #[test]
    fn unsecured_tokens() {
        let s = settings(&[]);
        let ok = |m: &[u8]| match step(&s, m, 1000.0) {
            Step::Done(p, _) => Ok(p),
            Step::Fail(w) => Err(w),
            Step::Continue(_) => Err("continue".into()),
        };
        assert_eq!(
            ok(&unsecured(r#"{"sub":"alice","exp":2000}"#)).unwrap(),
            "alice"
        );
        assert!(ok(&unsecured(r#"{"sub":"alice","exp":10}"#))
            .unwrap_err()
            .contains("expired"));
        assert!(ok(&unsecured(r#"{"exp":2000}"#))
            .unwrap_err()
            .contains("sub"));
        for bad in [
            &b""[..],
            b"n,,",
            b"n,,\x01auth=Basic x\x01\x01",
            b"n,,\x01auth=Bearer a.b\x01\x01",
            b"\xff",
        ] {
            assert!(ok(bad).is_err(), "{bad:?}");
        }
        let scoped = settings(&["write"]);
        assert!(matches!(
            step(
                &scoped,
                &unsecured(r#"{"sub":"a","exp":2000,"scope":"read write"}"#),
                1000.0
            ),
            Step::Done(..)
        ));
        assert!(matches!(
            step(
                &scoped,
                &unsecured(r#"{"sub":"a","exp":2000,"scope":"read"}"#),
                1000.0
            ),
            Step::Fail(_)
        ));
        // A signed-looking token is not accepted in unsecured mode.
        let signed = format!(
            "n,,\x01auth=Bearer {}.{}.c2ln\x01\x01",
            B64URL.encode(r#"{"alg":"RS256"}"#),
            B64URL.encode(r#"{"sub":"a","exp":2000}"#)
        );
        assert!(matches!(step(&s, signed.as_bytes(), 1000.0), Step::Fail(_)));
        assert!(parse_jwks(r#"{"keys":[{"kty":"oct","k":"x"}]}"#).is_err());
        assert!(parse_jwks("nope").is_err());
    }
}
