//! The floors: servers that do only what a scenario cannot do without, so that the
//! benchmark says how far from the machine's limit each figure is, not only how it compares
//! with a peer.
//!
//! - **Broadcast** (fanout, burst): a WebSocket server that relays each message a client
//!   sends to every other client with one non-blocking write of a frame made once. No
//!   task per viewer, no queue, no store: what is left is the kernel's cost of a write on
//!   loopback, which no server that writes each delivery can go below.
//! - **HTTP** (REST list): axum answering every request with the same bytes from memory,
//!   the bytes of a real Skein list page: what HTTP alone costs, without reading or
//!   serializing anything.
//!
//! Each runs as `skein-bench --floor <kind>`, pinned to the server's core like the others,
//! and prints `listening <port>` once ready.

use std::{
    path::Path,
    sync::{Arc, Mutex},
};

use anyhow::Context;
use axum::serve::ListenerExt;
use tokio::net::{TcpListener, TcpStream};

pub async fn broadcast() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("listening {}", listener.local_addr()?.port());
    let clients: Clients = Arc::default();
    loop {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        let clients = clients.clone();
        tokio::spawn(async move {
            let tcp = Arc::new(tcp);
            let _ = relay(&tcp, &clients).await;
            lock(&clients).retain(|client| !Arc::ptr_eq(client, &tcp));
        });
    }
}

/// Answers every request with the bytes of `body_file`, as JSON.
pub async fn http(body_file: &Path) -> anyhow::Result<()> {
    let body =
        axum::body::Bytes::from(std::fs::read(body_file).context("the body to answer with")?);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("listening {}", listener.local_addr()?.port());
    let router = axum::Router::new().fallback(move || {
        let body = body.clone();
        async move {
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                body,
            )
        }
    });
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router).await?;
    Ok(())
}

type Clients = Arc<Mutex<Vec<Arc<TcpStream>>>>;

fn lock(clients: &Clients) -> std::sync::MutexGuard<'_, Vec<Arc<TcpStream>>> {
    clients
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The handshake, then every text message this client sends, to every other client.
async fn relay(tcp: &Arc<TcpStream>, clients: &Clients) -> anyhow::Result<()> {
    let mut input = Vec::new();
    let head_end = loop {
        read_more(tcp, &mut input).await?;
        if let Some(end) = input.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let head = String::from_utf8_lossy(&input[..head_end]).into_owned();
    input.drain(..head_end);
    let key = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-key")
                .then(|| value.trim().to_owned())
        })
        .context("a WebSocket key")?;
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    write_all(tcp, response.as_bytes()).await?;
    lock(clients).push(tcp.clone());
    loop {
        while let Some((opcode, payload, used)) = client_frame(&input) {
            input.drain(..used);
            match opcode {
                0x1 => {
                    let frame = server_frame(&payload);
                    let others: Vec<_> = lock(clients)
                        .iter()
                        .filter(|client| !Arc::ptr_eq(client, tcp))
                        .cloned()
                        .collect();
                    for client in others {
                        // One write; what a full socket leaves is finished here, rarely.
                        match client.try_write(&frame) {
                            Ok(n) if n == frame.len() => {}
                            Ok(n) => write_all(&client, &frame[n..]).await?,
                            Err(_) => write_all(&client, &frame).await?,
                        }
                    }
                }
                0x8 => return Ok(()),
                _ => {}
            }
        }
        read_more(tcp, &mut input).await?;
    }
}

async fn read_more(tcp: &TcpStream, input: &mut Vec<u8>) -> anyhow::Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        tcp.readable().await?;
        match tcp.try_read(&mut buf) {
            Ok(0) => anyhow::bail!("closed"),
            Ok(n) => {
                input.extend_from_slice(&buf[..n]);
                return Ok(());
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(error) => return Err(error.into()),
        }
    }
}

async fn write_all(tcp: &TcpStream, mut bytes: &[u8]) -> anyhow::Result<()> {
    while !bytes.is_empty() {
        tcp.writable().await?;
        match tcp.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

/// A whole frame from a client at the start of `input`: its opcode, unmasked payload and
/// length on the wire.
fn client_frame(input: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    let [first, second, ..] = *input else {
        return None;
    };
    let (len, mut at) = match second & 0x7f {
        126 => (
            u16::from_be_bytes(input.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(input.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        len => (len as usize, 2),
    };
    let mask: Option<[u8; 4]> = if second & 0x80 != 0 {
        let mask = input.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        Some(mask)
    } else {
        None
    };
    let mut payload = input.get(at..at + len)?.to_vec();
    if let Some(mask) = mask {
        payload
            .iter_mut()
            .zip(mask.iter().cycle())
            .for_each(|(byte, key)| *byte ^= key);
    }
    Some((first & 0x0f, payload, at + len))
}

/// A final text frame as a server sends it: unmasked.
fn server_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x81];
    match payload.len() {
        len @ 0..=125 => frame.push(len as u8),
        len @ 126..=65_535 => {
            frame.push(126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            frame.push(127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_masked_client_frame_reads_back_as_sent() {
        let payload = b"hello floor";
        let mask = [1, 2, 3, 4];
        let mut frame = vec![0x81, 0x80 | payload.len() as u8];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, k)| b ^ k));
        let (opcode, read, used) = client_frame(&frame).unwrap();
        assert_eq!(
            (opcode, read.as_slice(), used),
            (1, &payload[..], frame.len())
        );
        assert_eq!(client_frame(&frame[..frame.len() - 1]), None);
        assert_eq!(server_frame(payload)[..2], [0x81, payload.len() as u8]);
    }
}
