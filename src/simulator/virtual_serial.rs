//! A virtual serial pair for tests, the demo and manual runs: a pseudo-terminal whose slave
//! path (`/dev/pts/N`) is opened like any serial device by the agent, while this side holds the
//! master as a tokio `AsyncRead + AsyncWrite`. Both sides are put in raw mode so no byte (DLE,
//! ETX, XON/XOFF, CR/LF) is translated, echoed or swallowed.
//!
//! The pair keeps a descriptor of the slave open for its lifetime: the slave's raw settings
//! then survive the agent closing and reopening it, and the master never reads EIO merely
//! because nobody has the slave open. Dropping the pair hangs the line up, as unplugging a USB
//! adapter does.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use nix::fcntl::{fcntl, open, FcntlArg, FdFlag, OFlag};
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt, PtyMaster};
use nix::sys::stat::Mode;
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The master side of a pseudo-terminal pair, plus the path of its slave.
#[derive(Debug)]
pub struct VirtualSerial {
    master: AsyncFd<PtyMaster>,
    slave_path: PathBuf,
    _slave: OwnedFd,
}

fn make_raw<Fd: AsFd>(fd: Fd) -> nix::Result<()> {
    let mut termios = tcgetattr(&fd)?;
    cfmakeraw(&mut termios);
    tcsetattr(&fd, SetArg::TCSANOW, &termios)
}

impl VirtualSerial {
    /// Creates a new pair. Must be called within a tokio runtime.
    pub fn open() -> io::Result<Self> {
        // Close-on-exec from the start: a process spawned meanwhile (the daemon under test,
        // started by another thread) must not inherit the terminal's end of the line.
        let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
        // posix_openpt need not honour O_CLOEXEC; F_SETFD makes sure (F_SETFL ignores it).
        fcntl(&master, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
        grantpt(&master)?;
        unlockpt(&master)?;
        let slave_path = PathBuf::from(ptsname_r(&master)?);
        let slave = open(
            &slave_path,
            OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        make_raw(&slave)?;
        make_raw(&master)?;
        let flags = OFlag::from_bits_truncate(fcntl(&master, FcntlArg::F_GETFL)?);
        fcntl(&master, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        // SAFETY: `PtyMaster` owns its descriptor, always returns that same one from
        // `as_raw_fd`, and closes it only when dropped, which the `AsyncFd` does last.
        #[allow(unsafe_code)]
        let master = unsafe { AsyncFd::register(master) }?;
        Ok(Self {
            master,
            slave_path,
            _slave: slave,
        })
    }

    /// The slave's path: give it to the agent (or to `simulate-terminal`) as the device.
    pub fn slave_path(&self) -> &Path {
        &self.slave_path
    }
}

impl AsyncRead for VirtualSerial {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.master.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|master| master.get_ref().read(unfilled)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for VirtualSerial {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.master.poll_write_ready(cx))?;
            match guard.try_io(|master| master.get_ref().write(buf)) {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
