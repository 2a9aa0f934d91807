//! The web console: plain HTML, CSS and JavaScript modules compiled into the binary
//! (no build step, no request to any other host), served at `/` and `/console/*`.
//! The sources in `crates/broker/console/` are the assets, byte for byte.

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

/// Total bytes of the console's assets.
pub fn bundle_bytes() -> usize {
    ASSETS.iter().map(|a| a.2.len()).sum()
}

fn serve(name: &str) -> Result<Response, ApiError> {
    let (_, ctype, body) = ASSETS
        .iter()
        .find(|a| a.0 == name)
        .ok_or_else(|| ApiError::not_found(format!("no console asset '{name}'")))?;
    Ok((
        [
            (header::CONTENT_TYPE, *ctype),
            // The assets change with the binary: revalidate rather than cache stale ones.
            (header::CACHE_CONTROL, "no-cache"),
            // Nothing but this origin, whatever an injected string might try.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; style-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
            ),
        ],
        *body,
    )
        .into_response())
}

/// GET /: the console's page.
pub async fn index() -> Result<Response, ApiError> {
    serve("index.html")
}

/// GET /console/{file}.
pub async fn asset(
    file: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Response, ApiError> {
    let Ok(Path(file)) = file else {
        return Err(ApiError::bad_request("malformed asset path"));
    };
    serve(&file)
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
    }
}
