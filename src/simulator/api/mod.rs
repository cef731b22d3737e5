//! A stateful simulator of the Paywall payment API (docs/payment-api.md §2), for tests (in-process, on
//! `127.0.0.1:0`), the demo and manual runs (`pos-agent simulate-api`). It serves every
//! endpoint the client calls, PhysicalAPI and PaymentAPI on one address, with the seeds'
//! envelopes and casing; checks the header pair (HTTP 401 and a failure envelope otherwise);
//! keeps connections and payments; records every request; and injects faults on demand.
//! `docs/payment-api.md` documents its behaviour and the choices made where the API's
//! documentation has gaps.

mod admin;
mod command;
mod state;

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, DATE, RETRY_AFTER};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::paywall::PaymentStatus;
pub use command::{run_command, CommandArgs};
pub use state::codes;
use state::{ApiReply, KeyPairKind, State};

/// Well-known keys of the simulator (not secrets: they open nothing but the simulator).
pub const DEMO_API_KEY_PRIVATE: &str = "sim-private-key-5d0f3c1e";
pub const DEMO_API_CLIENT_PRIVATE: &str = "sim-private-client-a94b27e8";
pub const DEMO_API_KEY_PUBLIC: &str = "sim-public-key-61c8e0d4";
pub const DEMO_API_CLIENT_PUBLIC: &str = "sim-public-client-f2b7a913";
/// The simulator's one terminal: its Paywall Guid and its tag code.
pub const DEMO_TERMINAL_ID: &str = "38e895c3-4f1d-4b6a-9c55-0d2e7a1b9f60";
pub const DEMO_TERMINAL_TAG_CODE: &str = "sim_pos_1";
/// The connection that exists from the start with [`SimulatorOptions::with_connection`]
/// (seed 000's example Id).
pub const DEMO_CONNECTION_ID: &str = "70b2190b-e47b-455f-b05e-8c132a055300";

/// How to start a simulator.
#[derive(Debug, Clone)]
pub struct SimulatorOptions {
    /// Where to listen; the default `127.0.0.1:0` picks a free port.
    pub listen: SocketAddr,
    pub api_key_private: String,
    pub api_client_private: String,
    pub api_key_public: String,
    pub api_client_public: String,
    /// Start with [`DEMO_CONNECTION_ID`] established, connected, and the terminal bound to it.
    pub with_connection: bool,
    /// Print one line per request to stderr (method, path, status; never a header value).
    pub log_requests: bool,
    /// Serve https with this certificate (for tests of certificates and of the clock); plain
    /// http when `None`.
    pub tls: Option<TlsIdentity>,
}

/// The certificate chain (DER, leaf first) and private key (PKCS#8 DER) the simulator serves
/// https with; [`ApiSimulator::url`] then names the host `localhost`.
#[derive(Clone)]
pub struct TlsIdentity {
    pub certificate_chain: Vec<Vec<u8>>,
    pub private_key: Vec<u8>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity").finish_non_exhaustive()
    }
}

impl TlsIdentity {
    fn acceptor(&self) -> io::Result<tokio_rustls::TlsAcceptor> {
        use tokio_rustls::rustls;
        let chain = self
            .certificate_chain
            .iter()
            .map(|der| rustls::pki_types::CertificateDer::from(der.clone()))
            .collect();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(self.private_key.clone().into());
        let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(io::Error::other)?;
        Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
    }
}

impl Default for SimulatorOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_key_private: DEMO_API_KEY_PRIVATE.into(),
            api_client_private: DEMO_API_CLIENT_PRIVATE.into(),
            api_key_public: DEMO_API_KEY_PUBLIC.into(),
            api_client_public: DEMO_API_CLIENT_PUBLIC.into(),
            with_connection: true,
            log_requests: false,
            tls: None,
        }
    }
}

/// A connection as the simulator keeps it. Service parameter values are never kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConnection {
    pub id: String,
    pub name: String,
    pub display_name: Option<String>,
    pub brand_id: i64,
    pub provider_id: i64,
    pub region_id: i64,
    pub end_of_day_id: i64,
    pub is_prod: bool,
    pub is_reporting: bool,
    pub is_async_payment: bool,
    pub is_socket_payment: bool,
    pub is_connected: bool,
    pub service_parameter_names: Vec<String>,
}

