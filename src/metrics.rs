//! The agent's counters and gauges (docs/operations.md, "Metrics"), and their exposition in the
//! OpenMetrics text format (`pos-agent metrics`, over the control socket) or the Prometheus
//! text format (the `[metrics] textfile` for node_exporter's textfile collector).
//!
//! The counters are process-wide statics of relaxed atomics: counting costs one atomic add
//! wherever it happens (serial link, payment API client, state writer, core), and nothing has
//! to be threaded through. The exposition is written by hand: a client library would cost the
//! terminal's binary more than this whole module. The agent opens no listening port.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

/// A monotonically increasing count.
pub(crate) struct Counter(AtomicU64);

impl Counter {
    #[allow(clippy::declare_interior_mutable_const)]
    const ZERO: Counter = Counter::new();

    pub(crate) const fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    pub(crate) fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

impl Default for Counter {
    fn default() -> Self {
        Self::new()
    }
}

/// Durations counted into fixed buckets (upper bounds in microseconds), with their sum.
pub(crate) struct Histogram {
    /// Upper bounds, microseconds, ascending; `LE` holds the same bounds as label values.
    bounds_us: &'static [u64],
    le: &'static [&'static str],
    /// Observations per bucket (not cumulative); the last one is beyond every bound.
    buckets: [Counter; MAX_BUCKETS],
    count: Counter,
    sum_us: AtomicU64,
}

const MAX_BUCKETS: usize = 12;

impl Histogram {
    const fn new(bounds_us: &'static [u64], le: &'static [&'static str]) -> Self {
        assert!(bounds_us.len() == le.len() && bounds_us.len() < MAX_BUCKETS);
        Self {
            bounds_us,
            le,
            buckets: [Counter::ZERO; MAX_BUCKETS],
            count: Counter::new(),
            sum_us: AtomicU64::new(0),
        }
    }

    pub(crate) fn observe(&self, duration: Duration) {
        let us = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        let bucket = self
            .bounds_us
            .iter()
            .position(|&bound| us <= bound)
            .unwrap_or(self.bounds_us.len());
        self.buckets[bucket].inc();
        self.count.inc();
        self.sum_us.fetch_add(us, Relaxed);
    }

    pub(crate) fn count(&self) -> u64 {
        self.count.get()
    }
}

/// Payment API latency: 10 ms to 60 s.
const API_BOUNDS_US: [u64; 10] = [
    10_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000,
    60_000_000,
];
const API_LE: [&str; 10] = [
    "0.01", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "60.0",
];
/// State commits (write + fdatasync): 1 ms to 5 s; slow flash takes 100 ms and more.
const STATE_BOUNDS_US: [u64; 10] = [
    1_000, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 5_000_000,
];
const STATE_LE: [&str; 10] = [
    "0.001", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "5.0",
];

/// How many values each label that names another layer's enum has: the terminal's error codes
/// (`serial::ErrorCode::ALL`), the cancel reasons (`state::CancelReason::ALL`) and the payment
/// API's endpoints (`paywall::Endpoint::ALL`). A leaf cannot name those enums: the agent hands
/// their labels to [`render`] in [`Labels`], built from each enum's own list, and a list of
/// another length does not compile.
pub(crate) const REFUSAL_CODES: usize = 6;
pub(crate) const CANCEL_REASONS: usize = 5;
pub(crate) const API_OPERATIONS: usize = 15;

/// The label values of the counters kept by another layer's enum, each in the order of that
/// enum's `ALL`, whose place (`index()`) is the counter's.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Labels {
    /// The `code` label of refused sales: the terminal's `error` codes (docs/serial-protocol.md §3).
    pub(crate) codes: [&'static str; REFUSAL_CODES],
    /// The `reason` label of cancels.
    pub(crate) reasons: [&'static str; CANCEL_REASONS],
    /// The `operation` label of payment API requests.
    pub(crate) operations: [&'static str; API_OPERATIONS],
}

/// The `outcome` label of cancels sent to the payment API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CancelOutcome {
    /// The API confirmed the cancel.
    Confirmed,
    /// The API refused it (the payment final there, or another refusal).
    Refused,
    /// No confirmation (unreachable, 5xx, unreadable): the cancel stays marked.
    Unconfirmed,
}

impl CancelOutcome {
    /// Every outcome, in the order the exposition lists them.
    pub(crate) const ALL: [Self; 3] = [Self::Confirmed, Self::Refused, Self::Unconfirmed];

    /// The `outcome` label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Confirmed => "confirmed",
            Self::Refused => "refused",
            Self::Unconfirmed => "unconfirmed",
        }
    }

