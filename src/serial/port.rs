//! The real serial device (docs/serial-protocol.md §1, §4): opens the configured path with every line
//! setting through `tokio-serial`, runs the link on it, and when the device goes away (EOF,
//! EIO, unplugged) closes it and reopens it with the common retry policy (waits up to 5 s), following the path again
//! each time so a `/dev/serial/by-id/...` symlink that now points elsewhere is honoured.
//! What it went through (how often the device was reopened, the last error and when) is kept
//! in [`PortStats`], which `status` and the metrics read through the [`SerialHandle`] the port
//! hands out beside the link's handle: the port drives the link, the link knows nothing of it.

// Time and count arithmetic: docs/architecture.md, "Lint policy". The bare § below cite
// docs/serial-protocol.md.
#![warn(clippy::arithmetic_side_effects)]

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serialport::{SerialPort, TTYPort};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_serial::{DataBits, FlowControl, Parity, SerialStream, StopBits};

use super::link::{LinkCore, LinkEvent, LinkHandle, LinkSettings, SessionEnd};
use super::message::{AgentRequest, LinkMessage, TerminalRequest};
use crate::config::{self, SerialConfig};
use crate::later::Later;
use crate::retry::RetryPolicy;
use crate::sync::lock;

/// Longest wait between two attempts to reopen (§4).
pub const REOPEN_BACKOFF_MAX: Duration = RetryPolicy::SERIAL_REOPEN.max_delay;

/// What the port has been through since the agent started (docs/operations.md, `status`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Times the device was opened again after it had been open once: each unplug/replug,
    /// EIO or hang-up that the port recovered from counts one.
    pub reopens: u64,
    /// The latest failure: the device lost, or an attempt to open it refused. Kept after the
    /// port recovers, so an operator can still see why it was reopened.
    pub last_error: Option<PortError>,
}

/// One failure of the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortError {
    /// What happened, with the path and the system's error (`lost: Input/output error`).
    pub message: String,
    /// When it (last) happened.
    pub at: SystemTime,
}

/// The port's [`PortStats`], written by the port task and read by anyone holding a clone.
#[derive(Debug, Clone, Default)]
pub struct PortStatsHandle(Arc<Mutex<PortStats>>);

impl PortStatsHandle {
    /// What the port has been through until now.
    pub fn snapshot(&self) -> PortStats {
        lock(&self.0).clone()
    }

    fn update(&self, change: impl FnOnce(&mut PortStats)) {
        change(&mut lock(&self.0));
    }

    fn reopened(&self) {
        self.update(|stats| stats.reopens = stats.reopens.saturating_add(1));
    }

    fn failed(&self, message: String) {
        self.update(|stats| {
            stats.last_error = Some(PortError {
                message,
                at: SystemTime::now(),
            })
        });
    }
}

/// A link on a real device, as [`spawn_link`] hands it out: the link's handle, and what the
/// port under it has been through. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SerialHandle<Out = AgentRequest> {
    /// Send requests, watch the state, shut the link (and the port) down.
    pub link: LinkHandle<Out>,
    /// Reopens and the last error of the device.
    pub port: PortStatsHandle,
}

