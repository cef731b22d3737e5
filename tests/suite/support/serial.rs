//! The serial link without the daemon: a raw terminal that speaks bytes on a real pty master
//! (to inject noise, bad CRCs, lost ACKs, cut frames), and the agent's link on the slave path.

use std::path::Path;
use std::time::Duration;

use bytes::BytesMut;
use pos_agent::config::SerialConfig;
use pos_agent::serial::codec::{FrameCodec, Inbound};
use pos_agent::serial::frame::{frame_bytes, ACK};
use pos_agent::serial::{
    spawn_port_link, AgentRequest, LinkEvent, LinkHandle, LinkSettings, SerialHandle,
    TerminalRequest,
};
use pos_agent::simulator::virtual_serial::VirtualSerial;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::WAIT;

/// Link settings for tests: quick T3, no idle pings unless a test asks for them.
pub fn quick_settings() -> LinkSettings {
    LinkSettings {
        ack_timeout: Duration::from_millis(400),
        max_sends: 3,
        ping_interval: Duration::from_secs(3600),
        reply_timeout: WAIT,
        ..LinkSettings::default()
    }
}

pub type AgentEvents = mpsc::Receiver<LinkEvent<TerminalRequest>>;

/// The agent's link on `device`, through the real port code (tokio-serial, reopen).
pub fn agent_on(device: &Path, settings: LinkSettings) -> (LinkHandle<AgentRequest>, AgentEvents) {
    let (serial, events) = agent_on_port(device, settings);
    (serial.link, events)
}

/// [`agent_on`], with what the port went through beside the link.
pub fn agent_on_port(
    device: &Path,
    settings: LinkSettings,
) -> (SerialHandle<AgentRequest>, AgentEvents) {
    let config = SerialConfig {
        device: device.to_path_buf(),
        ..SerialConfig::default()
    };
    spawn_port_link::<TerminalRequest, AgentRequest>(config, settings)
}

/// The next event, or a panic after [`WAIT`].
pub async fn next_event(events: &mut AgentEvents) -> LinkEvent<TerminalRequest> {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("no link event in time")
        .expect("link ended")
}

/// The next request delivered to the application, skipping Up/Down.
pub async fn next_request(
    events: &mut AgentEvents,
) -> pos_agent::serial::IncomingRequest<TerminalRequest> {
    loop {
        if let LinkEvent::Request(request) = next_event(events).await {
            return request;
        }
    }
}

/// A terminal that speaks raw bytes on the master of a pty pair.
pub struct RawTerminal {
    pub line: VirtualSerial,
    codec: FrameCodec,
    input: BytesMut,
}

impl RawTerminal {
    pub fn new(line: VirtualSerial) -> Self {
        Self {
            line,
            codec: FrameCodec::new(),
            input: BytesMut::new(),
        }
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        self.line.write_all(bytes).await.unwrap();
    }

    pub async fn send_frame(&mut self, apdu: &[u8]) {
        let frame = frame_bytes(apdu).unwrap();
        self.write(&frame).await;
    }

    pub async fn ack(&mut self) {
        self.write(&[ACK]).await;
    }

    /// The next item on the line within `wait`, if any.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Inbound> {
        use tokio_util::codec::Decoder;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(item) = self.codec.decode(&mut self.input).unwrap() {
                return Some(item);
            }
            self.input.reserve(1024);
            match tokio::time::timeout_at(deadline, self.line.read_buf(&mut self.input)).await {
                Err(_) => return None,
                Ok(Ok(0)) => panic!("line closed"),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("read error: {e}"),
            }
        }
    }

    /// The next item, or a panic after [`WAIT`].
    pub async fn next(&mut self) -> Inbound {
        self.next_within(WAIT)
            .await
            .expect("nothing on the line in time")
    }

    /// The next frame's JSON; panics on anything else.
    pub async fn next_json(&mut self) -> serde_json::Value {
        match self.next().await {
            Inbound::Frame(apdu) => serde_json::from_slice(&apdu).unwrap(),
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// Answers the agent's opening probe (`ping` → ACK, `pong`, expect the ACK of the pong), so
    /// the link is up and the line is quiet.
    pub async fn handshake(&mut self) {
        let ping = self.next_json().await;
        assert_eq!(ping["type"], "ping");
        self.ack().await;
        let pong = format!(r#"{{"type":"pong","re":{}}}"#, ping["id"]);
        self.send_frame(pong.as_bytes()).await;
        assert_eq!(self.next().await, Inbound::Ack);
    }
}
