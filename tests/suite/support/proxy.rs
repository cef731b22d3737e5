//! An HTTP CONNECT proxy on loopback, as an office or shop network puts in front of the
//! internet: it records each tunnel asked for (target and `Proxy-Authorization`), then copies
//! bytes both ways. Anything but `CONNECT` gets 405.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One `CONNECT` the proxy was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunnel {
    /// `host:port` as the client wrote it.
    pub target: String,
    /// The `Proxy-Authorization` header's value, if any.
    pub authorization: Option<String>,
}

pub struct ConnectProxy {
    address: SocketAddr,
    tunnels: Arc<Mutex<Vec<Tunnel>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl ConnectProxy {
    pub async fn start() -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let tunnels = Arc::new(Mutex::new(Vec::new()));
        let server = tokio::spawn({
            let tunnels = Arc::clone(&tunnels);
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    tokio::spawn(tunnel(client, Arc::clone(&tunnels)));
                }
            }
        });
        ConnectProxy {
            address,
            tunnels,
            server,
        }
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn tunnels(&self) -> Vec<Tunnel> {
        self.tunnels.lock().unwrap().clone()
    }
}

async fn tunnel(mut client: TcpStream, tunnels: Arc<Mutex<Vec<Tunnel>>>) -> std::io::Result<()> {
    // The request head, a byte at a time so that nothing after it is read here.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte).await? == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let mut request = lines.next().unwrap_or_default().split(' ');
    let (method, target) = (request.next(), request.next().unwrap_or_default());
    if method != Some("CONNECT") {
        return client
            .write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
            .await;
    }
    let authorization = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("proxy-authorization")
            .then(|| value.trim().to_owned())
    });
    tunnels.lock().unwrap().push(Tunnel {
        target: target.to_owned(),
        authorization,
    });
    let Ok(mut upstream) = TcpStream::connect(target).await else {
        return client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
    };
    client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}
