//! The real port code: line transparency of the virtual pair, and reopening when the device
//! vanishes and a new one appears behind the same `/dev/serial/by-id`-style symlink.

use std::path::Path;

use crate::support::serial::*;
use crate::support::WAIT;
use pos_agent::config::SerialConfig;
use pos_agent::serial::{open_port, LinkEvent, LinkState, Reply, SerialHandle, TerminalRequest};
use pos_agent::simulator::terminal::TerminalSimulator;
use pos_agent::simulator::virtual_serial::VirtualSerial;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Points `link` at `target` atomically, as udev does.
fn repoint(link: &Path, target: &Path) {
    let staging = link.with_extension("new");
    let _ = std::fs::remove_file(&staging);
    std::os::unix::fs::symlink(target, &staging).unwrap();
    std::fs::rename(&staging, link).unwrap();
}

#[tokio::test]
async fn every_byte_value_crosses_the_virtual_pair_untouched_both_ways() {
    let mut line = VirtualSerial::open().unwrap();
    let config = SerialConfig {
        device: line.slave_path().to_path_buf(),
        ..SerialConfig::default()
    };
    let mut port = open_port(&config).unwrap();
    let all: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();

    line.write_all(&all).await.unwrap();
    let mut got = vec![0; all.len()];
    tokio::time::timeout(WAIT, port.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, all, "terminal → agent");

    port.write_all(&all).await.unwrap();
    let mut got = vec![0; all.len()];
    tokio::time::timeout(WAIT, line.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, all, "agent → terminal");
}

#[tokio::test]
async fn bad_line_settings_are_refused_with_a_clear_error() {
    let line = VirtualSerial::open().unwrap();
    let config = SerialConfig {
        device: line.slave_path().to_path_buf(),
        data_bits: 9,
        ..SerialConfig::default()
    };
    let error = open_port(&config).unwrap_err();
    assert!(error.to_string().contains("data_bits"), "{error}");
}

#[tokio::test]
async fn link_recovers_when_the_device_vanishes_and_a_new_one_appears_at_the_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let by_id = dir.path().join("usb-Terminal_1234-if00");
    let first = VirtualSerial::open().unwrap();
    repoint(&by_id, first.slave_path());

    let (SerialHandle { link: agent, port }, mut events) = agent_on_port(&by_id, quick_settings());
    let terminal = TerminalSimulator::over(first, quick_settings());
    assert!(matches!(next_event(&mut events).await, LinkEvent::Up));

    // Unplug: the terminal side goes away and with it the pty master.
    drop(terminal);
    assert!(matches!(next_event(&mut events).await, LinkEvent::Down));

    // Plug in again: a new device behind the same stable name.
    let second = VirtualSerial::open().unwrap();
    repoint(&by_id, second.slave_path());
    let terminal = TerminalSimulator::over(second, quick_settings());
    assert!(matches!(next_event(&mut events).await, LinkEvent::Up));
    assert_eq!(agent.state(), LinkState::Up);
    let stats = port.snapshot();
    assert_eq!(stats.reopens, 1, "{stats:?}");
    let error = stats.last_error.expect("the loss is recorded").message;
    assert!(error.contains("usb-Terminal_1234-if00"), "{error}");

    let answer = tokio::spawn(async move {
        let request = next_request(&mut events).await;
        assert_eq!(request.request(), &TerminalRequest::Status);
        request.reply(Reply::Pong);
    });
    assert_eq!(terminal.status().await.unwrap(), Reply::Pong);
    answer.await.unwrap();
}

#[tokio::test]
async fn missing_device_is_retried_until_it_appears() {
    let dir = tempfile::tempdir().unwrap();
    let by_id = dir.path().join("usb-Terminal_5678-if00");
    let (SerialHandle { link: agent, port }, mut events) = agent_on_port(&by_id, quick_settings());
    assert_eq!(agent.state(), LinkState::Closed);
    let request = agent.request(pos_agent::serial::AgentRequest::Ping).await;
    assert_eq!(request, Err(pos_agent::serial::LinkError::Closed));
    // The device opens on a thread of its own: the link answers before the open has failed.
    let deadline = tokio::time::Instant::now() + WAIT;
    while port.snapshot().last_error.is_none() {
        assert!(tokio::time::Instant::now() < deadline, "no open refused");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }

    let line = VirtualSerial::open().unwrap();
    repoint(&by_id, line.slave_path());
    let _terminal = TerminalSimulator::over(line, quick_settings());
    assert!(matches!(next_event(&mut events).await, LinkEvent::Up));
    // The first open is no reopen, however many attempts it took; the refusal is remembered.
    let stats = port.snapshot();
    assert_eq!(stats.reopens, 0, "{stats:?}");
    let error = stats
        .last_error
        .expect("the refused opens are recorded")
        .message;
    assert!(error.starts_with("cannot open"), "{error}");
}