/// A terminal of the simulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimTerminal {
    pub id: String,
    pub tag_code: String,
    pub connection_id: Option<String>,
    pub provider_terminal_id: String,
    pub serial_no: String,
}

/// A payment as the simulator keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimPayment {
    pub payment_request_id: Uuid,
    pub merchant_unique_code: Uuid,
    pub terminal_id: String,
    pub connection_id: String,
    pub amount_minor: i64,
    pub currency_id: i64,
    pub display_code: Option<String>,
    pub callback_address: Option<String>,
    pub status: PaymentStatus,
    pub activity_id: Uuid,
    pub activity_type_id: i64,
    pub created_at: SystemTime,
}

/// One request as it arrived (recorded before any fault or latency is applied). Its `Debug`
/// hides the key headers and `ServiceParameters` values; the fields hold them as sent.
#[derive(Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Header names (lower case) and values, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The body as JSON, `None` when empty or not JSON.
    pub body: Option<Value>,
    pub raw_body: Vec<u8>,
    /// When it arrived.
    pub at: Instant,
}

impl RecordedRequest {
    /// The value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn header_names(&self) -> Vec<&str> {
        self.headers.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The top-level keys of a JSON object body, exactly as sent, sorted.
    pub fn body_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = match &self.body {
            Some(Value::Object(map)) => map.keys().cloned().collect(),
            _ => Vec::new(),
        };
        keys.sort();
        keys
    }

    pub fn is(&self, method: &str, path: &str) -> bool {
        self.method.eq_ignore_ascii_case(method) && self.path == path
    }
}

const AUTH_HEADERS: [&str; 4] = [
    "apikeyprivate",
    "apiclientprivate",
    "apikeypublic",
    "apiclientpublic",
];

impl std::fmt::Debug for RecordedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(n, v)| {
                let shown = if AUTH_HEADERS.contains(&n.as_str()) {
                    "[redacted]"
                } else {
                    v.as_str()
                };
                (n.as_str(), shown)
            })
            .collect();
        f.debug_struct("RecordedRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("headers", &headers)
            .field("body", &self.body.as_ref().map(redact_service_parameters))
            .finish()
    }
}

/// A copy of a body with the values of `ServiceParameters` (provider credentials) replaced.
fn redact_service_parameters(body: &Value) -> Value {
    let mut body = body.clone();
    if let Some(map) = body.as_object_mut() {
        for (key, value) in map.iter_mut() {
            if key.eq_ignore_ascii_case("serviceparameters") {
                if let Some(parameters) = value.as_object_mut() {
                    for v in parameters.values_mut() {
                        *v = Value::String("[redacted]".into());
                    }
                }
            }
        }
    }
    body
}

/// What a fault does to a matching request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// Wait this long, then answer normally.
    Latency(Duration),
    /// Answer HTTP 500 without carrying out the request.
    Status500,
    /// Answer 200 with a body that is not valid JSON, without carrying out the request.
    MalformedBody,
    /// Close the connection without any answer, without carrying out the request.
    CloseWithoutReply,
    /// Carry out the request (e.g. create the payment), then close the connection unanswered.
    CreateThenDropReply,
    /// Carry out the request, close the connection unanswered, and stop accepting connections
    /// (as [`ApiSimulator::set_refusing`]) until told otherwise: a payment created whose answer
    /// is lost while the API stays unreachable.
    CreateThenGoOffline,
    /// Accept the request and never answer it (a black hole behind a TCP-terminating proxy).
    BlackHole,
    /// Answer with exactly this status and body, without carrying out the request (for
    /// replaying the seeds' examples through real HTTP).
    Reply { status: u16, body: String },
    /// Answer `status` (429 or 503) with a failure envelope and this `Retry-After` value
    /// (delay-seconds or an HTTP date), without carrying out the request: a rate limit.
    RetryAfter { status: u16, value: String },
}

/// A fault for requests matching `method` and `path` (exact, or a prefix when it ends in `*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub method: String,
    pub path: String,
    pub kind: FaultKind,
    /// How many matching requests it applies to; `None` = every one until cleared.
    pub times: Option<usize>,
}

