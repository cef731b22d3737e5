//! A link session, and the task that runs them: [`Link::over`] spawns it on a transport, and
//! [`LinkCore`] holds all link state and runs the stop-and-wait loop of docs/serial-protocol.md
//! §2–§4 over one transport at a time (sending with T3 and `max_sends`, ACK/NAK for every
//! received frame, T1, `ping` liveness, up/down); `serial::port` runs it over one opening of the
//! device after another. The bare § below cite docs/serial-protocol.md.
//!
//! Time on the wire (`serial::line`): a frame handed to the device is still on its way for as
//! long as the line takes to carry it (seconds at 9600 baud), so T3, the output stall limit, the
//! idle ping and the shutdown's grace count from the moment its last byte has left the line, as
//! the line settings and, where it can tell, the device's output queue say.
//! A *link session* runs from up to down, to the end of the transport or to a restart of the
//! peer (an older request id coming back, see `ReplayCache`); the replay cache lives for one
//! session.

use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep_until, Instant};
use tokio_util::codec::Decoder;

use super::handle::{
    Command, IncomingRequest, LinkError, LinkEvent, LinkHandle, LinkState, ReplyCommand,
};
use super::replay::{fingerprint, ReplayCache, Seen};
use super::settings::{
    LinkSettings, COMMAND_QUEUE, EVENT_QUEUE, LOG_TARGET, MAX_QUEUED_FRAMES,
    MAX_REQUESTS_IN_PROGRESS,
};
use crate::later::Later;
use crate::metrics::METRICS;
use crate::serial::codec::{FrameCodec, Inbound};
use crate::serial::frame::{frame_bytes, ACK, MAX_APDU, MAX_FRAME, NAK};
use crate::serial::line::LineClock;
use crate::serial::message::{
    encode_reply_within, encode_request, parse_incoming, AgentRequest, ErrorCode, Incoming,
    LinkMessage, Reply, TerminalRequest,
};

/// Spawns links over arbitrary transports. `In` is what the peer sends us, `Out` what we send.
pub struct Link<In = TerminalRequest, Out = AgentRequest>(PhantomData<(In, Out)>);

/// The agent's end: receives terminal requests, sends agent notifications.
pub type AgentLink = Link<TerminalRequest, AgentRequest>;
/// The terminal's end: receives agent notifications, sends terminal requests.
pub type TerminalLink = Link<AgentRequest, TerminalRequest>;

impl<In: LinkMessage, Out: LinkMessage> Link<In, Out> {
    /// Runs a link over `transport` on a new task until the transport ends (state `Closed`)
    /// or the link is shut down. There is no reopening here; see `serial::port` for that.
    pub fn over<T>(
        transport: T,
        settings: LinkSettings,
    ) -> (LinkHandle<Out>, mpsc::Receiver<LinkEvent<In>>)
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (handle, events, mut core) = LinkCore::<In, Out>::new(settings);
        tokio::spawn(async move {
            let mut transport = Box::pin(transport);
            let end = core.run_session(&mut transport, &|| None).await;
            tracing::debug!(target: LOG_TARGET, ?end, "serial link over transport ended");
            core.close();
        });
        (handle, events)
    }
}

/// Why a session ended.
#[derive(Debug)]
pub(crate) enum SessionEnd {
    /// Shutdown was asked for, or every handle was dropped.
    Shutdown,
    /// The transport reported end of file or an error: close and reopen.
    Lost(std::io::Error),
}

/// A frame waiting to be sent, or being sent.
struct Outgoing {
    frame: Bytes,
    /// The id of our own request (to fail it if the frame fails); `None` for replies.
    request_id: Option<u32>,
    /// A `ping` of the link's own: the idle interval counts from when it left the line.
    ping: bool,
}

struct InFlight {
    message: Outgoing,
    sends: u32,
    /// Value of `Io::appended` right after the last copy of this frame.
    frame_end: u64,
    stage: Stage,
}

/// Where the frame being sent is.
#[derive(Debug, Clone, Copy)]
enum Stage {
    /// Some of its bytes still wait to be handed to the device.
    Writing,
    /// Handed to the device; its last byte leaves the line at about this time.
    OnTheWire(Instant),
    /// T3 runs. The peer appends its ACK only after a frame it is sending itself, so while one
    /// of its frames arrives the deadline moves with it: T3 after its last byte, but never past
    /// `latest` (T3 after the time the largest frame takes on the wire).
    AwaitingAck { deadline: Instant, latest: Instant },
}

impl Stage {
    fn timer(self) -> Option<Instant> {
        match self {
            Self::Writing => None,
            Self::OnTheWire(at) => Some(at),
            Self::AwaitingAck { deadline, .. } => Some(deadline),
        }
    }
}

/// How long to wait before asking the device again when it still holds output though the line
/// settings say it should be out (at least this, so a line of no known speed never spins).
const OUTPUT_QUEUE_RECHECK: Duration = Duration::from_millis(10);

/// All link state; survives reopenings of the port (ids keep counting, channels stay).
pub(crate) struct LinkCore<In, Out> {
    settings: LinkSettings,
    commands: mpsc::Receiver<Command<Out>>,
    replies: mpsc::Receiver<ReplyCommand>,
    reply_sender: mpsc::Sender<ReplyCommand>,
    events: mpsc::Sender<LinkEvent<In>>,
    /// Requests handed to the application whose reply command has not come back.
    in_progress: usize,
    state: watch::Sender<LinkState>,
    next_id: u32,
    session: u64,
    cache: ReplayCache,
    waiting: HashMap<u32, oneshot::Sender<Result<Reply, LinkError>>>,
    /// Whether the link was up at some point of the current transport.
    pub(crate) came_up: bool,
}

