//! A minimal HTTP/1.1 server for a running query: `GET /progress` (recent progress),
//! `GET /progress/last`, `GET /query` (the query's SQL text), `GET /tables` and
//! `GET /tables/<name>` (a memory sink's rows as JSON), and, when the caller hands it the
//! console's assets ([`HttpState::assets`]), the web console at `/` whose
//! streaming-queries page renders those endpoints. Read-only; requests are bounded in
//! size and handled one at a time per connection. Binds where it is told (127.0.0.1 by
//! default in the CLI).
//!
//! The assets are passed in (the `runnel` binary passes the broker's console) rather
//! than depended on, so this crate does not pull the broker in.

use crate::progress::ProgressLog;
use crate::sink::MemoryTable;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Largest request head accepted.
const MAX_REQUEST_BYTES: usize = 16 * 1024;

/// The static files of a web page: (content type, body) for a request path (`/`,
/// `/console/app.js`, ...), None for any other path.
pub type Assets = fn(&str) -> Option<(&'static str, &'static str)>;

#[derive(Clone, Default)]
pub struct HttpState {
    pub progress: ProgressLog,
    pub tables: Arc<BTreeMap<String, MemoryTable>>,
    /// The query's SQL text, served at `/query`.
    pub query: String,
    /// The console served at `/` (None: only the JSON endpoints).
    pub assets: Option<Assets>,
    /// The Content-Security-Policy header sent with the assets (empty: none).
    pub content_security_policy: &'static str,
}

/// One answer: status line, content type, body.
struct Reply {
    status: &'static str,
    content_type: &'static str,
    body: String,
}

impl Reply {
    fn json(status: &'static str, body: String) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body,
        }
    }
}

/// Serves until the task is dropped/aborted.
pub async fn serve(listener: TcpListener, state: HttpState) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_REQUEST_BYTES];
            let mut n = 0;
            loop {
                match tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    sock.read(&mut buf[n..]),
                )
                .await
                {
                    Ok(Ok(0)) | Err(_) | Ok(Err(_)) => return,
                    Ok(Ok(k)) => n += k,
                }
                if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") || n == buf.len() {
                    break;
                }
            }
            let head = String::from_utf8_lossy(&buf[..n]);
            let target = head.split_whitespace().nth(1).unwrap_or("/");
            // The query string (a cache buster, say) does not choose the resource.
            let path = target.split('?').next().unwrap_or("/").to_string();
            let r = reply(&path, &state);
            let mut extra = String::new();
            if !r.content_type.starts_with("application/json") {
                extra.push_str("Cache-Control: no-cache\r\n");
                if !state.content_security_policy.is_empty() {
                    extra.push_str(&format!(
                        "Content-Security-Policy: {}\r\n",
                        state.content_security_policy
                    ));
                }
            }
            let resp = format!(
                "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{}",
                r.status,
                r.content_type,
                r.body.len(),
                r.body
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}

/// The console's asset at `path` if there is one, else the JSON endpoint.
fn reply(path: &str, state: &HttpState) -> Reply {
    match state.assets.and_then(|assets| assets(path)) {
        Some((content_type, body)) => Reply {
            status: "200 OK",
            content_type,
            body: body.to_string(),
        },
        None => route(path, state),
    }
}

fn route(path: &str, state: &HttpState) -> Reply {
    let (status, body) = match path {
        "/progress" => (
            "200 OK",
            serde_json::to_string_pretty(&state.progress.recent()).unwrap_or_default(),
        ),
        "/progress/last" => (
            "200 OK",
            serde_json::to_string_pretty(&state.progress.last()).unwrap_or_default(),
        ),
        "/query" => (
            "200 OK",
            serde_json::json!({ "query": state.query }).to_string(),
        ),
        "/tables" => (
            "200 OK",
            serde_json::to_string(&state.tables.keys().collect::<Vec<_>>()).unwrap_or_default(),
        ),
        p if p.starts_with("/tables/") => match state.tables.get(&p["/tables/".len()..]) {
            Some(t) => {
                let (_, batches) = t.snapshot();
                let mut out = Vec::new();
                {
                    let mut w = datafusion::arrow::json::ArrayWriter::new(&mut out);
                    for b in &batches {
                        let _ = w.write(b);
                    }
                    let _ = w.finish();
                }
                let body = if out.is_empty() {
                    "[]".to_string()
                } else {
                    String::from_utf8_lossy(&out).into_owned()
                };
                ("200 OK", body)
            }
            None => ("404 Not Found", r#"{"error":"no such table"}"#.to_string()),
        },
        _ => (
            "404 Not Found",
            r#"{"error":"try /progress, /progress/last, /query, /tables, /tables/<name>"}"#
                .to_string(),
        ),
    };
    Reply::json(status, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(path: &str) -> Option<(&'static str, &'static str)> {
        (path == "/").then_some(("text/html; charset=utf-8", "<html>"))
    }

    #[test]
    fn console_assets_when_given_and_the_json_endpoints() {
        let mut state = HttpState {
            query: "SELECT 1".into(),
            ..HttpState::default()
        };
        assert_eq!(reply("/", &state).status, "404 Not Found");
        state.assets = Some(page);
        let r = reply("/", &state);
        assert_eq!(
            (r.status, r.content_type, r.body.as_str()),
            ("200 OK", "text/html; charset=utf-8", "<html>")
        );
        let q = reply("/query", &state);
        assert_eq!((q.status, q.content_type), ("200 OK", "application/json"));
        let v: serde_json::Value = serde_json::from_str(&q.body).unwrap();
        assert_eq!(v["query"], "SELECT 1");
        assert_eq!(reply("/progress", &state).body.trim(), "[]");
        assert_eq!(reply("/tables/nope", &state).status, "404 Not Found");
    }
}
