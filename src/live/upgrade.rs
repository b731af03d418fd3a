//! The WebSocket opening handshake, server side (RFC 6455, section 4.2).
//!
//! Done here rather than with axum's `WebSocketUpgrade`, which hands the connection over
//! only inside its own `WebSocket`: the hub writes to each viewer's connection itself (see
//! [`super::outlet`]), so a session needs the connection as it is.

use std::future::Future;

use futures::{FutureExt as _, future::Either};

use axum::{
    body::Body,
    extract::FromRequestParts,
    http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use hyper::upgrade::{OnUpgrade, Upgraded};
use tokio_util::task::TaskTracker;

use base64::Engine as _;

use crate::error::{AppError, Problem};

/// A request to open a WebSocket, checked.
pub struct Upgrade {
    key: HeaderValue,
    on_upgrade: OnUpgrade,
}

/// Why a request cannot be upgraded.
#[derive(Debug)]
pub enum NotAnUpgrade {
    /// 400, saying what is wrong with the request.
    Malformed(&'static str),
    /// 426 with `Sec-WebSocket-Version: 13`, the one version this server speaks
    /// (RFC 6455, section 4.4).
    Version,
}

impl IntoResponse for NotAnUpgrade {
    fn into_response(self) -> Response {
        match self {
            Self::Malformed(why) => {
                AppError::BadRequest(format!("a WebSocket upgrade is required: {why}"))
                    .into_response()
            }
            Self::Version => {
                let mut response = Problem::new(
                    StatusCode::UPGRADE_REQUIRED,
                    "this server speaks WebSocket version 13 only",
                )
                .into_response();
                response.headers_mut().insert(
                    header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static("13"),
                );
                response
            }
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = NotAnUpgrade;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        use NotAnUpgrade::Malformed;
        if parts.method != Method::GET {
            return Err(Malformed("the method must be GET"));
        }
        if !has_token(&parts.headers, header::CONNECTION, "upgrade") {
            return Err(Malformed("the Connection header must include `upgrade`"));
        }
        if !has_token(&parts.headers, header::UPGRADE, "websocket") {
            return Err(Malformed("the Upgrade header must be `websocket`"));
        }
        if parts.headers.get(header::SEC_WEBSOCKET_VERSION) != Some(&HeaderValue::from_static("13"))
        {
            return Err(NotAnUpgrade::Version);
        }
        let key = parts
            .headers
            .get(header::SEC_WEBSOCKET_KEY)
            .cloned()
            .ok_or(Malformed("the Sec-WebSocket-Key header is missing"))?;
        // A nonce of 16 bytes, base64-encoded (RFC 6455, section 4.1).
        let nonce = base64::engine::general_purpose::STANDARD.decode(key.as_bytes());
        if !nonce.is_ok_and(|nonce| nonce.len() == 16) {
            return Err(Malformed(
                "the Sec-WebSocket-Key header must be 16 bytes in base64",
            ));
        }
        let on_upgrade = parts
            .extensions
            .remove::<OnUpgrade>()
            .ok_or(Malformed("this connection cannot be upgraded"))?;
        Ok(Self { key, on_upgrade })
    }
}

impl Upgrade {
    /// Answers `101 Switching Protocols`; once the client has it, runs `serve` on the
    /// connection, as a task of `tasks`.
    pub fn on_upgrade<F, Fut>(self, tasks: &TaskTracker, serve: F) -> Response
    where
        F: FnOnce(Upgraded) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let accept = tungstenite::handshake::derive_accept_key(self.key.as_bytes());
        // A combinator rather than an `async` block: the task lives as long as the stream,
        // and a block would keep room for `serve` and the upgrade's result beside the
        // stream's own future instead of in its place.
        tasks.spawn(self.on_upgrade.then(|upgraded| match upgraded {
            Ok(upgraded) => Either::Left(serve(upgraded)),
            Err(error) => {
                tracing::debug!(%error, "a WebSocket upgrade did not complete");
                Either::Right(std::future::ready(()))
            }
        }));
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_str(&accept) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        response
    }
}

/// Whether a comma-separated header holds `token`, in any case.
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|part| part.trim().eq_ignore_ascii_case(token))
}