    /// Its place in [`ALL`](Self::ALL), which is its counter's place in a row.
    fn index(self) -> usize {
        position(&Self::ALL, self)
    }
}

/// The `outcome` label of payment API requests (each attempt counts, retries included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ApiOutcome {
    /// A 2xx answer whose envelope says the request succeeded.
    Ok,
    /// A 2xx answer whose envelope refuses the request.
    Rejected,
    /// HTTP 4xx.
    ClientError,
    /// HTTP 5xx.
    ServerError,
    /// No connection could be made: the request never left.
    NotSent,
    /// The exchange broke off or timed out after the request may have left.
    Transport,
    /// An answer that could not be read.
    Undecodable,
}

impl ApiOutcome {
    /// Every outcome, in the order the exposition lists them.
    pub(crate) const ALL: [Self; 7] = [
        Self::Ok,
        Self::Rejected,
        Self::ClientError,
        Self::ServerError,
        Self::NotSent,
        Self::Transport,
        Self::Undecodable,
    ];

    /// The `outcome` label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Rejected => "rejected",
            Self::ClientError => "http_4xx",
            Self::ServerError => "http_5xx",
            Self::NotSent => "not_sent",
            Self::Transport => "transport_error",
            Self::Undecodable => "undecodable",
        }
    }

    /// Its place in [`ALL`](Self::ALL), which is its counter's place in a row.
    fn index(self) -> usize {
        position(&Self::ALL, self)
    }
}

/// Where `value` is in `all` (an enum's list of every value, so it is there).
fn position<T: PartialEq>(all: &[T], value: T) -> usize {
    all.iter().position(|v| *v == value).unwrap_or_default()
}

/// Every counter of the agent (see the module header).
pub(crate) struct Metrics {
    pub(crate) sales_started: Counter,
    pub(crate) sales_refused: [Counter; REFUSAL_CODES],
    pub(crate) sales_abandoned: Counter,
    cancels: [[Counter; CancelOutcome::ALL.len()]; CANCEL_REASONS],
    api_requests: [[Counter; ApiOutcome::ALL.len()]; API_OPERATIONS],
    pub(crate) api_latency: Histogram,
    /// Unix milliseconds of the last HTTP answer below 500 from the payment API; 0: never.
    api_answered_ms: AtomicU64,
    pub(crate) serial_frames_received: Counter,
    pub(crate) serial_frames_sent: Counter,
    /// NAKs the agent sent for bad frames from the terminal.
    pub(crate) serial_naks_sent: Counter,
    /// NAKs the terminal sent for the agent's frames.
    pub(crate) serial_naks_received: Counter,
    pub(crate) serial_resends: Counter,
    /// Unix milliseconds of the last frame or ACK from the terminal; 0: never.
    terminal_answered_ms: AtomicU64,
    pub(crate) state_commit: Histogram,
    pub(crate) state_write_errors: Counter,
}

#[allow(clippy::declare_interior_mutable_const)]
const CANCEL_ROW: [Counter; CancelOutcome::ALL.len()] = [Counter::ZERO; CancelOutcome::ALL.len()];
#[allow(clippy::declare_interior_mutable_const)]
const API_ROW: [Counter; ApiOutcome::ALL.len()] = [Counter::ZERO; ApiOutcome::ALL.len()];

