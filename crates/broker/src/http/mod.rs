//! The HTTP admin API (`http.listeners`, default 127.0.0.1:9644): JSON views of the
//! brokers, topics, consumer groups and configs, liveness and readiness, `/metrics` for
//! Prometheus, and the web console at `/` (`console.rs`, assets in the binary).
//!
//! Changes (create/delete topics, add partitions, alter topic configs, produce, reset a
//! group's offsets) and record reads are Kafka requests run through the Kafka handlers
//! (`kafka.rs`): one validation path, the same refusals a Kafka client gets.
//!
//! Served over TLS when `http.listeners` is `https://...`; callers authenticate as
//! `http.authentication.method` says, and every request runs as its caller's principal
//! (`auth.rs`), through the same ACLs as a Kafka client.
//!
//! `docs/openapi.yaml` describes the JSON API and `docs/metrics.md` every metric; the
//! client suite (tests/clients/python/test_http.py) checks the server against both.
//! Every error is JSON `{"error": "..."}`: 400 for bad input, 404 for an unknown topic,
//! group or path, 405 for a method a path does not take (its `Allow` header lists those
//! it does), 409 for a change the current state refuses.

mod acls;
mod actions;
mod api;
pub mod auth;
pub mod console;
mod kafka;
pub mod prometheus;
mod share;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::net::TcpListener;

use crate::broker::Broker;
use crate::config::BrokerConfig;
use crate::error::{BrokerError, ErrorCode};

/// What the handlers share.
#[derive(Clone)]
pub struct HttpState {
    pub broker: Arc<Broker>,
    /// The Kafka listener's bound address (readiness reports it).
    pub kafka_addr: Option<SocketAddr>,
}

/// Binds `http.listeners`. A port taken on an explicitly configured address stops the
/// server; the default address (127.0.0.1:9644) being taken — a second broker on the
/// same host — only disables the API, with a warning.
pub async fn bind(config: &BrokerConfig) -> Result<Option<TcpListener>, BrokerError> {
    let Some(addr) = config.http_listener else {
        return Ok(None);
    };
    match TcpListener::bind(addr).await {
        Ok(l) => Ok(Some(l)),
        Err(e) if !config.explicit.contains_key("http.listeners") => {
            tracing::warn!(%addr, error = %e,
                "cannot listen on the default http.listeners address; the HTTP admin API is disabled");
            Ok(None)
        }
        Err(e) => Err(BrokerError::new(
            ErrorCode::UnknownServerError,
            format!("cannot listen on {addr} (http.listeners): {e}"),
        )),
    }
}

/// Serves the admin API on `listener` until the task is aborted.
pub async fn serve(listener: TcpListener, broker: Arc<Broker>, kafka_addr: Option<SocketAddr>) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "HTTP admin API listening");
    }
    let tls = broker.security.http_tls.clone();
    let app = router(HttpState {
        broker: broker.clone(),
        kafka_addr,
    })
    .into_make_service_with_connect_info::<auth::Peer>();
    let served = match tls {
        None => axum::serve(listener, app).await,
        Some(tls) => axum::serve(auth::TlsHttpListener::new(listener, tls, broker), app).await,
    };
    if let Err(e) = served {
        tracing::warn!(error = %e, "HTTP admin API stopped");
    }
}

/// The routes.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/", get(console::index))
        .route("/console/{file}", get(console::asset))
        .route("/v1/brokers", get(api::brokers))
        .route("/v1/topics", get(api::topics).post(actions::create_topic))
        .route(
            "/v1/topics/{name}",
            get(api::topic).delete(actions::delete_topic),
        )
        .route(
            "/v1/topics/{name}/partitions",
            post(actions::add_partitions),
        )
        .route(
            "/v1/topics/{name}/records",
            get(actions::records).post(actions::produce),
        )
        .route("/v1/groups", get(api::groups))
        .route("/v1/groups/{id}", get(api::group))
        .route(
            "/v1/groups/{id}/offsets/reset",
            post(actions::reset_offsets),
        )
        .route("/v1/configs/broker", get(api::broker_configs))
        .route("/v1/links", get(api::links))
        .route("/v1/share-groups", get(share::list))
        .route("/v1/share-groups/{id}", get(share::group))
        .route(
            "/v1/acls",
            get(acls::list).post(acls::create).delete(acls::delete),
        )
        .route(
            "/v1/configs/topics/{name}",
            get(api::topic_configs).patch(actions::alter_topic_configs),
        )
        .route("/v1/health", get(api::health))
        .route("/v1/ready", get(api::ready))
        .route("/metrics", get(api::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .with_state(state)
}

/// An error answered as `{"error": message}` with its status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no such endpoint: {method} {}", uri.path()))
}

/// axum adds the `Allow` header listing the path's methods.
async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        message: format!(
            "method {method} is not allowed on {} (the Allow header lists those it takes)",
            uri.path()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http_listener(v: &str) -> Result<Option<SocketAddr>, crate::ConfigError> {
        BrokerConfig::from_pairs(&[("http.listeners".to_string(), v.to_string())])
            .map(|c| c.http_listener)
    }

    #[test]
    fn http_listeners_config() {
        assert_eq!(
            BrokerConfig::default().http_listener,
            Some("127.0.0.1:9644".parse().unwrap())
        );
        assert_eq!(
            http_listener("0.0.0.0:0").unwrap(),
            Some("0.0.0.0:0".parse().unwrap())
        );
        assert_eq!(
            http_listener("http://[::1]:9000").unwrap(),
            Some("[::1]:9000".parse().unwrap())
        );
        assert_eq!(http_listener("").unwrap(), None);
        for bad in [
            "localhost:9644",
            "127.0.0.1",
            "127.0.0.1:99999",
            "1.2.3.4:x",
        ] {
            let e = http_listener(bad).unwrap_err().to_string();
            assert!(e.contains("http.listeners"), "{bad}: {e}");
        }
    }

    #[tokio::test]
    async fn http_default_address_taken_disables_the_api_but_an_explicit_one_fails() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let mut c = BrokerConfig {
            http_listener: Some(addr),
            ..BrokerConfig::default()
        };
        assert!(bind(&c).await.unwrap().is_none());
        c.explicit.insert("http.listeners".into(), addr.to_string());
        let e = bind(&c).await.unwrap_err().to_string();
        assert!(e.contains("http.listeners"), "{e}");
        c.http_listener = None;
        assert!(bind(&c).await.unwrap().is_none());
    }
}