/// Per-transport state: what is being read and written.
struct Io {
    codec: FrameCodec,
    out: BytesMut,
    /// Bytes ever appended to `out` / written from it, to know when a frame is on its way.
    appended: u64,
    written: u64,
    queue: VecDeque<Outgoing>,
    in_flight: Option<InFlight>,
    last_byte: Instant,
    last_activity: Instant,
    /// When the device last accepted bytes (or output began waiting).
    last_write_progress: Instant,
    /// When what was handed to the device will have left the line.
    line: LineClock,
    unanswered_pings: u32,
    last_ping_id: Option<u32>,
}

impl Io {
    fn append(&mut self, bytes: &[u8]) {
        if self.out.is_empty() {
            self.last_write_progress = Instant::now();
        }
        self.out.extend_from_slice(bytes);
        self.appended = self.appended.saturating_add(bytes.len() as u64);
    }
}

impl<In: LinkMessage, Out: LinkMessage> LinkCore<In, Out> {
    pub(crate) fn new(
        settings: LinkSettings,
    ) -> (LinkHandle<Out>, mpsc::Receiver<LinkEvent<In>>, Self) {
        let (command_tx, commands) = mpsc::channel(COMMAND_QUEUE);
        let (reply_sender, replies) = mpsc::channel(MAX_REQUESTS_IN_PROGRESS);
        let (events, event_rx) = mpsc::channel(EVENT_QUEUE);
        let (state, state_rx) = watch::channel(LinkState::Closed);
        let handle = LinkHandle {
            commands: command_tx,
            state: state_rx,
            reply_timeout: settings.reply_timeout,
        };
        let core = Self {
            settings,
            commands,
            replies,
            reply_sender,
            events,
            in_progress: 0,
            state,
            next_id: 1,
            session: 0,
            cache: ReplayCache::default(),
            waiting: HashMap::new(),
            came_up: false,
        };
        (handle, event_rx, core)
    }

    fn set_state(&mut self, new: LinkState) {
        let old = self.state.send_replace(new);
        if old == new {
            return;
        }
        let link_state = new.as_str();
        tracing::info!(target: LOG_TARGET,
            link_state,
            "serial link {link_state} (was {})",
            old.as_str()
        );
        if new == LinkState::Up {
            self.came_up = true;
            let _ = self.events.try_send(LinkEvent::Up);
        } else if old == LinkState::Up {
            let _ = self.events.try_send(LinkEvent::Down);
        }
        if old == LinkState::Up {
            // The link session ends: the replay cache belongs to it.
            self.session = self.session.wrapping_add(1);
            self.cache.clear();
        }
    }

    fn allocate_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    /// Marks the link closed for good (transport gone, no reopening).
    pub(crate) fn close(&mut self) {
        self.set_state(LinkState::Closed);
        for (_, waiter) in self.waiting.drain() {
            let _ = waiter.send(Err(LinkError::Closed));
        }
    }

    /// Between transports: refuses requests until `deadline`. Returns false on shutdown.
    pub(crate) async fn wait_closed_until(&mut self, deadline: Instant) -> bool {
        self.closed_while(std::pin::pin!(sleep_until(deadline)))
            .await
    }

    /// Between transports: refuses requests until `work` is done. Returns false on shutdown
    /// (`work` is dropped then). Not generic, so there is one of it in the binary.
    pub(crate) async fn closed_while(
        &mut self,
        mut work: std::pin::Pin<&mut (dyn std::future::Future<Output = ()> + Send)>,
    ) -> bool {
        loop {
            tokio::select! {
                () = &mut work => return true,
                command = self.commands.recv() => match command {
                    None | Some(Command::Shutdown) => return false,
                    Some(Command::Request { reply, .. }) => {
                        let _ = reply.send(Err(LinkError::Closed));
                    }
                },
            }
        }
    }

    /// Runs the link over one transport until it ends or the link is shut down.
    /// `output_queue` tells how many bytes the device still holds for the line, where it can
    /// tell (the kernel's output queue of a real UART); it must not block.
    pub(crate) async fn run_session<T>(
        &mut self,
        transport: &mut T,
        output_queue: &(dyn Fn() -> Option<usize> + Sync),
    ) -> SessionEnd
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        let (mut reader, mut writer) = tokio::io::split(transport);
        let now = Instant::now();
        let mut io = Io {
            codec: FrameCodec::new(),
            out: BytesMut::new(),
            appended: 0,
            written: 0,
            queue: VecDeque::new(),
            in_flight: None,
            last_byte: now,
            last_activity: now,
            last_write_progress: now,
            line: LineClock::new(self.settings.line, now),
            unanswered_pings: 0,
            last_ping_id: None,
        };
        self.came_up = false;
        self.set_state(LinkState::Down);
        // Probe at once, so the link comes up without waiting for the first idle ping.
        self.send_ping(&mut io);
        let mut input = BytesMut::with_capacity(4096);
        // Set by shutdown: frames already queued (a reply just given) still go out, for at most
        // as long as they may take to fail (`drain_deadline`).
        let mut closing: Option<Instant> = None;

