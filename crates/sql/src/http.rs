//! A minimal HTTP/1.1 server for a running query: `GET /progress` (recent progress),
//! `GET /progress/last`, `GET /tables` and `GET /tables/<name>` (a memory sink's rows
//! as JSON). Read-only; requests are bounded in size and handled one at a time per
//! connection. Binds where it is told (127.0.0.1 by default in the CLI).

use crate::progress::ProgressLog;
use crate::sink::MemoryTable;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Largest request head accepted.
const MAX_REQUEST_BYTES: usize = 16 * 1024;

#[derive(Clone, Default)]
pub struct HttpState {
    pub progress: ProgressLog,
    pub tables: Arc<BTreeMap<String, MemoryTable>>,
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
            let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
            let (status, body) = route(&path, &state);
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}

fn route(path: &str, state: &HttpState) -> (&'static str, String) {
    match path {
        "/progress" => (
            "200 OK",
            serde_json::to_string_pretty(&state.progress.recent()).unwrap_or_default(),
        ),
        "/progress/last" => (
            "200 OK",
            serde_json::to_string_pretty(&state.progress.last()).unwrap_or_default(),
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
            r#"{"error":"try /progress, /progress/last, /tables, /tables/<name>"}"#.to_string(),
        ),
    }
}