impl<Out> SerialHandle<Out> {
    /// What the serial port has been through (reopens, last error).
    pub fn port_stats(&self) -> PortStats {
        self.port.snapshot()
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// Opens the configured device with all of `[serial]`'s line settings (exclusive access, raw
/// mode). The path is resolved first, so a symlink is followed to whatever it points at now.
/// It blocks while the device opens; the agent's own link opens it off the runtime thread.
pub fn open_port(config: &SerialConfig) -> io::Result<SerialStream> {
    let (tty, _) = open_blocking(config)?;
    into_stream(tty, &config.device)
}

/// The device open with every line setting, and a second handle on it through which the link
/// asks how many bytes the kernel still holds for the line (`TIOCOUTQ`, answered at once: it
/// never waits for them like `tcdrain`). Everything here may block for as long as the device
/// takes to answer (`open`, the line settings and `TIOCEXCL` are USB transfers on an adapter),
/// so the link runs it on a thread of its own ([`on_device_thread`]).
fn open_blocking(config: &SerialConfig) -> io::Result<(TTYPort, TTYPort)> {
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
    // A FIFO, a socket or a plain file would open, and fail at the first ioctl as "Not a
    // typewriter"; say what is wrong instead.
    if !std::os::unix::fs::FileTypeExt::is_char_device(
        &std::fs::metadata(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?
            .file_type(),
    ) {
        return Err(invalid(format!(
            "{path}: not a serial device (not a character device)"
        )));
    }
    let failed = |e: serialport::Error| io::Error::other(format!("{path}: {e}"));
    let tty = tokio_serial::new(path, config.baud_rate)
        .data_bits(data_bits)
        .stop_bits(stop_bits)
        .parity(parity)
        .flow_control(flow_control)
        .open_native()
        .map_err(failed)?;
    let queue = tty.try_clone_native().map_err(failed)?;
    tracing::info!(
        device = %config.device.display(),
        resolved = %path,
        baud = config.baud_rate,
        "serial device {} open ({path}, {} baud)",
        config.device.display(),
        config.baud_rate
    );
    Ok((tty, queue))
}

/// Registers an open device with the runtime (non-blocking mode and the reactor: no I/O on the
/// device itself), so the link can read and write it asynchronously.
fn into_stream(tty: TTYPort, device: &std::path::Path) -> io::Result<SerialStream> {
    SerialStream::try_from(tty).map_err(|e| io::Error::other(format!("{}: {e}", device.display())))
}

/// Gives the device up: `TIOCEXCL` released first, or our own reopen could get EBUSY while
/// something else keeps the tty open, then closed, which can wait for the adapter to drain
/// its output. Blocking, like [`open_blocking`].
fn close_blocking(mut port: SerialStream, queue: TTYPort) {
    let _ = port.set_exclusive(false);
    drop(port);
    drop(queue);
}

/// What a device thread hands back to the link.
enum DeviceDone {
    Opened(io::Result<(TTYPort, TTYPort)>),
    Closed,
}

/// Runs `work` on a thread of its own and gives its result: the runtime has one thread, which
/// the link, the control socket and the watchdog share, and a device can take seconds to open
/// or close. Not `spawn_blocking`: a thread stuck in `open` would hold up the runtime's end,
/// and so the daemon's exit, for as long as it is stuck; a thread of its own simply ends with
/// the process. The work starts at once, whether or not anyone waits for it. Not generic, so
/// there is one of it in the binary.
fn on_device_thread(
    work: Box<dyn FnOnce() -> DeviceDone + Send>,
) -> tokio::sync::oneshot::Receiver<DeviceDone> {
    let (done, result) = tokio::sync::oneshot::channel();
    // When no thread can be started, the work and the sender with it are dropped: the
    // receiver hears it at once.
    let _ = crate::thread::spawn(
        "serial-device",
        None,
        Box::new(move || {
            let _ = done.send(work());
        }),
    );
    result
}

/// Waits, answering the link's requests as closed, for what a device thread hands back; `None`
/// when the link is shut down meanwhile (the thread finishes on its own).
async fn device_done<In: LinkMessage, Out: LinkMessage>(
    core: &mut LinkCore<In, Out>,
    work: Box<dyn FnOnce() -> DeviceDone + Send>,
) -> Option<Option<DeviceDone>> {
    let pending = on_device_thread(work);
    let mut done = None;
    let finished = core
        .closed_while(std::pin::pin!(async {
            done = pending.await.ok();
        }))
        .await;
    finished.then_some(done)
}

/// The agent's serial link on the configured device: opens it, keeps reopening it while it is
/// gone, and runs the link on it. The state is `Closed` while the device is not open.
pub fn spawn_link(
    config: SerialConfig,
) -> (
    SerialHandle<AgentRequest>,
    mpsc::Receiver<LinkEvent<TerminalRequest>>,
) {
    let settings = LinkSettings::from_config(&config);
    spawn_port_link(config, settings)
}

/// [`spawn_link`] for either role and explicit link settings.
pub fn spawn_port_link<In: LinkMessage, Out: LinkMessage>(
    config: SerialConfig,
    settings: LinkSettings,
) -> (SerialHandle<Out>, mpsc::Receiver<LinkEvent<In>>) {
    let (link, events, core) = LinkCore::<In, Out>::new(settings);
    let port = PortStatsHandle::default();
    tokio::spawn(supervise(core, config, port.clone()));
    (SerialHandle { link, port }, events)
}

async fn supervise<In: LinkMessage, Out: LinkMessage>(
    mut core: LinkCore<In, Out>,
    config: SerialConfig,
    stats: PortStatsHandle,
) {
    let mut waits = RetryPolicy::SERIAL_REOPEN.backoff();
    let mut last_error: Option<String> = None;
    let mut opened_before = false;
    loop {
        // While the device opens (or closes, below), the link answers as closed and a
        // shutdown ends the wait; the thread is left to finish on its own.
        let open = {
            let config = config.clone();
            Box::new(move || DeviceDone::Opened(open_blocking(&config)))
        };
        let opened = match device_done(&mut core, open).await {
            None => break,
            Some(Some(DeviceDone::Opened(opened))) => opened,
            Some(_) => Err(io::Error::other(format!(
                "{}: no thread to open it on",
                config.device.display()
            ))),
        };
        match opened.and_then(|(tty, queue)| Ok((into_stream(tty, &config.device)?, queue))) {
            Ok((mut port, queue)) => {
                last_error = None;
                if opened_before {
                    stats.reopened();
                }
                opened_before = true;
                let output_queue = || {
                    queue
                        .bytes_to_write()
                        .ok()
                        .and_then(|queued| usize::try_from(queued).ok())
                };
                let end = core.run_session(&mut port, &output_queue).await;
                let close = Box::new(move || {
                    close_blocking(port, queue);
                    DeviceDone::Closed
                });
                match end {
                    SessionEnd::Shutdown => {
                        // Closed on its thread while the daemon goes on with its shutdown.
                        drop(on_device_thread(close));
                        break;
                    }
                    SessionEnd::Lost(e) => {
                        stats.failed(format!("{} lost: {e}", config.device.display()));
                        tracing::warn!(device = %config.device.display(), error = %e, "serial device {} lost ({e}); reopening", config.device.display());
                    }
                }
                if device_done(&mut core, close).await.is_none() {
                    break;
                }
                if core.came_up {
                    waits.reset();
                }
            }
            Err(e) => {
                let text = e.to_string();
                stats.failed(format!("cannot open {text}"));
                if last_error.as_deref() != Some(text.as_str()) {
                    tracing::warn!(device = %config.device.display(), error = %text, "cannot open the serial device {} ({text}); retrying", config.device.display());
                    last_error = Some(text);
                }
            }
        }
        let backoff = waits.next().unwrap_or(REOPEN_BACKOFF_MAX);
        if !core.wait_closed_until(Instant::now().later(backoff)).await {
            break;
        }
    }
    core.close();
}