impl Fault {
    /// A fault for the next matching request.
    pub fn new(method: &str, path: &str, kind: FaultKind) -> Fault {
        Fault {
            method: method.to_ascii_uppercase(),
            path: path.to_owned(),
            kind,
            times: Some(1),
        }
    }

    /// Applies to the next `n` matching requests.
    pub fn times(mut self, n: usize) -> Fault {
        self.times = Some(n);
        self
    }

    /// Applies to every matching request until [`ApiSimulator::clear_faults`].
    pub fn always(mut self) -> Fault {
        self.times = None;
        self
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        let path_matches = match self.path.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => self.path == path,
        };
        (self.method == "*" || self.method.eq_ignore_ascii_case(method)) && path_matches
    }
}

struct Shared {
    options: SimulatorOptions,
    inner: Mutex<Inner>,
    arrivals: watch::Sender<u64>,
    /// False while the simulator refuses connections (its listening socket closed).
    online: watch::Sender<bool>,
}

struct Inner {
    state: State,
    requests: Vec<RecordedRequest>,
    faults: VecDeque<Fault>,
    latency: Duration,
    /// The private key pair accepted after [`ApiSimulator::rotate_private_keys`].
    rotated_private: Option<(String, String)>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        crate::sync::lock(&self.inner)
    }
}

