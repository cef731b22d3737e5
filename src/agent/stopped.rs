//! How `run` ends: the stops it was asked for and the failures that end it, as kinds; the
//! command line maps them to the exit codes (src/cli/run.rs). Each is reported (stderr or the
//! log) where it happened.

/// A stop that ran its course.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stopped {
    /// On a signal: the pending payments cancelled (as `[shutdown]` says), state compacted.
    Clean,
    /// After `pos-agent restart --keep-pending`: the pending payments kept, to be started again.
    RestartKeepingPending,
    /// After `pos-agent restart --keep-pending --no-start`: the pending payments kept, to stay
    /// stopped.
    HaltKeepingPending,
}

/// Why `run` ended otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunError {
    /// The configuration does not load, logging cannot be set up with it, or it does not pass
    /// the pre-flight.
    Configuration,
    /// The state file cannot be read (or is of a newer format): an operator must look at it.
    StateUnreadable,
    /// The control socket or the signal handlers could not be set up.
    Setup,
    /// A second signal cut the shutdown short; what is pending is finished at the next start.
    Interrupted,
}
