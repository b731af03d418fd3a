//! A TCP proxy between Skein and a service it uses (PostgreSQL, NATS), to cut the line and
//! mend it while Skein runs: the faults a deployment meets.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};

pub struct Proxy {
    pub address: SocketAddr,
    /// True while the line is cut: connections are dropped and new ones refused.
    cut: watch::Sender<bool>,
    accepting: tokio::task::JoinHandle<()>,
    /// How many connections were made through it, to see that a client reconnected.
    pub connections: Arc<Mutex<usize>>,
}

impl Proxy {
    /// Forwards connections on a free port of 127.0.0.1 to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (cut, watching) = watch::channel(false);
        let connections: Arc<Mutex<usize>> = Arc::default();
        let counted = connections.clone();
        let accepting = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *watching.borrow() {
                    // Cut: the connection is closed at once, as by a network that refuses it.
                    drop(client);
                    continue;
                }
                *counted.lock().unwrap() += 1;
                let mut watching = watching.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = watching.wait_for(|cut| *cut) => {}
                    }
                    // Both ends are dropped here: the line is gone.
                });
            }
        });
        Self {
            address,
            cut,
            accepting,
            connections,
        }
    }

    /// Drops every connection through it, and refuses new ones until [`Proxy::mend`].
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub fn mend(&self) {
        self.cut.send_replace(false);
    }

    pub fn connections(&self) -> usize {
        *self.connections.lock().unwrap()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accepting.abort();
        self.cut.send_replace(true);
    }
}