/// The agent's metrics.
pub(crate) static METRICS: Metrics = Metrics {
    sales_started: Counter::new(),
    sales_refused: [Counter::ZERO; REFUSAL_CODES],
    sales_abandoned: Counter::new(),
    cancels: [CANCEL_ROW; CANCEL_REASONS],
    api_requests: [API_ROW; API_OPERATIONS],
    api_latency: Histogram::new(&API_BOUNDS_US, &API_LE),
    api_answered_ms: AtomicU64::new(0),
    serial_frames_received: Counter::new(),
    serial_frames_sent: Counter::new(),
    serial_naks_sent: Counter::new(),
    serial_naks_received: Counter::new(),
    serial_resends: Counter::new(),
    terminal_answered_ms: AtomicU64::new(0),
    state_commit: Histogram::new(&STATE_BOUNDS_US, &STATE_LE),
    state_write_errors: Counter::new(),
};

static STARTED: OnceLock<Instant> = OnceLock::new();

/// Marks the start of the process for `pos_agent_uptime_seconds` (the first call counts).
pub(crate) fn mark_start() {
    STARTED.get_or_init(Instant::now);
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn time_of(ms: u64) -> Option<SystemTime> {
    (ms != 0).then(|| SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
}

impl Metrics {
    /// One payment API request: its operation (its place in `paywall::Endpoint::ALL`), outcome and time.
    pub(crate) fn api_request(&self, operation: usize, outcome: ApiOutcome, elapsed: Duration) {
        if let Some(row) = self.api_requests.get(operation) {
            row[outcome.index()].inc();
        }
        self.api_latency.observe(elapsed);
        if matches!(
            outcome,
            ApiOutcome::Ok | ApiOutcome::Rejected | ApiOutcome::ClientError
        ) {
            self.api_answered_ms
                .store(unix_ms(SystemTime::now()), Relaxed);
        }
    }

    /// One cancel sent to the payment API, by reason (its place in `state::CancelReason::ALL`).
    pub(crate) fn cancel(&self, reason: usize, outcome: CancelOutcome) {
        if let Some(row) = self.cancels.get(reason) {
            row[outcome.index()].inc();
        }
    }

    /// A sale refused with the terminal's error code (its place in `serial::ErrorCode::ALL`).
    pub(crate) fn sale_refused(&self, code: usize) {
        if let Some(counter) = self.sales_refused.get(code) {
            counter.inc();
        }
    }

    /// The terminal sent a frame or an ACK.
    pub(crate) fn terminal_answered(&self) {
        self.terminal_answered_ms
            .store(unix_ms(SystemTime::now()), Relaxed);
    }

    /// When the terminal last sent a frame or an ACK.
    pub(crate) fn terminal_last_answered(&self) -> Option<SystemTime> {
        time_of(self.terminal_answered_ms.load(Relaxed))
    }

    /// When the payment API last answered (an HTTP status below 500).
    pub(crate) fn api_last_answered(&self) -> Option<SystemTime> {
        time_of(self.api_answered_ms.load(Relaxed))
    }
}

/// What only the daemon knows at the moment of the exposition.
#[derive(Debug, Clone)]
pub(crate) struct Gauges {
    pub(crate) pending: usize,
    pub(crate) abandoned: usize,
    pub(crate) connected: bool,
    pub(crate) link_up: bool,
    /// How often the serial device was opened again since the agent started.
    pub(crate) port_reopens: u64,
    /// Who the terminal said it is, once it did.
    pub(crate) terminal: Option<TerminalInfo>,
    /// The values of the labels that name another layer's enums.
    pub(crate) labels: Labels,
}

/// Who the terminal said it is, as the `pos_agent_terminal_info` labels show it (the agent
/// fills it from the serial protocol's `TerminalIdentity`; metrics names no protocol).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TerminalInfo {
    /// The protocol version it speaks (the version a terminal that did not say speaks).
    pub(crate) protocol: u32,
    pub(crate) model: Option<String>,
    pub(crate) firmware: Option<String>,
}

/// Which text format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// OpenMetrics 1.0 text (`application/openmetrics-text`), ending with `# EOF`.
    OpenMetrics,
    /// The Prometheus text format 0.0.4, which node_exporter's textfile collector reads.
    Prometheus,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
    Info,
}