        let end = loop {
            if closing.is_some() {
                // Replies given before the shutdown may still sit in their channel.
                while let Ok(reply) = self.replies.try_recv() {
                    self.on_reply_command(&mut io, reply);
                }
            }
            self.start_next_frame(&mut io);
            if closing.is_some()
                && io.in_flight.is_none()
                && io.queue.is_empty()
                && io.out.is_empty()
            {
                break SessionEnd::Shutdown;
            }
            let flight_timer = io.in_flight.as_ref().and_then(|f| f.stage.timer());
            let t1 = io
                .codec
                .in_frame()
                .then(|| io.last_byte.later(self.settings.inter_byte_timeout));
            let idle = io.last_activity.later(self.settings.ping_interval);
            // The device may take no more while it still holds bytes for the line.
            let stall = (!io.out.is_empty()).then(|| {
                io.last_write_progress
                    .max(io.line.free_at())
                    .later(self.stall_limit())
            });
            input.reserve(4096);
            tokio::select! {
                read = reader.read_buf(&mut input) => match read {
                    Ok(0) => break SessionEnd::Lost(std::io::ErrorKind::UnexpectedEof.into()),
                    Ok(_) => {
                        io.last_byte = Instant::now();
                        let mut peer_frame = false;
                        while let Ok(Some(item)) = io.codec.decode(&mut input) {
                            peer_frame |= matches!(item, Inbound::Frame(_) | Inbound::Rejected(_));
                            self.on_inbound(&mut io, item);
                        }
                        if peer_frame || io.codec.in_frame() {
                            self.peer_frame_arriving(&mut io);
                        }
                    }
                    Err(e) => break SessionEnd::Lost(e),
                },
                written = writer.write_buf(&mut io.out), if !io.out.is_empty() => match written {
                    Ok(0) => break SessionEnd::Lost(std::io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        let now = Instant::now();
                        io.written = io.written.saturating_add(n as u64);
                        io.last_write_progress = now;
                        io.line.handed_over(n, now);
                        if let Some(flight) = io.in_flight.as_mut() {
                            if matches!(flight.stage, Stage::Writing) && io.written >= flight.frame_end {
                                // Bytes written after the frame (ACKs) leave the line after it.
                                let behind = usize::try_from(io.written.saturating_sub(flight.frame_end)).unwrap_or(usize::MAX);
                                let left = io
                                    .line
                                    .free_at()
                                    .checked_sub(self.settings.line.wire_time(behind))
                                    .unwrap_or(now);
                                flight.stage = Stage::OnTheWire(left.max(now));
                            }
                        }
                    }
                    Err(e) => break SessionEnd::Lost(e),
                },
                command = self.commands.recv(), if closing.is_none() && io.queue.len() < MAX_QUEUED_FRAMES => match command {
                    None | Some(Command::Shutdown) => {
                        closing = Some(self.drain_deadline(&io));
                    }
                    Some(Command::Request { body, reply }) => self.enqueue_request(&mut io, body, reply),
                },
                _ = sleep_until(closing.unwrap_or(now)), if closing.is_some() => break SessionEnd::Shutdown,
                Some(reply) = self.replies.recv() => self.on_reply_command(&mut io, reply),
                _ = sleep_until(flight_timer.unwrap_or(now)), if flight_timer.is_some() => {
                    self.on_flight_timer(&mut io, output_queue);
                }
                _ = sleep_until(t1.unwrap_or(now)), if t1.is_some() => {
                    if io.codec.abandon_partial() {
                        tracing::debug!(target: LOG_TARGET, "partial frame dropped after the inter-byte timeout (T1)");
                    }
                },
                _ = sleep_until(idle), if closing.is_none() => self.on_idle(&mut io),
                _ = sleep_until(stall.unwrap_or(now)), if stall.is_some() => self.on_write_stall(&mut io),
            }
        };

