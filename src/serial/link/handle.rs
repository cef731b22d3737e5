//! The application's side of a link: a [`LinkHandle`] to send requests, await their replies,
//! watch the [`LinkState`] and shut the link down; the [`LinkEvent`]s the link reports; a
//! peer's [`IncomingRequest`] waiting for its answer; and the commands these send to the task
//! that runs the link (`session`).

use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::serial::frame::MAX_APDU;
use crate::serial::message::{AgentRequest, LinkMessage, Reply, TerminalRequest};

/// The state of the link, as the agent reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// The device is not open (missing, unplugged, being reopened) or the link was shut down.
    Closed,
    /// The device is open but the peer has not answered (yet, or any more).
    Down,
    /// The peer answers.
    Up,
}

impl LinkState {
    /// The state as the log and `status` name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Down => "down",
            Self::Up => "up",
        }
    }
}

/// Why a request got no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("the peer did not acknowledge the frame after the configured number of sends")]
    NotAcknowledged,
    #[error("the link went down before the frame was sent")]
    LinkDown,
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("the serial device is not open or the link was shut down")]
    Closed,
    #[error("the message does not fit in one frame ({0} bytes, limit {MAX_APDU})")]
    TooLong(usize),
    #[error("the peer's reply is not one this side understands: {0}")]
    UnreadableReply(String),
}

/// What the link reports to the application.
#[derive(Debug)]
pub enum LinkEvent<In = TerminalRequest> {
    /// The peer answers (again).
    Up,
    /// The peer stopped answering or the device went away.
    Down,
    /// A request from the peer, delivered once per id and link session; answer it with
    /// [`IncomingRequest::reply`].
    Request(IncomingRequest<In>),
}

pub(super) struct ReplyCommand {
    pub(super) id: u32,
    pub(super) session: u64,
    /// `None`: the application dropped the request without answering.
    pub(super) reply: Option<Reply>,
}

/// A request from the peer waiting for the application's answer.
///
/// Dropping it without [`reply`](Self::reply) sends nothing and forgets the id, so the peer's
/// next retransmission of the same request is delivered again. (An `error` would be wrong for a
/// sale whose payment exists, so the link never invents one.)
#[derive(Debug)]
pub struct IncomingRequest<In = TerminalRequest> {
    pub(super) id: u32,
    pub(super) session: u64,
    pub(super) request: In,
    pub(super) replies: mpsc::Sender<ReplyCommand>,
    pub(super) answered: bool,
}

impl std::fmt::Debug for ReplyCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplyCommand")
            .field("id", &self.id)
            .finish()
    }
}

impl<In> IncomingRequest<In> {
    /// The request's `id`.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The typed request.
    pub fn request(&self) -> &In {
        &self.request
    }

    /// Sends `reply` (with `re` = this request's id) and remembers it for duplicates.
    pub fn reply(mut self, reply: Reply) {
        self.answered = true;
        // Never full: it has room for every request in progress, and each sends one command.
        let _ = self.replies.try_send(ReplyCommand {
            id: self.id,
            session: self.session,
            reply: Some(reply),
        });
    }
}

impl<In> Drop for IncomingRequest<In> {
    fn drop(&mut self) {
        if !self.answered {
            let _ = self.replies.try_send(ReplyCommand {
                id: self.id,
                session: self.session,
                reply: None,
            });
        }
    }
}

pub(super) enum Command<Out> {
    Request {
        body: Out,
        reply: oneshot::Sender<Result<Reply, LinkError>>,
    },
    Shutdown,
}

/// The application's side of a link: send requests, watch the state, shut it down. Cheap to
/// clone. The link runs until [`shutdown`](Self::shutdown) or until every handle is dropped.
pub struct LinkHandle<Out = AgentRequest> {
    pub(super) commands: mpsc::Sender<Command<Out>>,
    pub(super) state: watch::Receiver<LinkState>,
    pub(super) reply_timeout: Duration,
}

impl<Out> Clone for LinkHandle<Out> {
    fn clone(&self) -> Self {
        Self {
            commands: self.commands.clone(),
            state: self.state.clone(),
            reply_timeout: self.reply_timeout,
        }
    }
}

impl<Out> std::fmt::Debug for LinkHandle<Out> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkHandle")
            .field("state", &*self.state.borrow())
            .finish()
    }
}

impl<Out: LinkMessage> LinkHandle<Out> {
    /// Sends a request or notification and waits for its reply (the settings' reply timeout).
    pub async fn request(&self, body: Out) -> Result<Reply, LinkError> {
        self.request_with_timeout(body, self.reply_timeout).await
    }

    /// Sends a request or notification and waits up to `timeout` for its reply (the wait for
    /// room in a full [`COMMAND_QUEUE`](super::settings::COMMAND_QUEUE) included).
    pub async fn request_with_timeout(
        &self,
        body: Out,
        timeout: Duration,
    ) -> Result<Reply, LinkError> {
        let exchange = async {
            let (reply, answer) = oneshot::channel();
            self.commands
                .send(Command::Request { body, reply })
                .await
                .map_err(|_| LinkError::Closed)?;
            answer.await.map_err(|_| LinkError::Closed)?
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(LinkError::Timeout(timeout)))
    }

    /// The current state.
    pub fn state(&self) -> LinkState {
        *self.state.borrow()
    }

    /// A receiver that sees every state change.
    pub fn watch_state(&self) -> watch::Receiver<LinkState> {
        self.state.clone()
    }

    /// Waits until the link is in `state`.
    pub async fn wait_for_state(&self, state: LinkState) {
        let mut watch = self.state.clone();
        let _ = watch.wait_for(|s| *s == state).await;
    }

    /// Stops the link and closes the transport. Frames already queued (a reply just given) are
    /// still sent, for at most their time on the wire and T3, `max_sends` times over (after
    /// what the line still carries); requests still waiting fail with `Closed`.
    pub fn shutdown(&self) {
        if let Err(mpsc::error::TrySendError::Full(command)) =
            self.commands.try_send(Command::Shutdown)
        {
            let commands = self.commands.clone();
            tokio::spawn(async move { commands.send(command).await });
        }
    }
}
