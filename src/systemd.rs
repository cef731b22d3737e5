//! The agent's side of its systemd unit (docs/operations.md (The daemon: `pos-agent run`)): readiness, status, watchdog
//! and stop notifications, and the control socket handed over by socket activation.
//!
//! A thin layer over the `sd-notify` crate. Every notification is a no-op returning `Ok(())` when
//! `$NOTIFY_SOCKET` is unset, so the same code runs under systemd, in a terminal and in tests.
//!
//! The environment is read, never changed: `NOTIFY_SOCKET` is needed for every notification
//! during the whole life of the process, the agent starts no child processes that could inherit
//! it, and `std::env::remove_var` is unsound once the tokio runtime has threads. The passed
//! listening socket is guarded instead by a process-wide flag, so it is taken at most once; a
//! stray `LISTEN_FDS` inherited by some other process is ignored because `LISTEN_PID` names us.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::socket::{getsockname, getsockopt, sockopt, SockType, UnixAddr};
use sd_notify::NotifyState;

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: i32 = 3;

/// Set once the passed listening socket has been taken by [`listen_socket`].
static LISTEN_SOCKET_TAKEN: AtomicBool = AtomicBool::new(false);

/// `READY=1`: configuration, state and the control socket are up (docs/operations.md (The daemon: `pos-agent run`)). Not delayed by
/// an unreachable payment API.
pub fn notify_ready() -> io::Result<()> {
    sd_notify::notify(&[NotifyState::Ready])
}

/// `STATUS=...`: the one-line summary `systemctl status` shows (connection, link, pending
/// count). Line breaks would end the assignment early, so they are sent as spaces.
pub fn notify_status(status: &str) -> io::Result<()> {
    let one_line = single_line(status);
    sd_notify::notify(&[NotifyState::Status(&one_line)])
}

/// `WATCHDOG=1`: the main loop is alive. Send it every [`watchdog_interval`].
pub fn notify_watchdog() -> io::Result<()> {
    sd_notify::notify(&[NotifyState::Watchdog])
}

/// `STOPPING=1`: shutdown has begun (docs/architecture.md (Data flow of a shutdown)).
pub fn notify_stopping() -> io::Result<()> {
    sd_notify::notify(&[NotifyState::Stopping])
}

/// `RELOADING=1` with `MONOTONIC_USEC=`: a reload (`SIGHUP`) has begun; `READY=1` ends it.
/// systemd 252 keeps the unit `reloading` until then; later versions also need the timestamp.
pub fn notify_reloading() -> io::Result<()> {
    sd_notify::notify(&[NotifyState::Reloading, NotifyState::monotonic_usec_now()?])
}

/// `EXTEND_TIMEOUT_USEC=...`: asks systemd for `by` more time, counted from now, before it
/// gives up on the current start or stop. Send it again before that time runs out to extend
/// further. Durations beyond the protocol's range (about 71 minutes) are sent as that maximum.
pub fn extend_timeout(by: Duration) -> io::Result<()> {
    sd_notify::notify(&[NotifyState::ExtendTimeoutUsec(timeout_usec(by))])
}

/// The daemon's notifications, sent in order from a thread of their own.
///
/// A notification is a datagram write that blocks while the manager's socket queue is full. On
/// the daemon's single runtime thread such a block would also stop the serial link (no ACKs, no
/// pings), so the main loop only queues notifications here. The watchdog keeps its meaning: each
/// `WATCHDOG=1` is still queued by the main loop, so a stuck loop stops petting it.
pub struct Notifier {
    queue: Option<std::sync::mpsc::Sender<Notice>>,
    done: Option<std::sync::mpsc::Receiver<()>>,
}

enum Notice {
    Ready,
    Status(String),
    Watchdog,
    Stopping,
    Reloading,
    ExtendTimeout(Duration),
}