        if let SessionEnd::Shutdown = end {
            // Best effort: pending ACKs and replies still go out.
            let _ = tokio::time::timeout(
                Duration::from_millis(500),
                writer.write_all_buf(&mut io.out),
            )
            .await;
        }
        let stats = io.codec.stats();
        tracing::debug!(target: LOG_TARGET, ?stats, "serial link session ended");
        if let Some(flight) = io.in_flight.take() {
            self.fail_message(flight.message, LinkError::Closed);
        }
        for message in io.queue.drain(..) {
            self.fail_message(message, LinkError::Closed);
        }
        self.set_state(LinkState::Closed);
        self.session = self.session.wrapping_add(1);
        self.cache.clear();
        end
    }

    fn fail_message(&mut self, message: Outgoing, error: LinkError) {
        if let Some(id) = message.request_id {
            if let Some(waiter) = self.waiting.remove(&id) {
                let _ = waiter.send(Err(error));
            }
        }
    }

    fn start_next_frame(&mut self, io: &mut Io) {
        if io.in_flight.is_some() {
            return;
        }
        if let Some(message) = io.queue.pop_front() {
            METRICS.serial_frames_sent.inc();
            io.append(&message.frame);
            io.in_flight = Some(InFlight {
                message,
                sends: 1,
                frame_end: io.appended,
                stage: Stage::Writing,
            });
        }
    }

    fn enqueue_request(
        &mut self,
        io: &mut Io,
        body: Out,
        reply: oneshot::Sender<Result<Reply, LinkError>>,
    ) {
        let id = self.allocate_id();
        // Serialising our own message types cannot fail; only the size limit can.
        let frame = encode_request(id, &body)
            .map_err(|_| LinkError::TooLong(0))
            .and_then(|apdu| frame_bytes(&apdu).map_err(|e| LinkError::TooLong(e.len)));
        match frame {
            Ok(frame) => {
                self.waiting.retain(|_, waiter| !waiter.is_closed());
                self.waiting.insert(id, reply);
                io.queue.push_back(Outgoing {
                    frame: frame.freeze(),
                    request_id: Some(id),
                    ping: false,
                });
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    fn send_ping(&mut self, io: &mut Io) {
        let id = self.allocate_id();
        if let Ok(apdu) = encode_request(id, &Out::ping()) {
            if let Ok(frame) = frame_bytes(&apdu) {
                io.queue.push_back(Outgoing {
                    frame: frame.freeze(),
                    request_id: None,
                    ping: true,
                });
                io.unanswered_pings = io.unanswered_pings.saturating_add(1);
                io.last_ping_id = Some(id);
            }
        }
        io.last_activity = Instant::now();
    }

    fn on_idle(&mut self, io: &mut Io) {
        if io.in_flight.is_some() || !io.queue.is_empty() {
            // Not idle: a frame is being sent and T3/max_sends watch the peer.
            io.last_activity = Instant::now();
            return;
        }
        if io.unanswered_pings >= self.settings.missed_pings_for_down
            && *self.state.borrow() == LinkState::Up
        {
            let pings = io.unanswered_pings;
            tracing::warn!(target: LOG_TARGET, pings, "serial link down: no answer to {pings} pings");
            self.link_down(io);
        }
        self.send_ping(io);
    }

    /// §2/§4: the link counts as down; queued requests fail, queued replies are dropped.
    fn link_down(&mut self, io: &mut Io) {
        for message in io.queue.drain(..).collect::<Vec<_>>() {
            self.fail_message(message, LinkError::LinkDown);
        }
        if *self.state.borrow() == LinkState::Up {
            self.set_state(LinkState::Down);
        }
    }

    fn resend_or_fail(&mut self, io: &mut Io, why: &str) {
        let Some(mut flight) = io.in_flight.take() else {
            return;
        };
        if flight.sends < self.settings.max_sends {
            flight.sends = flight.sends.saturating_add(1);
            METRICS.serial_resends.inc();
            tracing::debug!(target: LOG_TARGET,
                sends = flight.sends,
                why,
                "resending frame (send {}: {why})",
                flight.sends
            );
            io.append(&flight.message.frame);
            flight.frame_end = io.appended;
            flight.stage = Stage::Writing;
            io.in_flight = Some(flight);
        } else {
            let sends = flight.sends;
            tracing::warn!(target: LOG_TARGET,
                sends,
                why,
                "serial link down: no ACK after {sends} sends ({why})"
            );
            self.fail_message(flight.message, LinkError::NotAcknowledged);
            self.link_down(io);
        }
    }

    /// How long output may wait for the device to accept a byte, once what the device holds
    /// should have left the line, before the frame counts as not acknowledged: T3 for every
    /// allowed send.
    fn stall_limit(&self) -> Duration {
        self.settings
            .ack_timeout
            .saturating_mul(self.settings.max_sends.max(1))
    }

    /// At shutdown, how long frames already queued (a reply just given) may still take: what the
    /// line still carries, then for every allowed send their time on the wire and T3.
    fn drain_deadline(&self, io: &Io) -> Instant {
        let unsent = io
            .queue
            .iter()
            .fold(io.out.len(), |sum, m| sum.saturating_add(m.frame.len()));
        let per_send = self
            .settings
            .line
            .wire_time(unsent)
            .saturating_add(self.settings.ack_timeout);
        io.line
            .free_at()
            .max(Instant::now())
            .later(per_send.saturating_mul(self.settings.max_sends.max(1)))
    }

    /// The frame's time on the wire is over ([`Stage::OnTheWire`]), or T3 ran out.
    fn on_flight_timer(&mut self, io: &mut Io, output_queue: &(dyn Fn() -> Option<usize> + Sync)) {
        let Some(flight) = io.in_flight.as_mut() else {
            return;
        };
        match flight.stage {
            Stage::Writing => {}
            Stage::OnTheWire(_) => {
                let now = Instant::now();
                // A real UART may be behind the line settings (flow control held it): its queue
                // says how much is still to go.
                if let Some(queued) = output_queue().filter(|&queued| queued > 0) {
                    io.line.device_holds(queued, now);
                    flight.stage =
                        Stage::OnTheWire(io.line.free_at().max(now.later(OUTPUT_QUEUE_RECHECK)));
                    return;
                }
                let ack_timeout = self.settings.ack_timeout;
                flight.stage = Stage::AwaitingAck {
                    deadline: now.later(ack_timeout),
                    latest: now.later(
                        self.settings
                            .line
                            .wire_time(MAX_FRAME)
                            .saturating_add(ack_timeout),
                    ),
                };
                if flight.message.ping {
                    io.last_activity = now;
                }
            }
            Stage::AwaitingAck { .. } => self.on_ack_timeout(io),
        }
    }

    /// A frame from the peer is arriving while ours waits for its ACK, which the peer can only
    /// send after that frame: T3 counts from its last byte (up to the bound of [`Stage`]).
    fn peer_frame_arriving(&self, io: &mut Io) {
        if let Some(InFlight {
            stage: Stage::AwaitingAck { deadline, latest },
            ..
        }) = io.in_flight.as_mut()
        {
            let held = Instant::now().later(self.settings.ack_timeout).min(*latest);
            *deadline = (*deadline).max(held);
        }
    }

    /// The device has accepted nothing for [`stall_limit`](Self::stall_limit) (hardware flow
    /// control held off by a dead peer, a wedged driver): T3 can never start, so without this the
    /// link would stay up forever. The frame fails and the link goes down; the bytes stay queued
    /// in case the line moves again.
    fn on_write_stall(&mut self, io: &mut Io) {
        io.last_write_progress = Instant::now();
        let pending_bytes = io.out.len();
        tracing::warn!(target: LOG_TARGET,
            pending_bytes,
            "serial link down: the serial device accepted no output for {:?} ({pending_bytes} bytes waiting)",
            self.stall_limit()
        );
        if let Some(flight) = io.in_flight.take() {
            self.fail_message(flight.message, LinkError::NotAcknowledged);
        }
        self.link_down(io);
    }

    fn on_ack_timeout(&mut self, io: &mut Io) {
        self.resend_or_fail(io, "no ACK within T3");
    }

    /// Some sign of life from the peer.
    fn on_alive(&mut self, io: &mut Io) {
        METRICS.terminal_answered();
        io.last_activity = Instant::now();
        if *self.state.borrow() != LinkState::Up {
            self.set_state(LinkState::Up);
        }
    }

    fn on_inbound(&mut self, io: &mut Io, item: Inbound) {
        // Handed to the device completely: an ACK can only be for it (even if the line settings
        // say it is still on the wire, a faster line is no fault).
        let frame_sent = io
            .in_flight
            .as_ref()
            .is_some_and(|flight| !matches!(flight.stage, Stage::Writing));
        match item {
            Inbound::Ack if frame_sent => {
                io.in_flight = None;
                self.on_alive(io);
            }
            Inbound::Nak if frame_sent => {
                METRICS.serial_naks_received.inc();
                self.resend_or_fail(io, "NAK")
            }
            Inbound::Ack | Inbound::Nak => {
                tracing::debug!(target: LOG_TARGET, ?item, "ACK/NAK with no frame awaiting it; ignored")
            }
            Inbound::Rejected(fault) => {
                tracing::debug!(target: LOG_TARGET, ?fault, "bad frame: NAK");
                METRICS.serial_naks_sent.inc();
                io.append(&[NAK]);
            }
            Inbound::Frame(apdu) => {
                METRICS.serial_frames_received.inc();
                io.append(&[ACK]);
                io.unanswered_pings = 0;
                self.on_alive(io);
                self.on_frame(io, apdu);
            }
        }
    }

    fn on_frame(&mut self, io: &mut Io, apdu: Bytes) {
        match parse_incoming::<In>(&apdu) {
            Incoming::Unreadable { reason } => {
                tracing::warn!(target: LOG_TARGET, %reason, apdu_len = apdu.len(), "unreadable serial message ({} bytes) dropped: {reason}", apdu.len())
            }
            Incoming::Anonymous { reason } => {
                tracing::warn!(target: LOG_TARGET, %reason, "serial request without a usable id dropped: {reason}")
            }
            Incoming::Reply { re, body } => match body {
                Ok(reply) => match self.waiting.remove(&re) {
                    Some(waiter) => {
                        let _ = waiter.send(Ok(reply));
                    }
                    None if io.last_ping_id == Some(re) => {}
                    None => tracing::debug!(target: LOG_TARGET,
                        serial_request_id = re,
                        "serial reply to {re}, which no request awaits, dropped"
                    ),
                },
                Err(reason) => {
                    tracing::warn!(target: LOG_TARGET, serial_request_id = re, %reason, "unreadable serial reply to {re}: {reason}");
                    if let Some(waiter) = self.waiting.remove(&re) {
                        let _ = waiter.send(Err(LinkError::UnreadableReply(reason)));
                    }
                }
            },
            Incoming::Request { id, body } => {
                let print = fingerprint(&apdu);
                match self.cache.check(id, print) {
                    Seen::Answered(_) if io.queue.len() >= MAX_QUEUED_FRAMES => {
                        tracing::debug!(target: LOG_TARGET,
                            id,
                            "duplicate request while the output queue is full: ignored"
                        );
                        return;
                    }
                    Seen::Answered(frame) => {
                        tracing::debug!(target: LOG_TARGET,
                            serial_request_id = id,
                            "duplicate serial request {id}: stored reply repeated"
                        );
                        io.queue.push_back(Outgoing {
                            frame,
                            request_id: None,
                            ping: false,
                        });
                        return;
                    }
                    Seen::InProgress => {
                        tracing::debug!(target: LOG_TARGET,
                            serial_request_id = id,
                            "duplicate of serial request {id}, still being handled: ignored"
                        );
                        return;
                    }
                    Seen::PeerRestarted => {
                        tracing::info!(target: LOG_TARGET,
                            serial_request_id = id,
                            "peer reused the older serial request id {id} (it restarted): replay cache emptied"
                        );
                        // Answers still due to the previous process go out but are not cached.
                        self.session = self.session.wrapping_add(1);
                    }
                    Seen::New => {}
                }
                self.cache.start(id, print);
                match body {
                    Err(reason) => {
                        tracing::warn!(target: LOG_TARGET, serial_request_id = id, %reason, "invalid serial request {id}: {reason}");
                        let reply = Reply::error(ErrorCode::InvalidRequest, reason);
                        self.send_reply(io, id, self.session, &reply);
                    }
                    Ok(request) if request.is_ping() => {
                        self.send_reply(io, id, self.session, &Reply::Pong);
                    }
                    Ok(_) if self.in_progress >= MAX_REQUESTS_IN_PROGRESS => {
                        tracing::warn!(target: LOG_TARGET,
                            serial_request_id = id,
                            "{MAX_REQUESTS_IN_PROGRESS} requests in progress; serial request {id} answered busy, nothing done"
                        );
                        self.turn_away(io, id);
                    }
                    Ok(request) => {
                        let incoming = IncomingRequest {
                            id,
                            session: self.session,
                            request,
                            replies: self.reply_sender.clone(),
                            answered: false,
                        };
                        match self.events.try_send(LinkEvent::Request(incoming)) {
                            Ok(()) => self.in_progress = self.in_progress.saturating_add(1),
                            Err(
                                mpsc::error::TrySendError::Full(LinkEvent::Request(mut lost))
                                | mpsc::error::TrySendError::Closed(LinkEvent::Request(mut lost)),
                            ) => {
                                lost.answered = true;
                                tracing::warn!(target: LOG_TARGET,
                                    serial_request_id = id,
                                    "link events not taken (queue full or nobody receives); serial request {id} answered busy, nothing done"
                                );
                                self.turn_away(io, id);
                            }
                            Err(_) => {}
                        }
                    }
                }
            }
        }
    }

    fn on_reply_command(&mut self, io: &mut Io, command: ReplyCommand) {
        self.in_progress = self.in_progress.saturating_sub(1);
        match command.reply {
            Some(reply) => self.send_reply(io, command.id, command.session, &reply),
            None => {
                if command.session == self.session {
                    self.cache.forget(command.id);
                }
            }
        }
    }

    /// Answers request `id` `error busy`: nothing was done. Forgotten before the answer, so the
    /// answer is not kept for replay: the same request sent again is taken anew.
    fn turn_away(&mut self, io: &mut Io, id: u32) {
        self.cache.forget(id);
        let reply = Reply::error(
            ErrorCode::Busy,
            format!(
                "the agent cannot take more requests now (at most {MAX_REQUESTS_IN_PROGRESS} in \
                 progress); nothing was done: send it again once one is answered"
            ),
        );
        self.send_reply(io, id, self.session, &reply);
    }

    fn send_reply(&mut self, io: &mut Io, re: u32, session: u64, reply: &Reply) {
        let frame = match encode_reply_within(re, reply, MAX_APDU)
            .ok()
            .and_then(|apdu| frame_bytes(&apdu).ok())
        {
            Some(frame) => frame.freeze(),
            None => {
                tracing::error!(target: LOG_TARGET,
                    serial_request_id = re,
                    "serial reply to {re} does not fit in one frame; not sent"
                );
                self.cache.forget(re);
                return;
            }
        };
        if session == self.session {
            self.cache.answer(re, frame.clone());
        }
        io.queue.push_back(Outgoing {
            frame,
            request_id: None,
            ping: false,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serial::line::LineTiming;
    use crate::serial::message::CancelReason;
    use tokio::io::DuplexStream;

    /// The terminal's side of a duplex line, at byte level.
    struct Peer {
        line: DuplexStream,
        codec: FrameCodec,
        input: BytesMut,
    }

    impl Peer {
        async fn next(&mut self) -> Inbound {
            loop {
                if let Some(item) = self.codec.decode(&mut self.input).unwrap() {
                    return item;
                }
                self.input.reserve(256);
                let n = self.line.read_buf(&mut self.input).await.unwrap();
                assert!(n > 0, "line closed");
            }
        }

        async fn next_json(&mut self) -> serde_json::Value {
            match self.next().await {
                Inbound::Frame(apdu) => serde_json::from_slice(&apdu).unwrap(),
                other => panic!("expected a frame, got {other:?}"),
            }
        }

        async fn send(&mut self, bytes: &[u8]) {
            self.line.write_all(bytes).await.unwrap();
        }

        /// ACKs a request of the agent's and answers it `ok`.
        async fn acknowledge_and_answer_ok(&mut self, request: &serde_json::Value) {
            self.send(&[ACK]).await;
            let ok = format!(r#"{{"type":"ok","re":{}}}"#, request["id"]);
            self.send(&frame_bytes(ok.as_bytes()).unwrap()).await;
            assert_eq!(self.next().await, Inbound::Ack);
        }

        /// ACKs the opening probe and answers it, leaving the link up and quiet.
        async fn handshake(&mut self) {
            let ping = self.next_json().await;
            assert_eq!(ping["type"], "ping");
            self.send(&[ACK]).await;
            let pong = format!(r#"{{"type":"pong","re":{}}}"#, ping["id"]);
            self.send(&frame_bytes(pong.as_bytes()).unwrap()).await;
            assert_eq!(self.next().await, Inbound::Ack);
        }
    }

    fn settings() -> LinkSettings {
        LinkSettings {
            ping_interval: Duration::from_secs(3600),
            ..LinkSettings::default()
        }
    }

    fn agent_over(
        buffer: usize,
    ) -> (
        LinkHandle<AgentRequest>,
        mpsc::Receiver<LinkEvent<TerminalRequest>>,
        Peer,
    ) {
        agent_with(buffer, settings())
    }

    fn agent_with(
        buffer: usize,
        settings: LinkSettings,
    ) -> (
        LinkHandle<AgentRequest>,
        mpsc::Receiver<LinkEvent<TerminalRequest>>,
        Peer,
    ) {
        let (ours, theirs) = tokio::io::duplex(buffer);
        let (handle, events) = AgentLink::over(ours, settings);
        let peer = Peer {
            line: theirs,
            codec: FrameCodec::new(),
            input: BytesMut::new(),
        };
        (handle, events, peer)
    }

    async fn next_request(
        events: &mut mpsc::Receiver<LinkEvent<TerminalRequest>>,
    ) -> IncomingRequest<TerminalRequest> {
        loop {
            match events.recv().await {
                Some(LinkEvent::Request(incoming)) => return incoming,
                Some(_) => {}
                None => panic!("link ended"),
            }
        }
    }

    fn ready() -> AgentRequest {
        AgentRequest::ready()
    }

    #[tokio::test(start_paused = true)]
    async fn second_frame_waits_until_the_first_is_acknowledged() {
        let (agent, _events, mut peer) = agent_over(4096);
        peer.handshake().await;
        let (a, b) = (agent.clone(), agent.clone());
        let first = tokio::spawn(async move { a.request(ready()).await });
        let first_frame = peer.next_json().await;
        let second = tokio::spawn(async move { b.request(AgentRequest::Ping).await });
        // No ACK yet: the only thing that may come is the same frame again after T3.
        let again = peer.next_json().await;
        assert_eq!(again, first_frame);
        peer.send(&[ACK]).await;
        let second_frame = peer.next_json().await;
        assert_eq!(second_frame["type"], "ping");
        peer.send(&[ACK]).await;
        for (frame, reply) in [(&first_frame, "ok"), (&second_frame, "pong")] {
            let text = format!(r#"{{"type":"{reply}","re":{}}}"#, frame["id"]);
            peer.send(&frame_bytes(text.as_bytes()).unwrap()).await;
            assert_eq!(peer.next().await, Inbound::Ack);
        }
        assert_eq!(first.await.unwrap(), Ok(Reply::OK));
        assert_eq!(second.await.unwrap(), Ok(Reply::Pong));
    }

    #[tokio::test]
    async fn ack_is_never_written_inside_an_outgoing_frame() {
        // A tiny line buffer forces the long frame out in many small writes.
        let (agent, mut events, mut peer) = agent_over(16);
        peer.handshake().await;
        let long_id = "x".repeat(3000);
        let sender = agent.clone();
        let id = long_id.clone();
        let request = tokio::spawn(async move {
            sender
                .request(AgentRequest::PaymentCancelled {
                    payment_request_id: id,
                    reason: CancelReason::Operator,
                })
                .await
        });
        // While that frame is on its way, the terminal sends a frame of its own.
        let status = frame_bytes(br#"{"type":"status","id":1}"#).unwrap();
        let (mut reader, mut writer) = tokio::io::split(peer.line);
        let write = tokio::spawn(async move {
            writer.write_all(&status).await.unwrap();
            writer
        });
        let mut input = BytesMut::new();
        let mut items = Vec::new();
        while items.len() < 2 {
            input.reserve(64);
            assert!(reader.read_buf(&mut input).await.unwrap() > 0);
            while let Some(item) = peer.codec.decode(&mut input).unwrap() {
                items.push(item);
            }
        }
        assert!(matches!(items[0], Inbound::Frame(_) | Inbound::Ack));
        assert!(items.iter().all(|i| !matches!(i, Inbound::Rejected(_))));
        assert!(items.contains(&Inbound::Ack));
        assert_eq!(peer.codec.stats().noise_bytes, 0);
        let mut writer = write.await.unwrap();
        writer.write_all(&[ACK]).await.unwrap();
        let incoming = next_request(&mut events).await;
        assert_eq!(incoming.request(), &TerminalRequest::Status);
        drop(request);
    }

    #[tokio::test(start_paused = true)]
    async fn request_without_reply_times_out() {
        let (agent, _events, mut peer) = agent_over(4096);
        peer.handshake().await;
        let sender = agent.clone();
        let request = tokio::spawn(async move {
            sender
                .request_with_timeout(ready(), Duration::from_secs(2))
                .await
        });
        peer.next_json().await;
        peer.send(&[ACK]).await;
        assert_eq!(
            request.await.unwrap(),
            Err(LinkError::Timeout(Duration::from_secs(2)))
        );
        assert_eq!(agent.state(), LinkState::Up);
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_a_request_unanswered_lets_its_retransmission_through() {
        let (_agent, mut events, mut peer) = agent_over(4096);
        peer.handshake().await;
        let status = frame_bytes(br#"{"type":"status","id":5}"#).unwrap();
        peer.send(&status).await;
        assert_eq!(peer.next().await, Inbound::Ack);
        drop(next_request(&mut events).await);
        // Let the link see the drop before the retransmission comes.
        tokio::time::sleep(Duration::from_millis(10)).await;
        peer.send(&status).await;
        assert_eq!(peer.next().await, Inbound::Ack);
        assert_eq!(next_request(&mut events).await.id(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_beyond_the_in_progress_bound_are_answered_busy_until_one_is_answered() {
        let (_agent, mut events, mut peer) = agent_over(1 << 20);
        peer.handshake().await;
        let status = |id: usize| {
            frame_bytes(format!(r#"{{"type":"status","id":{id}}}"#).as_bytes()).unwrap()
        };
        let extra = 8;
        for id in 1..=MAX_REQUESTS_IN_PROGRESS {
            peer.send(&status(id)).await;
            assert_eq!(peer.next().await, Inbound::Ack);
        }
        // Each request beyond the bound is answered busy at once.
        for id in MAX_REQUESTS_IN_PROGRESS + 1..=MAX_REQUESTS_IN_PROGRESS + extra {
            peer.send(&status(id)).await;
            assert_eq!(peer.next().await, Inbound::Ack);
            let reply = peer.next_json().await;
            assert_eq!(reply["re"], id, "{reply}");
            assert_eq!(reply["code"], "busy", "{reply}");
            peer.send(&[ACK]).await;
        }
        let mut held = Vec::new();
        for _ in 0..MAX_REQUESTS_IN_PROGRESS {
            held.push(next_request(&mut events).await);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(
            events.try_recv().is_err(),
            "requests beyond the bound were not handed on"
        );
        // One answered: the same request sent again is now taken, not answered from the cache.
        held.pop().unwrap().reply(Reply::OK);
        let reply = peer.next_json().await;
        assert_eq!(reply["re"], MAX_REQUESTS_IN_PROGRESS);
        peer.send(&[ACK]).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        let dropped = MAX_REQUESTS_IN_PROGRESS + extra;
        peer.send(&status(dropped)).await;
        assert_eq!(peer.next().await, Inbound::Ack);
        assert_eq!(next_request(&mut events).await.id() as usize, dropped);
    }

    #[tokio::test(start_paused = true)]
    async fn output_the_device_never_accepts_fails_the_frame_and_takes_the_link_down() {
        let (agent, mut events, mut peer) = agent_over(64);
        peer.handshake().await;
        // The peer stops reading: a long frame can never be written out completely.
        let result = agent
            .request(AgentRequest::PaymentCancelled {
                payment_request_id: "y".repeat(2000),
                reason: CancelReason::Timeout,
            })
            .await;
        assert_eq!(result, Err(LinkError::NotAcknowledged));
        assert_eq!(agent.state(), LinkState::Down);
        assert!(matches!(events.recv().await, Some(LinkEvent::Up)));
        assert!(matches!(events.recv().await, Some(LinkEvent::Down)));
        drop(peer);
    }

    #[tokio::test(start_paused = true)]
    async fn reply_of_an_unknown_type_fails_the_request_at_once() {
        let (agent, _events, mut peer) = agent_over(4096);
        peer.handshake().await;
        let sender = agent.clone();
        let request = tokio::spawn(async move { sender.request(ready()).await });
        let frame = peer.next_json().await;
        peer.send(&[ACK]).await;
        let reply = format!(r#"{{"type":"teapot","re":{}}}"#, frame["id"]);
        peer.send(&frame_bytes(reply.as_bytes()).unwrap()).await;
        assert_eq!(peer.next().await, Inbound::Ack);
        assert!(matches!(
            request.await.unwrap(),
            Err(LinkError::UnreadableReply(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn reply_given_just_before_shutdown_still_goes_out() {
        let (agent, mut events, mut peer) = agent_over(4096);
        peer.handshake().await;
        peer.send(&frame_bytes(br#"{"type":"status","id":9}"#).unwrap())
            .await;
        assert_eq!(peer.next().await, Inbound::Ack);
        next_request(&mut events).await.reply(Reply::Pong);
        agent.shutdown();
        let reply = peer.next_json().await;
        assert_eq!(
            (reply["type"].as_str(), reply["re"].as_u64()),
            (Some("pong"), Some(9))
        );
        peer.send(&[ACK]).await;
        agent.wait_for_state(LinkState::Closed).await;
        let mut rest = Vec::new();
        assert_eq!(peer.line.read_to_end(&mut rest).await.unwrap(), 0);
    }

    /// A 9600-baud 8N1 line: 1.04 ms a character.
    fn at_9600() -> LinkSettings {
        LinkSettings {
            line: LineTiming::new(9600, 10),
            ..settings()
        }
    }

    fn long_cancel(len: usize) -> AgentRequest {
        AgentRequest::PaymentCancelled {
            payment_request_id: "z".repeat(len),
            reason: CancelReason::Operator,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn t3_starts_once_the_frame_has_left_the_line() {
        let (agent, _events, mut peer) = agent_with(1 << 20, at_9600());
        peer.handshake().await;
        let sender = agent.clone();
        let request = tokio::spawn(async move { sender.request(long_cancel(3000)).await });
        // The duplex hands the frame over at once; a 9600-baud line takes 3.2 s to send it.
        let handed = Instant::now();
        let first = peer.next_json().await;
        let wire = at_9600().line.wire_time(3000 + 70);
        let again = peer.next_json().await;
        let resent_after = handed.elapsed();
        assert_eq!(again, first, "the resend is the same frame");
        let t3 = at_9600().ack_timeout;
        assert!(
            resent_after >= wire + t3 && resent_after < wire + t3 + Duration::from_millis(100),
            "resent {resent_after:?} after the frame was handed over; on the wire {wire:?}, T3 {t3:?}"
        );
        peer.acknowledge_and_answer_ok(&first).await;
        assert_eq!(request.await.unwrap(), Ok(Reply::OK));
        assert_eq!(agent.state(), LinkState::Up);
    }

    #[tokio::test(start_paused = true)]
    async fn t3_waits_for_the_bytes_the_uart_still_holds() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        // What TIOCOUTQ would say: the UART's queue, held back by flow control.
        let queued = Arc::new(AtomicUsize::new(0));
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let (agent, _events, mut core) = LinkCore::<TerminalRequest, AgentRequest>::new(at_9600());
        let probe = Arc::clone(&queued);
        tokio::spawn(async move {
            let output_queue = move || Some(probe.load(Ordering::SeqCst));
            let mut transport = Box::pin(ours);
            core.run_session(&mut transport, &output_queue).await;
        });
        let mut peer = Peer {
            line: theirs,
            codec: FrameCodec::new(),
            input: BytesMut::new(),
        };
        peer.handshake().await;
        queued.store(2000, Ordering::SeqCst);
        let sender = agent.clone();
        let request = tokio::spawn(async move { sender.request(ready()).await });
        let handed = Instant::now();
        let first = peer.next_json().await;
        // The line settings say the 40-byte frame is out after 42 ms; the UART still holds
        // 2000 bytes (2.1 s) and lets them go 1.5 s later.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        queued.store(0, Ordering::SeqCst);
        let again = peer.next_json().await;
        let resent_after = handed.elapsed();
        assert_eq!(again, first);
        let t3 = at_9600().ack_timeout;
        assert!(
            resent_after >= Duration::from_millis(2000) + t3,
            "resent {resent_after:?} after the frame was handed over, before the UART's queue was out and T3 ran"
        );
        peer.acknowledge_and_answer_ok(&first).await;
        assert_eq!(request.await.unwrap(), Ok(Reply::OK));
    }

    #[tokio::test(start_paused = true)]
    async fn the_peers_own_frame_on_the_wire_holds_t3_until_it_has_arrived() {
        let (agent, mut events, peer) = agent_with(1 << 20, at_9600());
        let mut peer = peer;
        peer.handshake().await;
        let sender = agent.clone();
        let request = tokio::spawn(async move { sender.request(ready()).await });
        let ours = peer.next_json().await;
        // Before the peer has read our frame it started one of its own, 3 KB, which it sends
        // at 9600 baud (40 bytes every 40 ms); its ACK of ours can only follow that frame.
        let long = format!(
            r#"{{"type":"payment_started","payment_request_id":"{}","id":1}}"#,
            "p".repeat(3000)
        );
        let frame = frame_bytes(long.as_bytes()).unwrap();
        let (mut reader, mut writer) = tokio::io::split(peer.line);
        let sending = tokio::spawn(async move {
            for slice in frame.chunks(40) {
                writer.write_all(slice).await.unwrap();
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
            writer.write_all(&[ACK]).await.unwrap();
            writer
        });
        // What the agent sends meanwhile: the ACK of the peer's frame, never ours again.
        let mut input = BytesMut::new();
        let mut seen = Vec::new();
        while !seen.contains(&Inbound::Ack) {
            input.reserve(256);
            assert!(reader.read_buf(&mut input).await.unwrap() > 0);
            while let Some(item) = peer.codec.decode(&mut input).unwrap() {
                seen.push(item);
            }
        }
        assert_eq!(seen, vec![Inbound::Ack], "our frame was sent again");
        let mut writer = sending.await.unwrap();
        let ok = format!(r#"{{"type":"ok","re":{}}}"#, ours["id"]);
        writer
            .write_all(&frame_bytes(ok.as_bytes()).unwrap())
            .await
            .unwrap();
        assert_eq!(request.await.unwrap(), Ok(Reply::OK));
        assert_eq!(agent.state(), LinkState::Up);
        assert!(matches!(
            next_request(&mut events).await.request(),
            TerminalRequest::PaymentStarted { .. }
        ));
    }
}
