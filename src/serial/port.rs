//! The real serial device (serial-link.md §1, §4): opens the configured path with every line
//! setting through `tokio-serial`, runs the link on it, and when the device goes away (EOF,
//! EIO, unplugged) closes it and reopens it with backoff up to 5 s, following the path again
//! each time so a `/dev/serial/by-id/...` symlink that now points elsewhere is honoured.

use std::io;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_serial::{DataBits, FlowControl, Parity, SerialPortBuilderExt, SerialStream, StopBits};

use super::link::{LinkCore, LinkEvent, LinkHandle, LinkSettings, SessionEnd};
use super::message::{AgentRequest, LinkMessage, TerminalRequest};
use crate::config::{self, SerialConfig};

/// First wait before reopening a device that is gone.
pub const REOPEN_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest wait between two attempts to reopen (§4).
pub const REOPEN_BACKOFF_MAX: Duration = Duration::from_secs(5);

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// Opens the configured device with all of `[serial]`'s line settings (exclusive access, raw
/// mode). The path is resolved first, so a symlink is followed to whatever it points at now.
pub fn open_port(config: &SerialConfig) -> io::Result<SerialStream> {
    let data_bits = match config.data_bits {
        5 => DataBits::Five,
        6 => DataBits::Six,
        7 => DataBits::Seven,
        8 => DataBits::Eight,
        other => return Err(invalid(format!("data_bits must be 5 to 8, not {other}"))),
    };
    let stop_bits = match config.stop_bits {
        1 => StopBits::One,
        2 => StopBits::Two,
        other => return Err(invalid(format!("stop_bits must be 1 or 2, not {other}"))),
    };
    let parity = match config.parity {
        config::Parity::None => Parity::None,
        config::Parity::Odd => Parity::Odd,
        config::Parity::Even => Parity::Even,
    };
    let flow_control = match config.flow_control {
        config::FlowControl::None => FlowControl::None,
        config::FlowControl::Software => FlowControl::Software,
        config::FlowControl::Hardware => FlowControl::Hardware,
    };
    let resolved = std::fs::canonicalize(&config.device)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", config.device.display())))?;
    let path = resolved
        .to_str()
        .ok_or_else(|| invalid(format!("{} is not a UTF-8 path", resolved.display())))?;
    let port = match tokio_serial::new(path, config.baud_rate)
        .data_bits(data_bits)
        .stop_bits(stop_bits)
        .parity(parity)
        .flow_control(flow_control)
        .open_native_async()
    {
        Ok(port) => port,
        Err(e) if e.description == nix::errno::Errno::ENOSYS.desc() => {
            tracing::debug!(device = %path, "termios2 unsupported here; classic termios used");
            open_with_classic_termios(path, config)?
        }
        Err(e) => return Err(io::Error::other(format!("{path}: {e}"))),
    };
    tracing::info!(device = %config.device.display(), resolved = %path, baud = config.baud_rate, "serial device open");
    Ok(port)
}