/// A running simulator. Dropping it stops the server.
pub struct ApiSimulator {
    shared: Arc<Shared>,
    address: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for ApiSimulator {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl std::fmt::Debug for ApiSimulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiSimulator")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl ApiSimulator {
    /// Binds `options.listen` and serves on the caller's tokio runtime (any flavour). Must be
    /// called from within a runtime.
    pub fn start(options: SimulatorOptions) -> io::Result<ApiSimulator> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(io::Error::other(
                "the API simulator must be started inside a tokio runtime",
            ));
        }
        let listener = std::net::TcpListener::bind(options.listen)?;
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let address = listener.local_addr()?;
        let tls = options
            .tls
            .as_ref()
            .map(TlsIdentity::acceptor)
            .transpose()?;
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                state: State::new(options.with_connection),
                requests: Vec::new(),
                faults: VecDeque::new(),
                latency: Duration::ZERO,
                rotated_private: None,
            }),
            options,
            arrivals: watch::Sender::new(0),
            online: watch::Sender::new(true),
        });
        let server = tokio::spawn(serve(listener, tls, Arc::clone(&shared)));
        Ok(ApiSimulator {
            shared,
            address,
            server,
        })
    }

    /// The base URL, e.g. `http://127.0.0.1:40123` (for both `physical_api_url` and
    /// `payment_api_url`).
    pub fn url(&self) -> String {
        match self.shared.options.tls {
            Some(_) => format!("https://localhost:{}", self.address.port()),
            None => format!("http://{}", self.address),
        }
    }

    /// The `[paywall]` section of an agent configuration that talks to this simulator with
    /// the demo keys (the demo and the tests start agents on it).
    pub fn paywall_config_section(&self) -> String {
        format!(
            "[paywall]\nphysical_api_url = \"{url}\"\npayment_api_url = \"{url}\"\n\
             api_key_private = \"{DEMO_API_KEY_PRIVATE}\"\napi_client_private = \"{DEMO_API_CLIENT_PRIVATE}\"\n\
             api_key_public = \"{DEMO_API_KEY_PUBLIC}\"\napi_client_public = \"{DEMO_API_CLIENT_PUBLIC}\"\n\
             request_timeout = \"2s\"\nallow_insecure_http = true\n",
            url = self.url()
        )
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Every request recorded so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// The recorded requests with this method and path.
    pub fn requests_to(&self, method: &str, path: &str) -> Vec<RecordedRequest> {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.is(method, path))
            .cloned()
            .collect()
    }

    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// Waits until a request matching `predicate` has arrived (including one that arrived
    /// before the call) and returns it; `None` after `timeout`. Wakes on each arrival, no
    /// polling.
    pub async fn wait_for_request(
        &self,
        mut predicate: impl FnMut(&RecordedRequest) -> bool,
        timeout: Duration,
    ) -> Option<RecordedRequest> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut arrivals = self.shared.arrivals.subscribe();
        loop {
            if let Some(found) = self
                .shared
                .lock()
                .requests
                .iter()
                .find(|r| predicate(r))
                .cloned()
            {
                return Some(found);
            }
            match tokio::time::timeout_at(deadline, arrivals.changed()).await {
                Ok(Ok(())) => continue,
                _ => return None,
            }
        }
    }

    /// Adds a fault; faults are tried in the order they were added, one per request.
    pub fn inject(&self, fault: Fault) {
        self.shared.lock().faults.push_back(fault);
    }

    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// Refuses connections (`true`): the listening socket is closed and every open connection
    /// dropped, so a client gets "connection refused" and nothing it sends arrives. `false`
    /// listens again on the same address.
    pub fn set_refusing(&self, refusing: bool) {
        self.shared.online.send_replace(!refusing);
    }

    /// Whether the simulator refuses connections right now.
    pub fn is_refusing(&self) -> bool {
        !*self.shared.online.borrow()
    }

    /// Latency added to every request (before any fault).
    /// Rotates the private key pair: from now on only this pair is accepted, the old one is
    /// refused (HTTP 401), as after a rotation at the provider.
    pub fn rotate_private_keys(&self, key: &str, client: &str) {
        self.shared.lock().rotated_private = Some((key.to_owned(), client.to_owned()));
    }

    pub fn set_latency(&self, latency: Duration) {
        self.shared.lock().latency = latency;
    }

    pub fn payments(&self) -> Vec<SimPayment> {
        self.shared.lock().state.payments.clone()
    }

    pub fn payment(&self, payment_request_id: Uuid) -> Option<SimPayment> {
        self.shared
            .lock()
            .state
            .payments
            .iter()
            .find(|p| p.payment_request_id == payment_request_id)
            .cloned()
    }

    pub fn connections(&self) -> Vec<SimConnection> {
        self.shared.lock().state.connections.clone()
    }

    pub fn terminals(&self) -> Vec<SimTerminal> {
        self.shared.lock().state.terminals.clone()
    }

    /// Checkout page ids deactivated so far.
    pub fn deactivated_checkouts(&self) -> Vec<i64> {
        self.shared
            .lock()
            .state
            .deactivated_checkouts
            .iter()
            .copied()
            .collect()
    }

    /// A payment started by someone else (e.g. the merchant's back end) on the demo terminal,
    /// status "created". Returns its `PaymentRequestId`.
    pub fn create_payment_elsewhere(&self, merchant_unique_code: Uuid, amount_minor: i64) -> Uuid {
        let mut inner = self.shared.lock();
        let state = &mut inner.state;
        let terminal = state.terminals.first().cloned();
        let id = Uuid::new_v4();
        state.payments.push(SimPayment {
            payment_request_id: id,
            merchant_unique_code,
            terminal_id: terminal
                .as_ref()
                .map_or_else(|| DEMO_TERMINAL_ID.to_owned(), |t| t.id.clone()),
            connection_id: terminal
                .and_then(|t| t.connection_id)
                .unwrap_or_else(|| DEMO_CONNECTION_ID.to_owned()),
            amount_minor,
            currency_id: 1,
            display_code: None,
            callback_address: None,
            status: PaymentStatus::CREATED,
            activity_id: Uuid::new_v4(),
            activity_type_id: 1,
            created_at: SystemTime::now(),
        });
        id
    }

    /// Sets a payment's status (e.g. what the terminal reported). False if unknown.
    pub fn set_payment_status(&self, payment_request_id: Uuid, status: PaymentStatus) -> bool {
        let mut inner = self.shared.lock();
        match inner
            .state
            .payments
            .iter_mut()
            .find(|p| p.payment_request_id == payment_request_id)
        {
            Some(p) => {
                p.status = status;
                true
            }
            None => false,
        }
    }

    /// Makes `session_id` a linked Masterpass session, so that one unlink of it succeeds.
    /// Unlinking any other session answers like seed 002's failure example.
    pub fn link_masterpass_session(&self, session_id: Uuid) {
        self.shared
            .lock()
            .state
            .masterpass_sessions
            .insert(session_id);
    }
}