struct Exposition {
    text: String,
    format: Format,
}

impl Exposition {
    /// `# HELP` and `# TYPE` of a family. OpenMetrics names a counter family without its
    /// `_total` and has an `info` type; the Prometheus format names the sample and has neither.
    fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let (suffix, kind) = match (self.format, kind) {
            (Format::OpenMetrics, Kind::Counter) => ("", "counter"),
            (Format::Prometheus, Kind::Counter) => ("_total", "counter"),
            (Format::OpenMetrics, Kind::Info) => ("", "info"),
            (Format::Prometheus, Kind::Info) => ("_info", "gauge"),
            (_, Kind::Gauge) => ("", "gauge"),
            (_, Kind::Histogram) => ("", "histogram"),
        };
        let _ = writeln!(self.text, "# HELP {name}{suffix} {help}");
        let _ = writeln!(self.text, "# TYPE {name}{suffix} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.sample_text(name, labels, &value.to_string());
    }

    fn sample_text(&mut self, name: &str, labels: &[(&str, &str)], value: &str) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{label}=\"");
                for c in value.chars() {
                    match c {
                        '\\' => self.text.push_str("\\\\"),
                        '"' => self.text.push_str("\\\""),
                        '\n' => self.text.push_str("\\n"),
                        c => self.text.push(c),
                    }
                }
                self.text.push('"');
            }
            self.text.push('}');
        }
        self.text.push(' ');
        self.text.push_str(value);
        self.text.push('\n');
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, Kind::Counter, help);
        self.sample(&format!("{name}_total"), &[], value);
    }

    fn gauge(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, Kind::Gauge, help);
        self.sample(name, &[], value);
    }

    fn gauge_text(&mut self, name: &str, help: &str, value: &str) {
        self.family(name, Kind::Gauge, help);
        self.sample_text(name, &[], value);
    }

    fn histogram(&mut self, name: &str, help: &str, histogram: &Histogram) {
        self.family(name, Kind::Histogram, help);
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (i, le) in histogram.le.iter().enumerate() {
            cumulative += histogram.buckets[i].get();
            self.sample(&bucket, &[("le", le)], cumulative);
        }
        // Read after the buckets: a concurrent observation may show in `+Inf` and the count
        // and not yet in a bucket, never the other way round.
        let count = histogram.count();
        self.sample(&bucket, &[("le", "+Inf")], count.max(cumulative));
        self.sample(&format!("{name}_count"), &[], count.max(cumulative));
        let sum = decimal(histogram.sum_us.load(Relaxed), 1_000_000);
        self.sample_text(&format!("{name}_sum"), &[], &sum);
    }

    fn timestamp(&mut self, name: &str, help: &str, time: Option<SystemTime>) {
        if let Some(time) = time {
            self.gauge_text(name, help, &decimal(unix_ms(time), 1_000));
        }
    }
}

/// `units` of `per_second` as decimal seconds (`1234567` µs → `1.234567`), in integers only:
/// float formatting would cost the terminal's binary more than this.
fn decimal(units: u64, per_second: u64) -> String {
    let digits = per_second.ilog10() as usize;
    format!(
        "{}.{:0digits$}",
        units / per_second,
        units % per_second,
        digits = digits
    )
}