impl Notifier {
    /// Starts the sending thread; without `$NOTIFY_SOCKET` nothing is started and every
    /// notification is dropped at once.
    pub fn start() -> Notifier {
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            return Notifier {
                queue: None,
                done: None,
            };
        }
        let (queue, notices) = std::sync::mpsc::channel::<Notice>();
        let (finished, done) = std::sync::mpsc::channel();
        let spawned = crate::thread::spawn(
            "sd-notify",
            Some(64 * 1024),
            Box::new(move || {
                for notice in notices {
                    let sent = match &notice {
                        Notice::Ready => notify_ready(),
                        Notice::Status(status) => notify_status(status),
                        Notice::Watchdog => notify_watchdog(),
                        Notice::Stopping => notify_stopping(),
                        Notice::Reloading => notify_reloading(),
                        Notice::ExtendTimeout(by) => extend_timeout(*by),
                    };
                    if let Err(e) = sent {
                        tracing::warn!("cannot notify systemd: {e}");
                    }
                }
                let _ = finished.send(());
            }),
        );
        match spawned {
            Ok(_) => Notifier {
                queue: Some(queue),
                done: Some(done),
            },
            Err(e) => {
                tracing::warn!("cannot start the systemd notification thread: {e}");
                Notifier {
                    queue: None,
                    done: None,
                }
            }
        }
    }

    fn send(&self, notice: Notice) {
        if let Some(queue) = &self.queue {
            let _ = queue.send(notice);
        }
    }

    /// Queues `READY=1`.
    pub fn ready(&self) {
        self.send(Notice::Ready)
    }

    /// Queues `STATUS=...`.
    pub fn status(&self, status: &str) {
        self.send(Notice::Status(status.to_owned()))
    }

    /// Queues `WATCHDOG=1`.
    pub fn watchdog(&self) {
        self.send(Notice::Watchdog)
    }

    /// Queues `STOPPING=1`.
    pub fn stopping(&self) {
        self.send(Notice::Stopping)
    }

    /// Queues `RELOADING=1`; [`Notifier::ready`] ends the reload.
    pub fn reloading(&self) {
        self.send(Notice::Reloading)
    }

    /// Queues `EXTEND_TIMEOUT_USEC=...`.
    pub fn extend_timeout(&self, by: Duration) {
        self.send(Notice::ExtendTimeout(by))
    }

    /// Lets the queued notifications go out before the process exits, waiting at most `limit`
    /// for a manager that does not read.
    pub fn finish(mut self, limit: Duration) {
        self.queue.take();
        if let Some(done) = self.done.take() {
            let _ = done.recv_timeout(limit);
        }
    }
}

/// How often to send [`notify_watchdog`]: half of `WatchdogSec=` when systemd enabled the
/// watchdog for this process, as `sd_watchdog_enabled(3)` decides it (`WATCHDOG_USEC` set and
/// positive, `WATCHDOG_PID` unset or our pid); `None` otherwise.
pub fn watchdog_interval() -> Option<Duration> {
    watchdog_interval_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

/// The control socket passed by systemd socket activation (`pos-agent.socket`), as a listener.
///
/// `Ok(None)` when the process was not socket-activated (no `LISTEN_FDS`, or `LISTEN_PID` names
/// another process) and on every call after the first that returned the socket: the agent then
/// binds its own socket. An error when systemd passed something the agent cannot use: more than
/// one descriptor, or a descriptor that is not a listening Unix stream socket. That is a
/// misconfigured socket unit, and the error says which.
///
/// The listener comes as systemd made it, usually in blocking mode: for tokio, call
/// `set_nonblocking(true)` before `tokio::net::UnixListener::from_std`. It is close-on-exec.
pub fn listen_socket() -> io::Result<Option<UnixListener>> {
    let passed = passed_descriptor_count(
        std::env::var("LISTEN_PID").ok().as_deref(),
        std::env::var("LISTEN_FDS").ok().as_deref(),
        std::process::id(),
    )?;
    match passed {
        0 => return Ok(None),
        1 => {}
        n => {
            return Err(invalid(format!(
                "systemd passed {n} sockets (LISTEN_FDS={n}); the control socket unit must \
                 have exactly one ListenStream="
            )))
        }
    }
    if LISTEN_SOCKET_TAKEN.swap(true, Ordering::SeqCst) {
        return Ok(None);
    }
    // SAFETY: systemd passed descriptor 3 to this process (LISTEN_PID is ours, LISTEN_FDS is 1)
    // and the flag above makes this the only place that ever takes ownership of it.
    #[allow(unsafe_code)]
    let fd = unsafe { OwnedFd::from_raw_fd(LISTEN_FDS_START) };
    check_unix_stream_listener(&fd)?;
    nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(io::Error::from)?;
    Ok(Some(UnixListener::from(fd)))
}

/// `sd_watchdog_enabled` semantics on explicit inputs, halved.
fn watchdog_interval_from(
    watchdog_usec: Option<&str>,
    watchdog_pid: Option<&str>,
    own_pid: u32,
) -> Option<Duration> {
    let usec: u64 = watchdog_usec?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(pid) = watchdog_pid {
        if pid.trim().parse::<u32>().ok()? != own_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec) / 2)
}