/// The same settings through the classic `tcsetattr` interface, for systems without the Linux
/// `termios2` ioctls `serialport` uses (qemu-user, where the test suite also runs for aarch64).
/// Only the standard baud rates exist there.
fn open_with_classic_termios(path: &str, config: &SerialConfig) -> io::Result<SerialStream> {
    use nix::fcntl::{open, OFlag};
    use nix::sys::stat::Mode;
    use nix::sys::termios::{
        cfmakeraw, cfsetspeed, tcgetattr, tcsetattr, BaudRate, ControlFlags, InputFlags, SetArg,
    };
    use std::os::fd::IntoRawFd;
    use std::os::unix::io::FromRawFd;

    let fail = |e: nix::Error| io::Error::other(format!("{path}: {e}"));
    let speed = match config.baud_rate {
        1200 => BaudRate::B1200,
        2400 => BaudRate::B2400,
        4800 => BaudRate::B4800,
        9600 => BaudRate::B9600,
        19_200 => BaudRate::B19200,
        38_400 => BaudRate::B38400,
        57_600 => BaudRate::B57600,
        115_200 => BaudRate::B115200,
        230_400 => BaudRate::B230400,
        460_800 => BaudRate::B460800,
        921_600 => BaudRate::B921600,
        other => {
            return Err(invalid(format!(
                "{path}: baud rate {other} is not a standard rate and this system lacks termios2"
            )))
        }
    };
    let fd = open(
        path,
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(fail)?;
    let mut termios = tcgetattr(&fd).map_err(fail)?;
    cfmakeraw(&mut termios);
    let control = &mut termios.control_flags;
    *control |= ControlFlags::CREAD | ControlFlags::CLOCAL;
    *control &= !(ControlFlags::CSIZE
        | ControlFlags::PARENB
        | ControlFlags::PARODD
        | ControlFlags::CSTOPB
        | ControlFlags::CRTSCTS);
    *control |= match config.data_bits {
        5 => ControlFlags::CS5,
        6 => ControlFlags::CS6,
        7 => ControlFlags::CS7,
        _ => ControlFlags::CS8,
    };
    match config.parity {
        config::Parity::None => {}
        config::Parity::Odd => *control |= ControlFlags::PARENB | ControlFlags::PARODD,
        config::Parity::Even => *control |= ControlFlags::PARENB,
    }
    if config.stop_bits == 2 {
        *control |= ControlFlags::CSTOPB;
    }
    termios.input_flags &= !(InputFlags::IXON | InputFlags::IXOFF);
    match config.flow_control {
        config::FlowControl::None => {}
        config::FlowControl::Software => {
            termios.input_flags |= InputFlags::IXON | InputFlags::IXOFF
        }
        config::FlowControl::Hardware => termios.control_flags |= ControlFlags::CRTSCTS,
    }
    cfsetspeed(&mut termios, speed).map_err(fail)?;
    tcsetattr(&fd, SetArg::TCSANOW, &termios).map_err(fail)?;
    // SAFETY: the descriptor was just opened here and ownership moves into the `TTYPort`, which
    // closes it (it also takes the exclusive lock, as the normal path does).
    let tty = unsafe { serialport::TTYPort::from_raw_fd(fd.into_raw_fd()) };
    SerialStream::try_from(tty).map_err(|e| io::Error::other(format!("{path}: {e}")))
}

/// The agent's serial link on the configured device: opens it, keeps reopening it while it is
/// gone, and runs the link on it. The state is `Closed` while the device is not open.
pub fn spawn_link(
    config: SerialConfig,
) -> (
    LinkHandle<AgentRequest>,
    mpsc::UnboundedReceiver<LinkEvent<TerminalRequest>>,
) {
    let settings = LinkSettings::from_config(&config);
    spawn_port_link(config, settings)
}

/// [`spawn_link`] for either role and explicit link settings.
pub fn spawn_port_link<In: LinkMessage, Out: LinkMessage>(
    config: SerialConfig,
    settings: LinkSettings,
) -> (LinkHandle<Out>, mpsc::UnboundedReceiver<LinkEvent<In>>) {
    let (handle, events, core) = LinkCore::<In, Out>::new(settings);
    tokio::spawn(supervise(core, config));
    (handle, events)
}

async fn supervise<In: LinkMessage, Out: LinkMessage>(
    mut core: LinkCore<In, Out>,
    config: SerialConfig,
) {
    let mut backoff = REOPEN_BACKOFF_MIN;
    let mut last_error: Option<String> = None;
    loop {
        match open_port(&config) {
            Ok(mut port) => {
                last_error = None;
                let end = core.run_session(&mut port).await;
                // Give up TIOCEXCL before closing, or our own reopen could get EBUSY while
                // something else keeps the tty open.
                let _ = port.set_exclusive(false);
                drop(port);
                match end {
                    SessionEnd::Shutdown => break,
                    SessionEnd::Lost(e) => {
                        tracing::warn!(device = %config.device.display(), error = %e, "serial device lost; reopening");
                    }
                }
                if core.came_up {
                    backoff = REOPEN_BACKOFF_MIN;
                }
            }
            Err(e) => {
                let text = e.to_string();
                if last_error.as_deref() != Some(text.as_str()) {
                    tracing::warn!(error = %text, "cannot open the serial device; retrying");
                    last_error = Some(text);
                }
            }
        }
        if !core.wait_closed_until(Instant::now() + backoff).await {
            break;
        }
        backoff = (backoff * 2).min(REOPEN_BACKOFF_MAX);
    }
    core.close();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulator::virtual_serial::VirtualSerial;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn classic_termios_fallback_gives_a_transparent_raw_line() {
        let mut line = VirtualSerial::open().unwrap();
        let path = line.slave_path().to_str().unwrap().to_owned();
        let mut port = open_with_classic_termios(&path, &SerialConfig::default()).unwrap();
        let all: Vec<u8> = (0..=255u8).collect();
        line.write_all(&all).await.unwrap();
        let mut got = vec![0; all.len()];
        port.read_exact(&mut got).await.unwrap();
        assert_eq!(got, all);
        port.write_all(&all).await.unwrap();
        line.read_exact(&mut got).await.unwrap();
        assert_eq!(got, all);
    }

    #[tokio::test]
    async fn classic_termios_fallback_refuses_a_non_standard_baud_rate() {
        let line = VirtualSerial::open().unwrap();
        let path = line.slave_path().to_str().unwrap().to_owned();
        let config = SerialConfig {
            baud_rate: 123_456,
            ..SerialConfig::default()
        };
        let error = open_with_classic_termios(&path, &config).unwrap_err();
        assert!(error.to_string().contains("123456"), "{error}");
    }
}