/// The whole exposition: every counter of [`METRICS`] and the daemon's `gauges`.
pub(crate) fn render(gauges: &Gauges, format: Format) -> String {
    let m = &METRICS;
    let mut out = Exposition {
        text: String::with_capacity(8 * 1024),
        format,
    };
    out.family(
        "pos_agent_build",
        Kind::Info,
        "The agent's version and the git commit it was built from.",
    );
    out.sample(
        "pos_agent_build_info",
        &[
            ("version", crate::build_info::VERSION),
            ("commit", crate::build_info::COMMIT),
        ],
        1,
    );
    if let Some(terminal) = &gauges.terminal {
        out.family(
            "pos_agent_terminal",
            Kind::Info,
            "Who the terminal said it is when it last answered agent_state ready: protocol \
             version, model, firmware (unknown: it did not say).",
        );
        let protocol = terminal.protocol.to_string();
        out.sample(
            "pos_agent_terminal_info",
            &[
                ("protocol", &protocol),
                ("model", terminal.model.as_deref().unwrap_or("unknown")),
                (
                    "firmware",
                    terminal.firmware.as_deref().unwrap_or("unknown"),
                ),
            ],
            1,
        );
    }
    let uptime_us = STARTED.get().map_or(0, |s| {
        u64::try_from(s.elapsed().as_micros()).unwrap_or(u64::MAX)
    });
    out.gauge_text(
        "pos_agent_uptime_seconds",
        "Seconds since the agent started.",
        &decimal(uptime_us, 1_000_000),
    );
    out.gauge(
        "pos_agent_pending_payments",
        "Payments pending here (started, not final).",
        gauges.pending as u64,
    );
    out.gauge(
        "pos_agent_abandoned_sales",
        "Sales the terminal was told failed whose outcome is still being settled.",
        gauges.abandoned as u64,
    );
    out.gauge(
        "pos_agent_connection_up",
        "1 while the payment API connection is connected.",
        u64::from(gauges.connected),
    );
    out.gauge(
        "pos_agent_terminal_link_up",
        "1 while the serial link to the terminal is up.",
        u64::from(gauges.link_up),
    );
    out.timestamp(
        "pos_agent_terminal_last_answer_timestamp_seconds",
        "When the terminal last sent a frame or an ACK (Unix time).",
        m.terminal_last_answered(),
    );
    out.timestamp(
        "pos_agent_api_last_answer_timestamp_seconds",
        "When the payment API last answered with an HTTP status below 500 (Unix time).",
        m.api_last_answered(),
    );

    out.counter(
        "pos_agent_sales_started",
        "Sales answered sale_started.",
        m.sales_started.get(),
    );
    out.family(
        "pos_agent_sales_refused",
        Kind::Counter,
        "Sales answered with an error, by the terminal's error code.",
    );
    for (code, counter) in gauges.labels.codes.iter().zip(&m.sales_refused) {
        out.sample(
            "pos_agent_sales_refused_total",
            &[("code", code)],
            counter.get(),
        );
    }
    out.counter(
        "pos_agent_sales_abandoned",
        "Sales whose outcome was unknown when their reply was due.",
        m.sales_abandoned.get(),
    );
    out.family(
        "pos_agent_cancels",
        Kind::Counter,
        "Cancels sent to the payment API, by reason and outcome.",
    );
    for (reason, row) in gauges.labels.reasons.iter().zip(&m.cancels) {
        for (outcome, counter) in CancelOutcome::ALL.iter().zip(row) {
            out.sample(
                "pos_agent_cancels_total",
                &[("reason", reason), ("outcome", outcome.label())],
                counter.get(),
            );
        }
    }
    out.family(
        "pos_agent_api_requests",
        Kind::Counter,
        "Payment API requests (every attempt), by operation and outcome; only those seen.",
    );
    for (operation, row) in gauges.labels.operations.iter().zip(&m.api_requests) {
        for (outcome, counter) in ApiOutcome::ALL.iter().zip(row) {
            let value = counter.get();
            if value > 0 {
                out.sample(
                    "pos_agent_api_requests_total",
                    &[("operation", operation), ("outcome", outcome.label())],
                    value,
                );
            }
        }
    }
    out.histogram(
        "pos_agent_api_request_duration_seconds",
        "Payment API request latency, every attempt.",
        &m.api_latency,
    );

    out.counter(
        "pos_agent_serial_frames_received",
        "Frames received from the terminal.",
        m.serial_frames_received.get(),
    );
    out.counter(
        "pos_agent_serial_frames_sent",
        "Frames sent to the terminal (first sends).",
        m.serial_frames_sent.get(),
    );
    out.counter(
        "pos_agent_serial_resends",
        "Frames sent again (NAK or no ACK within T3).",
        m.serial_resends.get(),
    );
    out.counter(
        "pos_agent_serial_naks_sent",
        "NAKs sent for bad frames from the terminal.",
        m.serial_naks_sent.get(),
    );
    out.counter(
        "pos_agent_serial_naks_received",
        "NAKs the terminal sent for the agent's frames.",
        m.serial_naks_received.get(),
    );
    out.counter(
        "pos_agent_serial_port_reopens",
        "Times the serial device was opened again (unplugged, replaced, failing).",
        gauges.port_reopens,
    );

    out.histogram(
        "pos_agent_state_commit_duration_seconds",
        "State commits: one journal append or snapshot with its fdatasync.",
        &m.state_commit,
    );
    out.counter(
        "pos_agent_state_write_errors",
        "State commits that failed.",
        m.state_write_errors.get(),
    );
    if format == Format::OpenMetrics {
        out.text.push_str("# EOF\n");
    }
    out.text
}