/// Closes the connection without an answer (hyper drops a connection whose service fails).
#[derive(Debug)]
struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped on purpose")
    }
}

impl std::error::Error for DropConnection {}

async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
) {
    let Ok(address) = listener.local_addr() else {
        return;
    };
    let mut listener = Some(listener);
    let mut online = shared.online.subscribe();
    // The connections live in this set, so stopping the server (aborting this task) drops them.
    let mut connections = JoinSet::new();
    loop {
        let want_online = *online.borrow_and_update();
        if want_online && listener.is_none() {
            listener = Some(listen_again(address).await);
        } else if !want_online && listener.is_some() {
            // Refusing: close the listening socket (the kernel now answers RST) and drop every
            // connection, so no request from before reaches the state either.
            listener = None;
            connections.abort_all();
        }
        tokio::select! {
            accepted = accept(listener.as_ref()) => match accepted {
                Ok(stream) => {
                    let shared = Arc::clone(&shared);
                    let tls = tls.clone();
                    connections.spawn(async move {
                        let service = hyper::service::service_fn(move |request| {
                            handle(Arc::clone(&shared), request)
                        });
                        let http = hyper::server::conn::http1::Builder::new();
                        match tls {
                            // A handshake the client refuses ends here, with nothing served.
                            Some(tls) => {
                                if let Ok(stream) = tls.accept(stream).await {
                                    let _ = http.serve_connection(TokioIo::new(stream), service).await;
                                }
                            }
                            None => {
                                let _ = http.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment, keep serving.
                    eprintln!("simulate-api: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = online.changed() => {}
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn accept(listener: Option<&tokio::net::TcpListener>) -> io::Result<tokio::net::TcpStream> {
    match listener {
        Some(listener) => listener.accept().await.map(|(stream, _)| stream),
        None => std::future::pending().await,
    }
}

/// Listens on `address` again after a time of refusing (the address the clients know).
async fn listen_again(address: SocketAddr) -> tokio::net::TcpListener {
    loop {
        let socket = if address.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        };
        let listener = socket.and_then(|socket| {
            socket.set_reuseaddr(true)?;
            socket.bind(address)?;
            socket.listen(1024)
        });
        match listener {
            Ok(listener) => return listener,
            Err(e) => {
                eprintln!("simulate-api: cannot listen on {address} again yet: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn json_response(status: u16, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

fn reply_response(reply: ApiReply) -> Response<Full<Bytes>> {
    json_response(reply.status, Bytes::from(reply.body.to_string()))
}

fn authorised(
    options: &SimulatorOptions,
    rotated_private: Option<&(String, String)>,
    path: &str,
    request: &RecordedRequest,
) -> bool {
    let (key_name, client_name, key, client) = match state::required_pair(path) {
        KeyPairKind::Private => match rotated_private {
            Some((key, client)) => ("apikeyprivate", "apiclientprivate", key, client),
            None => (
                "apikeyprivate",
                "apiclientprivate",
                &options.api_key_private,
                &options.api_client_private,
            ),
        },
        KeyPairKind::Public => (
            "apikeypublic",
            "apiclientpublic",
            &options.api_key_public,
            &options.api_client_public,
        ),
    };
    request.header(key_name) == Some(key.as_str())
        && request.header(client_name) == Some(client.as_str())
}

async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, DropConnection> {
    let (parts, body) = request.into_parts();
    let raw_body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Err(DropConnection),
    };
    let method = parts.method.as_str().to_owned();
    let path = parts.uri.path().to_owned();

    if let Some(admin_path) = path.strip_prefix("/_sim/") {
        let reply = admin::admin(&shared, &method, admin_path, &raw_body);
        return Ok(reply_response(reply));
    }

    let recorded = RecordedRequest {
        method: method.clone(),
        path: path.clone(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: serde_json::from_slice(&raw_body).ok(),
        raw_body: raw_body.to_vec(),
        at: Instant::now(),
    };
    let started = Instant::now();
    let rotated_private = shared.lock().rotated_private.clone();
    let authorised = authorised(&shared.options, rotated_private.as_ref(), &path, &recorded);
    let (fault, latency) = {
        let mut inner = shared.lock();
        inner.requests.push(recorded);
        let position = inner.faults.iter().position(|f| f.matches(&method, &path));
        let fault = position.and_then(|i| {
            let fault = inner.faults.get_mut(i)?;
            let kind = fault.kind.clone();
            if let Some(times) = fault.times.as_mut() {
                *times = times.saturating_sub(1);
                if *times == 0 {
                    inner.faults.remove(i);
                }
            }
            Some(kind)
        });
        (fault, inner.latency)
    };
    shared.arrivals.send_modify(|n| *n += 1);

    let log = |outcome: &str| {
        if shared.options.log_requests {
            eprintln!(
                "simulate-api: {method} {path} -> {outcome} ({} ms)",
                started.elapsed().as_millis()
            );
        }
    };

    let mut wait = latency;
    if let Some(FaultKind::Latency(extra)) = &fault {
        wait += *extra;
    }
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }

    if !authorised {
        log("401 (wrong or missing key pair)");
        let message = "The API key pair is missing or wrong.";
        let reply = if state::is_payment_api(&path) {
            ApiReply::payment_failure(401, codes::FAILURE, message)
        } else {
            ApiReply::physical_failure(401, codes::FAILURE, "Unauthorized", message)
        };
        return Ok(reply_response(reply));
    }

    match fault {
        Some(FaultKind::Status500) => {
            log("500 (injected)");
            let reply = if state::is_payment_api(&path) {
                ApiReply::payment_failure(500, codes::GENERAL, "Simulated internal error.")
            } else {
                ApiReply::physical_failure(
                    500,
                    codes::GENERAL,
                    "InternalError",
                    "Simulated internal error.",
                )
            };
            return Ok(reply_response(reply));
        }
        Some(FaultKind::MalformedBody) => {
            log("200 with a malformed body (injected)");
            return Ok(json_response(
                200,
                Bytes::from_static(
                    b"{\"Result\": {\"PaymentRequestId\": \"7cc7c8e8-9d92-41b6<html>",
                ),
            ));
        }
        Some(FaultKind::CloseWithoutReply) => {
            log("closed without a reply (injected)");
            return Err(DropConnection);
        }
        Some(FaultKind::Reply { status, body }) => {
            log(&format!("{status} canned reply (injected)"));
            return Ok(json_response(status, Bytes::from(body)));
        }
        Some(FaultKind::RetryAfter { status, value }) => {
            log(&format!("{status} with Retry-After: {value} (injected)"));
            let message = "Too many requests; try again later.";
            let reply = if state::is_payment_api(&path) {
                ApiReply::payment_failure(status, codes::GENERAL, message)
            } else {
                ApiReply::physical_failure(status, codes::GENERAL, "TooManyRequests", message)
            };
            let mut response = reply_response(reply);
            let now = httpdate::fmt_http_date(std::time::SystemTime::now());
            for (name, value) in [(RETRY_AFTER, value), (DATE, now)] {
                if let Ok(value) = HeaderValue::from_str(&value) {
                    response.headers_mut().insert(name, value);
                }
            }
            return Ok(response);
        }
        Some(FaultKind::BlackHole) => {
            log("accepted, never answered (injected)");
            std::future::pending::<()>().await;
        }
        Some(FaultKind::CreateThenGoOffline) => {
            let reply = shared.lock().state.handle(&method, &path, &raw_body);
            log(&format!(
                "carried out ({}), then closed without a reply and went offline (injected)",
                reply.status
            ));
            shared.online.send_replace(false);
            return Err(DropConnection);
        }
        Some(FaultKind::Latency(_)) | None => {}
        Some(FaultKind::CreateThenDropReply) => {
            let reply = shared.lock().state.handle(&method, &path, &raw_body);
            log(&format!(
                "carried out ({}), then closed without a reply (injected)",
                reply.status
            ));
            return Err(DropConnection);
        }
    }

    let reply = shared.lock().state.handle(&method, &path, &raw_body);
    log(&reply.status.to_string());
    Ok(reply_response(reply))
}
