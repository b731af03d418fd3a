//! Serving HTTP: the accept loop, with the bounds a server on the internet needs.
//!
//! axum's own `serve` sets hyper no timer, so hyper never gives up on a client that sends
//! half a request head, and it takes every connection it is offered: 900 connections, each
//! holding half a request line, were all still open 35 s later. Here:
//! - a connection that has not sent a whole request head within `header_timeout` is closed.
//!   hyper's header-read timer runs from the moment a connection waits for its next request,
//!   so an idle keep-alive connection is closed after the same time;
//! - at most `max_connections` are open at once, WebSocket streams included: the permit
//!   travels inside the connection, into the upgraded stream, and is given back when the
//!   socket closes. One more is answered `503` with `Retry-After` and closed at once;
//! - each request carries its client's address ([`ConnectInfo`]), for the limits kept per
//!   address.
//!
//! A slow request body is the router's business: every request must be answered within its
//! timeout (see [`crate::api`]). Shutdown stops accepting, lets each connection finish the
//! request it is serving, and waits for them.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::{Pin, pin},
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::{Router, body::Body, extract::ConnectInfo};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, watch},
};
use tower::ServiceExt;

use crate::tasks::Tasks;

/// What a connection may take.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Until a request head must have arrived (`SKEIN_HEADER_TIMEOUT_SECS`).
    pub header_timeout: Duration,
    /// Connections open at once, WebSocket streams included (`SKEIN_MAX_CONNECTIONS`).
    pub max_connections: usize,
}

/// The answer to a connection over the limit: written at once into the fresh socket's empty
/// send buffer, without a task of its own.
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
    Content-Type: application/problem+json\r\nRetry-After: 5\r\nConnection: close\r\n\
    Content-Length: 143\r\n\r\n\
    {\"type\":\"https://skein.dev/problems/service-unavailable\",\"title\":\"Service Unavailable\",\
    \"status\":503,\"detail\":\"too many connections; try again\"}";

/// Serves `router` on `listener` until `shutdown` resolves, each connection a task of a
/// group of `tasks`; then waits for the connections to finish what they are serving.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    tasks: &Tasks,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let connections = tasks.group();
    let (stopping, stop) = watch::channel(());
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, address) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of file descriptors, say: the client is gone, the listener is not.
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Frames are small and each is written when it is due: Nagle's algorithm would hold
        // a viewer's next frame until the last one is acknowledged.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            crate::telemetry::connection_refused();
            let _ = stream.try_write(TOO_MANY_CONNECTIONS);
            continue;
        };
        let connection = Connection {
            stream,
            _permit: permit,
        };
        let (router, mut stop) = (router.clone(), stop.clone());
        connections.spawn("http connection", async move {
            let service = TowerToHyperService::new(router.map_request(
                move |mut request: hyper::Request<Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(address));
                    request.map(Body::new)
                },
            ));
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(TokioIo::new(connection), service)
                .with_upgrades();
            let mut served = pin!(served);
            tokio::select! {
                result = served.as_mut() => return log_end(result),
                _ = stop.changed() => served.as_mut().graceful_shutdown(),
            }
            log_end(served.await);
        });
    }
    drop(stop);
    stopping.send_replace(());
    connections.wait().await;
    Ok(())
}

fn log_end(result: Result<(), hyper::Error>) {
    if let Err(error) = result {
        tracing::debug!(%error, "a connection ended in error");
    }
}

/// A client's connection and its place under the cap, given back when the socket closes,
/// however long it lives (as a WebSocket stream, say).
struct Connection {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The client's address, as the accept loop saw it.
pub fn client_address<B>(request: &http::Request<B>) -> Option<SocketAddr> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_refusal_says_its_length_right() {
        let text = std::str::from_utf8(super::TOO_MANY_CONNECTIONS).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{body}"
        );
        let problem: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(problem["status"], 503);
    }
}