/// How many descriptors systemd passed to this process, per `sd_listen_fds(3)`.
fn passed_descriptor_count(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    own_pid: u32,
) -> io::Result<usize> {
    let Some(listen_pid) = listen_pid else {
        return Ok(0);
    };
    let listen_pid: u32 = listen_pid
        .trim()
        .parse()
        .map_err(|_| invalid(format!("LISTEN_PID={listen_pid:?} is not a process id")))?;
    if listen_pid != own_pid {
        return Ok(0);
    }
    let Some(listen_fds) = listen_fds else {
        return Ok(0);
    };
    listen_fds
        .trim()
        .parse()
        .map_err(|_| invalid(format!("LISTEN_FDS={listen_fds:?} is not a count")))
}

fn check_unix_stream_listener(fd: &OwnedFd) -> io::Result<()> {
    let not_usable = |what: &str| {
        invalid(format!(
            "the socket systemd passed (fd {LISTEN_FDS_START}) is {what}; the control socket \
             unit must use ListenStream= with a path"
        ))
    };
    getsockname::<UnixAddr>(fd.as_raw_fd()).map_err(|_| not_usable("not a Unix socket"))?;
    if getsockopt(fd, sockopt::SockType).map_err(io::Error::from)? != SockType::Stream {
        return Err(not_usable("not a stream socket"));
    }
    if !getsockopt(fd, sockopt::AcceptConn).map_err(io::Error::from)? {
        return Err(not_usable("not listening"));
    }
    Ok(())
}

fn single_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

fn timeout_usec(duration: Duration) -> u32 {
    u32::try_from(duration.as_micros()).unwrap_or(u32::MAX)
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_interval_is_half_of_watchdog_usec_for_this_process() {
        assert_eq!(
            watchdog_interval_from(Some("20000000"), Some("42"), 42),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            watchdog_interval_from(Some("3000"), None, 42),
            Some(Duration::from_micros(1500))
        );
    }

    #[test]
    fn watchdog_meant_for_another_process_or_malformed_is_off() {
        assert_eq!(
            watchdog_interval_from(Some("20000000"), Some("41"), 42),
            None
        );
        assert_eq!(
            watchdog_interval_from(Some("20000000"), Some("x"), 42),
            None
        );
        assert_eq!(watchdog_interval_from(Some("0"), None, 42), None);
        assert_eq!(watchdog_interval_from(Some("-5"), None, 42), None);
        assert_eq!(watchdog_interval_from(Some("20s"), None, 42), None);
        assert_eq!(watchdog_interval_from(None, Some("42"), 42), None);
    }

    #[test]
    fn passed_descriptors_count_only_when_listen_pid_is_ours() {
        assert_eq!(
            passed_descriptor_count(Some("42"), Some("1"), 42).unwrap(),
            1
        );
        assert_eq!(
            passed_descriptor_count(Some("42"), Some("2"), 42).unwrap(),
            2
        );
        assert_eq!(
            passed_descriptor_count(Some("41"), Some("1"), 42).unwrap(),
            0
        );
        assert_eq!(passed_descriptor_count(None, Some("1"), 42).unwrap(), 0);
        assert_eq!(passed_descriptor_count(Some("42"), None, 42).unwrap(), 0);
    }

    #[test]
    fn malformed_activation_variables_are_errors_that_name_the_variable() {
        let error = passed_descriptor_count(Some("me"), Some("1"), 42).unwrap_err();
        assert!(error.to_string().contains("LISTEN_PID"), "{error}");
        let error = passed_descriptor_count(Some("42"), Some("one"), 42).unwrap_err();
        assert!(error.to_string().contains("LISTEN_FDS"), "{error}");
    }

    #[test]
    fn status_is_sent_as_one_line() {
        assert_eq!(single_line("connected\nlink up\r\n"), "connected link up  ");
    }

    #[test]
    fn extend_timeout_saturates_at_the_protocol_maximum() {
        assert_eq!(timeout_usec(Duration::from_secs(45)), 45_000_000);
        assert_eq!(timeout_usec(Duration::from_secs(10 * 3600)), u32::MAX);
    }
}
