//! The web console: plain HTML, CSS and JavaScript modules compiled into the binary
//! (no build step, no request to any other host), served at `/` and `/console/*`.
//! The sources in `crates/broker/console/` are the assets, byte for byte.
//!
//! [`asset_for_path`] and [`CONTENT_SECURITY_POLICY`] are all a server needs: the
//! broker's admin API serves them here, and `runnel sql --http` (crates/sql/src/http.rs)
//! serves the same console for its streaming-queries page.

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// Every asset: (file name, content type, bytes).
pub const ASSETS: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../console/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/app.js"),
    ),
    (
        "views.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/views.js"),
    ),
    (
        "admin.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/admin.js"),
    ),
    (
        "lib.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/lib.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../console/style.css"),
    ),
];

/// What the page may load: this origin only (images also as data: URLs).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// The asset a request path names (`/` is the page; `/console/<file>` the rest), as
/// (content type, body); None for any other path.
pub fn asset_for_path(path: &str) -> Option<(&'static str, &'static str)> {
    let name = match path {
        "/" | "/index.html" => "index.html",
        p => p.strip_prefix("/console/")?,
    };
    ASSETS
        .iter()
        .find(|a| a.0 == name)
        .map(|(_, ctype, body)| (*ctype, *body))
}

/// Total bytes of the console's assets.
pub fn bundle_bytes() -> usize {
    ASSETS.iter().map(|a| a.2.len()).sum()
}

fn serve(path: &str) -> Result<Response, ApiError> {
    let (ctype, body) = asset_for_path(path)
        .ok_or_else(|| ApiError::not_found(format!("no console asset at '{path}'")))?;
    Ok((
        [
            (header::CONTENT_TYPE, ctype),
            // The assets change with the binary: revalidate rather than cache stale ones.
            (header::CACHE_CONTROL, "no-cache"),
            // Nothing but this origin, whatever an injected string might try.
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        ],
        body,
    )
        .into_response())
}

/// GET /: the console's page.
pub async fn index() -> Result<Response, ApiError> {
    serve("/")
}

/// GET /console/{file}.
pub async fn asset(
    file: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Response, ApiError> {
    let Ok(Path(file)) = file else {
        return Err(ApiError::bad_request("malformed asset path"));
    };
    serve(&format!("/console/{file}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every module the page or a script imports is an asset (a missing one would be a
    /// 404 only a browser notices), and no asset refers to another host.
    #[test]
    fn assets_are_complete_and_local() {
        let names: Vec<&str> = ASSETS.iter().map(|a| a.0).collect();
        for (name, _, body) in ASSETS {
            for line in body.lines() {
                for marker in ["/console/", "from './"] {
                    if let Some(i) = line.find(marker) {
                        let rest = &line[i + marker.len()..];
                        let file: String = rest
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '_')
                            .collect();
                        assert!(
                            names.contains(&file.as_str()),
                            "{name} refers to missing {file}"
                        );
                    }
                }
                // The SVG namespace is a name, never fetched.
                let line = line.replace("'http://www.w3.org/2000/svg'", "");
                assert!(
                    !line.contains("http://") && !line.contains("https://"),
                    "{name}: {line}"
                );
                assert!(
                    !line.contains("//cdn") && !line.contains("@import url"),
                    "{name}: {line}"
                );
            }
        }
        assert!(bundle_bytes() > 0);
        assert_eq!(asset_for_path("/").unwrap().1, ASSETS[0].2);
        assert!(asset_for_path("/console/app.js")
            .unwrap()
            .0
            .starts_with("text/javascript"));
        assert!(asset_for_path("/console/../Cargo.toml").is_none());
        assert!(asset_for_path("/app.js").is_none());
    }
}
