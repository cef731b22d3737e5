//! The agent's threads besides the runtime's (the state writer, the systemd notifier, the
//! metrics textfile writer, the serial device's opens and closes) all start through
//! [`spawn`]: not generic, so the terminal's binary carries one copy of a thread's start-up
//! rather than one per kind of thread (docs/supply-chain.md, the size budget).

use std::io;
use std::thread::{Builder, JoinHandle};

/// Starts `work` on a thread named `name` (with `stack_size` bytes of stack, or the default).
pub(crate) fn spawn(
    name: &str,
    stack_size: Option<usize>,
    work: Box<dyn FnOnce() + Send>,
) -> io::Result<JoinHandle<()>> {
    let builder = Builder::new().name(name.to_owned());
    match stack_size {
        Some(size) => builder.stack_size(size),
        None => builder,
    }
    .spawn(work)
}