/// Replaces `path` with `text` atomically (a temporary file beside it, then a rename), so that
/// node_exporter's textfile collector never reads half a file. Readable by all (0644): the
/// collector runs as another user. Not synced: the file is rewritten every interval anyway.
/// What `[metrics] textfile` says when the start stopped on the state directory (exit 74):
/// no daemon runs to write the usual exposition, and a terminal that stays down must be seen.
pub(crate) const STATE_UNUSABLE_TEXTFILE: &str = "# HELP pos_agent_state_unusable 1: the last \
start stopped on the state directory (exit 74) and the agent is not running until an operator \
acts (docs/deployment.md).\n# TYPE pos_agent_state_unusable gauge\npos_agent_state_unusable 1\n";

pub(crate) fn write_textfile(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = std::path::PathBuf::from(temporary);
    let written = std::fs::write(&temporary, text)
        .and_then(|()| std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o644)))
        .and_then(|()| std::fs::rename(&temporary, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_counts_into_the_first_bucket_that_holds_the_value() {
        let h = Histogram::new(&API_BOUNDS_US, &API_LE);
        h.observe(Duration::from_millis(10));
        h.observe(Duration::from_millis(11));
        h.observe(Duration::from_secs(61));
        assert_eq!(h.buckets[0].get(), 1);
        assert_eq!(h.buckets[1].get(), 1);
        assert_eq!(h.buckets[API_BOUNDS_US.len()].get(), 1);
        assert_eq!(h.count(), 3);
        for (bound, le) in API_BOUNDS_US.iter().zip(API_LE) {
            assert_eq!(*bound as f64 / 1e6, le.parse::<f64>().unwrap());
        }
        for (bound, le) in STATE_BOUNDS_US.iter().zip(STATE_LE) {
            assert_eq!(*bound as f64 / 1e6, le.parse::<f64>().unwrap());
        }
    }

    #[test]
    fn seconds_are_written_as_decimals_without_floats() {
        assert_eq!(decimal(1_234_567, 1_000_000), "1.234567");
        assert_eq!(decimal(5, 1_000_000), "0.000005");
        assert_eq!(decimal(1_764_551_234_007, 1_000), "1764551234.007");
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = Exposition {
            text: String::new(),
            format: Format::OpenMetrics,
        };
        out.sample("x", &[("a", "q\"b\\n\nx")], 1);
        assert_eq!(out.text, "x{a=\"q\\\"b\\\\n\\nx\"} 1\n");
    }
}
