//! [`PaywallClient`]: one typed async method per payment API call the agent makes
//! (docs/architecture.md, docs/payment-api.md §1). It sets the header pair each endpoint needs, reads
//! both envelopes, retries the calls that are safe to repeat with the agent's one retry policy
//! ([`RetryPolicy`]; docs/state.md), never repeats a sale, and traces each request at debug level with method,
//! path, status and timing (never a header value).

// Time and count arithmetic: docs/architecture.md, "Lint policy".
#![warn(clippy::arithmetic_side_effects)]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use backon::Retryable;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::answer;
use super::endpoint::{Api, Auth, Endpoint};
use super::error::{ApiError, ClientSetupError, TransportKind};
use super::retry_after::{self, Hold, SharedHold};
use super::types::*;
use crate::config::{
    BaseUrl, EstablishConfig, KeyPair, PaywallConfig, PaywallSettings, TerminalRef,
};
use crate::metrics::{ApiOutcome, METRICS};
use crate::retry::RetryPolicy;

/// A client of the PhysicalAPI and of the PaymentAPI unlink/deactivate calls. Cheap to clone:
/// clones share one connection pool.
#[derive(Clone)]
pub struct PaywallClient {
    inner: Arc<Inner>,
    retry: RetryPolicy,
    /// The API's latest `Retry-After`, while it lasts: nothing is sent until it ends.
    hold: SharedHold,
}

struct Inner {
    http: reqwest::Client,
    physical_base: String,
    payment_base: Option<String>,
    private: KeyPair,
    public: Option<KeyPair>,
    locale: Option<HeaderValue>,
    /// The key values, kept only to scrub them out of body excerpts.
    secrets: Vec<SecretString>,
    /// The proxy's `host:port`, when the client goes through one: a connection that cannot be
    /// made is the proxy's failure.
    proxy: Option<String>,
}

impl std::fmt::Debug for PaywallClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaywallClient")
            .field("physical_api_url", &self.inner.physical_base)
            .field("payment_api_url", &self.inner.payment_base)
            .field("private_keys", &"[redacted]")
            .field(
                "public_keys",
                &self.inner.public.as_ref().map(|_| "[redacted]"),
            )
            .field("retry", &self.retry)
            .finish()
    }
}

struct Call {
    endpoint: Endpoint,
    path: String,
    body: Option<Value>,
}

fn utc_date(time: SystemTime) -> String {
    let stamp = humantime::format_rfc3339_seconds(time).to_string();
    stamp.get(..10).unwrap_or("1970-01-01").to_owned()
}

/// The longest answer body read from the payment API; a longer one is an error
/// (docs/payment-api.md, "Bounds on answers"). A page of 100 payments is tens of kilobytes.
const MAX_RESPONSE_BYTES: usize = 2 << 20;

/// The most pages of the payments list one lookup of a merchant code reads: 20,000 payments
/// over its three days. An API that never ends the list ends the lookup here, unknown.
const MAX_LOOKUP_PAGES: u32 = 200;

/// The TLS error somewhere in an error's chain of causes (an `io::Error` hides its inner error
/// from `source()`, so it is looked into as well).
fn tls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cause = Some(e);
    while let Some(error) = cause {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(tls) = error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| tls_error(inner))
        {
            return Some(tls);
        }
        cause = error.source();
    }
    None
}

/// A refused certificate, said plainly: the system time for a time error (a terminal without
/// RTC boots with its clock in the past), the names for a name mismatch, the CA bundle for an
/// unknown issuer.
fn certificate_problem(error: &rustls::Error) -> Option<(TransportKind, String)> {
    use rustls::CertificateError as C;
    let rustls::Error::InvalidCertificate(certificate) = error else {
        return None;
    };
    let now = humantime::format_rfc3339_seconds(SystemTime::now());
    let (kind, what) = match certificate {
        C::NotValidYet | C::NotValidYetContext { .. } => (
            TransportKind::CertificateTime,
            format!("the certificate is not valid yet at the system time {now}: the clock is probably behind (no RTC, or not synchronised yet)"),
        ),
        C::Expired | C::ExpiredContext { .. } => (
            TransportKind::CertificateTime,
            format!("the certificate has expired at the system time {now} (or the clock is ahead)"),
        ),
        C::NotValidForName | C::NotValidForNameContext { .. } => (
            TransportKind::Certificate,
            "the certificate is not valid for the host name of the configured URL".to_owned(),
        ),
        C::UnknownIssuer => (
            TransportKind::Certificate,
            "the certificate is not signed by a CA in the trusted bundle (SSL_CERT_FILE, else the system's)".to_owned(),
        ),
        _ => (TransportKind::Certificate, "the certificate was refused".to_owned()),
    };
    Some((kind, format!("{what}; {certificate}")))
}

fn transport_error(
    endpoint: Endpoint,
    idempotent: bool,
    proxy: Option<&str>,
    e: &reqwest::Error,
) -> ApiError {
    if let Some((kind, detail)) = tls_error(e).and_then(certificate_problem) {
        return ApiError::Transport {
            endpoint,
            kind,
            detail,
            // The handshake failed: nothing was sent.
            outcome_unknown: false,
        };
    }
    let kind = if e.is_connect() && proxy.is_some() {
        TransportKind::Proxy
    } else if e.is_connect() {
        TransportKind::Connect
    } else if e.is_timeout() {
        TransportKind::Timeout
    } else {
        TransportKind::ConnectionLost
    };
    // The innermost cause says what happened ("connection refused", "connection closed before
    // message completed"); reqwest's own text adds only the URL, which the operation names.
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        detail = cause.to_string();
        source = cause.source();
    }
    if let (TransportKind::Proxy, Some(proxy)) = (kind, proxy) {
        detail = format!("proxy {proxy}: {detail}");
    }
    ApiError::Transport {
        endpoint,
        kind,
        detail,
        // Nothing was sent when the connection could not be made.
        outcome_unknown: !idempotent
            && !matches!(kind, TransportKind::Connect | TransportKind::Proxy),
    }
}

impl PaywallClient {
    /// Builds a client from `[paywall]` for a caller that did not load a configuration (tests,
    /// tools): checks it as loading does ([`PaywallSettings::from_config`]), then [`Self::new`].
    pub fn from_config(config: &PaywallConfig) -> Result<Self, ClientSetupError> {
        let settings = PaywallSettings::from_config(config).map_err(|problems| {
            ClientSetupError::InvalidSettings(
                problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        Self::new(&settings)
    }

    /// Builds a client from the checked `[paywall]` settings (docs/configuration.md). Fails only
    /// when the HTTP client cannot be built: no CA bundle to check an https address with.
    pub fn new(settings: &PaywallSettings) -> Result<Self, ClientSetupError> {
        let mut http = reqwest::Client::builder();
        let payment_https = settings
            .payment_api_url
            .as_ref()
            .is_some_and(BaseUrl::is_https);
        if settings.physical_api_url.is_https() || payment_https {
            for certificate in system_trust_anchors(std::env::var_os("SSL_CERT_FILE"))? {
                http = http.add_root_certificate(certificate);
            }
        }
        // The agent chose the proxy (config::ProxySetting); reqwest's own reading of the
        // environment is turned off so that it cannot differ.
        http = match &settings.proxy {
            Some(proxy) => {
                let no_proxy = proxy
                    .no_proxy
                    .as_deref()
                    .and_then(reqwest::NoProxy::from_string);
                let via = reqwest::Proxy::all(proxy.url.expose_secret()).map_err(|_| {
                    ClientSetupError::Http(format!("the proxy {} cannot be used", proxy.host))
                })?;
                http.proxy(via.no_proxy(no_proxy))
            }
            None => http.no_proxy(),
        };
        let http = http
            .timeout(settings.request_timeout)
            .connect_timeout(settings.request_timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("pos-agent/", env!("CARGO_PKG_VERSION")))
            .https_only(!settings.allow_insecure_http)
            // A redirect would carry the key headers to wherever it points: never follow one.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ClientSetupError::Http(e.to_string()))?;

        Ok(PaywallClient {
            inner: Arc::new(Inner {
                http,
                physical_base: settings.physical_api_url.as_str().to_owned(),
                payment_base: settings
                    .payment_api_url
                    .as_ref()
                    .map(|url| url.as_str().to_owned()),
                private: settings.private.clone(),
                public: settings.public.clone(),
                locale: settings.locale.clone(),
                secrets: settings.secrets.clone(),
                proxy: settings.proxy.as_ref().map(|proxy| proxy.host.clone()),
            }),
            retry: RetryPolicy::default(),
            hold: SharedHold::default(),
        })
    }

    /// The same client sharing `other`'s `Retry-After` hold: a reload's new client honours
    /// the wait the API asked of the old one.
    pub fn sharing_hold_of(mut self, other: &PaywallClient) -> Self {
        self.hold = other.hold.clone();
        self
    }

    /// The wait the payment API asked for with its latest `Retry-After`, while it lasts
    /// (docs/payment-api.md, "Retry-After"): until it ends, every call fails at once, not sent
    /// ([`ApiError::Held`]).
    pub fn held(&self) -> Option<Hold> {
        self.hold.current()
    }

    /// The same client with another retry policy (short budgets for tests and for shutdown).
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    // ---- PhysicalAPI: connection (docs/payment-api.md (Methods)) ----

    /// `POST /api/connection`. Returns the new connection's `Id`, read from `Result.Id` (or a
    /// bare string `Result`). Not retried: a lost answer may have created a connection.
    pub async fn establish_connection(
        &self,
        establish: &EstablishConfig,
    ) -> Result<String, ApiError> {
        let body = self.connection_body(establish);
        let result: Value = self
            .run(Call::new(
                Endpoint::EstablishConnection,
                "/api/connection".into(),
                Some(body),
            ))
            .await?;
        answer::establish_id(result)
    }

    /// `PUT /api/connection/reconnect` with `{"Id"}`: re-activates a disconnected connection.
    pub async fn reconnect(&self, connection_id: &str) -> Result<(), ApiError> {
        self.connection_command(
            Endpoint::Reconnect,
            "/api/connection/reconnect",
            connection_id,
        )
        .await
    }

    /// `PUT /api/connection/disconnect` with `{"Id"}` (seed 000): deactivates the connection.
    pub async fn disconnect(&self, connection_id: &str) -> Result<(), ApiError> {
        self.connection_command(
            Endpoint::Disconnect,
            "/api/connection/disconnect",
            connection_id,
        )
        .await
    }

    // ---- PhysicalAPI: payment (docs/payment-api.md (Methods)) ----

    /// `POST /api/payment/async/sale`. Sent exactly once, never retried: when the error says
    /// [`ApiError::outcome_unknown`], resolve it with [`Self::find_payment_by_merchant_code`].
    pub async fn sale(&self, sale: &SaleRequest) -> Result<SaleAccepted, ApiError> {
        const OP: Endpoint = Endpoint::Sale;
        let invalid = |reason: String| ApiError::InvalidRequest {
            endpoint: OP,
            reason,
        };
        let mut body = Map::new();
        match &sale.terminal {
            TerminalRef::Id(id) => body.insert("TerminalId".into(), json!(id.as_str())),
            TerminalRef::TagCode(tag) => body.insert("TerminalTagCode".into(), json!(tag.as_str())),
        };
        body.insert(
            "MerchantUniqueCode".into(),
            json!(sale.merchant_unique_code),
        );
        if sale.amount_minor <= 0 {
            return Err(invalid(format!(
                "the amount must be positive (got {} minor units)",
                sale.amount_minor
            )));
        }
        let amount = amount::minor_to_decimal(sale.amount_minor)
            .ok_or_else(|| invalid(format!("the amount {} is too large", sale.amount_minor)))?;
        body.insert("Amount".into(), Value::Number(amount));
        body.insert("CurrencyId".into(), json!(sale.currency_id));
        // Their lengths are checked where they enter: the display code when the terminal's
        // request is read, the callback address when the configuration is loaded.
        if let Some(display) = &sale.display_code {
            body.insert("DisplayCode".into(), json!(display));
        }
        if let Some(callback) = &sale.callback_address {
            body.insert("CallbackAddress".into(), json!(callback));
        }
        self.run(Call::new(
            Endpoint::Sale,
            "/api/payment/async/sale".into(),
            Some(Value::Object(body)),
        ))
        .await
    }

    /// `POST /api/payment/async/cancel` with `{"PaymentRequestId"}` (seed 004). Retried.
    pub async fn cancel(&self, payment_request_id: Uuid) -> Result<CancelAccepted, ApiError> {
        self.run(Call::new(
            Endpoint::Cancel,
            "/api/payment/async/cancel".into(),
            Some(json!({ "PaymentRequestId": payment_request_id })),
        ))
        .await
    }

    /// `POST /api/payment/list` with `{pageIndex, pageSize, startDate, endDate}` (UTC days).
    pub async fn list_payments(
        &self,
        query: &PaymentListQuery,
    ) -> Result<Page<PaymentSummary>, ApiError> {
        let body = json!({
            "pageIndex": query.page.index,
            "pageSize": query.page.size,
            "startDate": utc_date(query.start),
            "endDate": utc_date(query.end),
        });
        let wire: PageWire<PaymentSummary> = self
            .run(Call::new(
                Endpoint::ListPayments,
                "/api/payment/list".into(),
                Some(body),
            ))
            .await?;
        Ok(wire.into())
    }

    /// Resolves a sale whose answer was lost (docs/state.md): pages through the payments list over
    /// the UTC days from one day before to one day after `created_around`, and returns the
    /// payment with this `MerchantUniqueCode`, or `None` when the whole window has been read
    /// without finding it. Each page is retried; any error means "still unknown", never "absent".
    pub async fn find_payment_by_merchant_code(
        &self,
        merchant_unique_code: Uuid,
        created_around: SystemTime,
    ) -> Result<Option<PaymentSummary>, ApiError> {
        const DAY: Duration = Duration::from_secs(24 * 60 * 60);
        const PAGE_SIZE: u32 = 100;
        let start = created_around
            .checked_sub(DAY)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let end = created_around.checked_add(DAY).unwrap_or(created_around);
        let mut seen: u64 = 0;
        for index in 0..MAX_LOOKUP_PAGES {
            let page = self
                .list_payments(&PaymentListQuery {
                    page: PageRequest {
                        index,
                        size: PAGE_SIZE,
                    },
                    start,
                    end,
                })
                .await?;
            let fetched = page.items.len() as u64;
            seen = seen.saturating_add(fetched);
            if let Some(found) = page
                .items
                .into_iter()
                .find(|p| p.merchant_unique_code == Some(merchant_unique_code))
            {
                return Ok(Some(found));
            }
            let last_page = fetched < u64::from(PAGE_SIZE)
                || page.total_count.is_some_and(|total| seen >= total);
            if last_page {
                return Ok(None);
            }
        }
        Err(ApiError::Undecodable {
            endpoint: Endpoint::ListPayments,
            reason: format!(
                "the payments list went on past {MAX_LOOKUP_PAGES} pages without its end; the \
                 sale's outcome stays unknown"
            ),
            excerpt: String::new(),
            outcome_unknown: false,
        })
    }

    // ---- PaymentAPI (docs/payment-api.md (Methods), seeds 001-003) ----

    /// `POST /api/paywall/apm/unlink` with the public pair and `{"Phone", "ApmConnectionId",
    /// "ApmKey"}` (the unused one `null`, as in seed 001). Retried (unlinking is idempotent).
    pub async fn apm_unlink(
        &self,
        phone: &str,
        target: ApmTarget,
    ) -> Result<ApmUnlinked, ApiError> {
        const OP: Endpoint = Endpoint::ApmUnlink;
        if phone.trim().is_empty() {
            return Err(ApiError::InvalidRequest {
                endpoint: OP,
                reason: "the phone number is empty".into(),
            });
        }
        let (connection_id, key) = match target {
            ApmTarget::Key(key) => (Value::Null, json!(key)),
            ApmTarget::ConnectionId(id) => (json!(id), Value::Null),
        };
        let body =
            json!({ "Phone": phone.trim(), "ApmConnectionId": connection_id, "ApmKey": key });
        let body: Option<ApmUnlinked> = self
            .run(Call::new(
                Endpoint::ApmUnlink,
                "/api/paywall/apm/unlink".into(),
                Some(body),
            ))
            .await?;
        Ok(answer::apm_unlinked(body))
    }

    /// `DELETE /api/paywall/masterpass/merchant/unlink` with the private pair and
    /// `{"SessionId"}`. Succeeds only when `Body.Masterpass.StatusCode` is 2xx (seed 002).
    pub async fn masterpass_unlink(
        &self,
        session_id: Uuid,
    ) -> Result<MasterpassUnlinked, ApiError> {
        let body: Value = self
            .run(Call::new(
                Endpoint::MasterpassUnlink,
                "/api/paywall/masterpass/merchant/unlink".into(),
                Some(json!({ "SessionId": session_id })),
            ))
            .await?;
        Ok(MasterpassUnlinked::from_body(&body))
    }

    /// `PUT /api/paywall/checkout/passive` with the public pair and `{"Id"}` (seed 003).
    pub async fn checkout_deactivate(&self, checkout_id: i64) -> Result<(), ApiError> {
        let _: IgnoredAny = self
            .run(Call::new(
                Endpoint::CheckoutDeactivate,
                "/api/paywall/checkout/passive".into(),
                Some(json!({ "Id": checkout_id })),
            ))
            .await?;
        Ok(())
    }

    // ---- machinery ----

    async fn connection_command(
        &self,
        endpoint: Endpoint,
        path: &str,
        connection_id: &str,
    ) -> Result<(), ApiError> {
        if connection_id.trim().is_empty() {
            return Err(ApiError::InvalidRequest {
                endpoint,
                reason: "the connection id is empty".into(),
            });
        }
        let _: IgnoredAny = self
            .run(Call::new(
                endpoint,
                path.into(),
                Some(json!({ "Id": connection_id.trim() })),
            ))
            .await?;
        Ok(())
    }

    fn connection_body(&self, e: &EstablishConfig) -> Value {
        // The name's and display name's lengths are checked when the configuration is loaded.
        let service_parameters: Map<String, Value> = e
            .service_parameters
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.expose_secret().to_owned())))
            .collect();
        let mut body = Map::new();
        body.insert("Name".into(), json!(e.name));
        body.insert("DisplayName".into(), json!(e.display_name));
        body.insert("BrandId".into(), json!(e.brand_id));
        body.insert("ProviderId".into(), json!(e.provider_id));
        body.insert("RegionId".into(), json!(e.region_id));
        body.insert("EndOfDayId".into(), json!(e.end_of_day_id));
        body.insert("IsProd".into(), json!(e.is_prod));
        body.insert("IsReporting".into(), json!(e.is_reporting));
        body.insert("IsAsyncPayment".into(), json!(e.is_async_payment));
        body.insert("IsSocketPayment".into(), json!(e.is_socket_payment));
        body.insert(
            "ServiceParameters".into(),
            Value::Object(service_parameters),
        );
        Value::Object(body)
    }

    /// Runs a call (retried when it is idempotent) and reads its payload as `T`. Only the
    /// reading is generic: the exchange and its retries exist once in the binary.
    async fn run<T: DeserializeOwned>(&self, call: Call) -> Result<T, ApiError> {
        let (status, bytes, started) = self.exchange_retried(&call).await?;
        let decoded = self.decode(&call, status, &bytes);
        record(
            call.endpoint,
            &decoded.as_ref().map(|_| ()),
            started.elapsed(),
        );
        decoded
    }

    /// Sends the call until it gets a 2xx answer (retried when it is idempotent; only an
    /// exchange can fail in a way worth repeating: a 2xx that cannot be read is not retried).
    async fn exchange_retried(
        &self,
        call: &Call,
    ) -> Result<(StatusCode, Vec<u8>, Instant), ApiError> {
        let attempt = move || async move { self.exchange(call).await };
        if call.endpoint.idempotent() && self.retry.max_retries > 0 {
            attempt
                .retry(self.retry.backoff())
                .sleep(crate::boot_clock::sleep)
                // An answer with a Retry-After goes back to the caller's loop, which waits it
                // out (a call made meanwhile is not sent at all).
                .when(|e: &ApiError| e.is_retryable() && e.retry_after().is_none())
                .notify(|e: &ApiError, wait: Duration| {
                    tracing::warn!(
                        operation = call.operation(),
                        retry_in_ms = wait.as_millis() as u64,
                        "payment API call {} failed, retrying in {} ms: {e}",
                        call.operation(),
                        wait.as_millis()
                    );
                })
                .await
        } else {
            attempt().await
        }
    }

    fn headers(&self, call: &Call) -> Result<HeaderMap, ApiError> {
        let (pair, names) = match call.endpoint.auth() {
            Auth::Private => (&self.inner.private, ("apikeyprivate", "apiclientprivate")),
            Auth::Public => match &self.inner.public {
                Some(pair) => (pair, ("apikeypublic", "apiclientpublic")),
                None => {
                    return Err(ApiError::NotConfigured {
                        endpoint: call.endpoint,
                        key: "paywall.api_key_public / paywall.api_client_public",
                    })
                }
            },
        };
        let mut headers = HeaderMap::new();
        headers.insert(HeaderName::from_static(names.0), pair.key.clone());
        headers.insert(HeaderName::from_static(names.1), pair.client.clone());
        if let Some(locale) = &self.inner.locale {
            headers.insert(HeaderName::from_static("locale"), locale.clone());
        }
        if call.body.is_some() {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        Ok(headers)
    }

    /// One exchange: a 2xx answer's status and body, and when it began (for the metrics of
    /// the reading); any failure is counted in the metrics here.
    async fn exchange(&self, call: &Call) -> Result<(StatusCode, Vec<u8>, Instant), ApiError> {
        if let Some(hold) = self.hold.current() {
            return Err(ApiError::Held {
                endpoint: call.endpoint,
                http_status: hold.http_status,
                remaining: hold.remaining(),
            });
        }
        let base = match call.endpoint.api() {
            Api::Physical => &self.inner.physical_base,
            Api::Payment => self
                .inner
                .payment_base
                .as_ref()
                .ok_or(ApiError::NotConfigured {
                    endpoint: call.endpoint,
                    key: "paywall.payment_api_url",
                })?,
        };
        let mut request = self
            .inner
            .http
            .request(call.endpoint.method(), format!("{base}{}", call.path))
            .headers(self.headers(call)?);
        if let Some(body) = &call.body {
            request = request.body(body.to_string());
        }

        let started = Instant::now();
        let outcome = async {
            let mut response = request.send().await?;
            let status = response.status();
            let retry_after = retry_after_of(status, response.headers());
            let mut bytes = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                if bytes.len().saturating_add(chunk.len()) > MAX_RESPONSE_BYTES {
                    return Ok((status, retry_after, None));
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok::<_, reqwest::Error>((status, retry_after, Some(bytes)))
        }
        .await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let method = call.endpoint.method();
        let (status, retry_after, bytes) = match outcome {
            Ok(answer) => answer,
            Err(e) => {
                let error = transport_error(
                    call.endpoint,
                    call.endpoint.idempotent(),
                    self.inner.proxy.as_deref(),
                    &e,
                );
                record(call.endpoint, &Err(&error), started.elapsed());
                tracing::debug!(method = %method, path = %call.path, elapsed_ms, "payment API request {} {} failed after {elapsed_ms} ms: {error}", method, call.path);
                return Err(error);
            }
        };
        tracing::debug!(method = %method, path = %call.path, status = status.as_u16(), elapsed_ms, "payment API request {} {}: {} in {elapsed_ms} ms", method, call.path, status.as_u16());
        if let Some(wait) = retry_after {
            self.hold.hold(status.as_u16(), wait);
        }
        let failed = match bytes {
            None => ApiError::Undecodable {
                endpoint: call.endpoint,
                reason: format!(
                    "the answer is longer than {} MiB; not read",
                    MAX_RESPONSE_BYTES >> 20
                ),
                excerpt: String::new(),
                outcome_unknown: !call.endpoint.idempotent(),
            },
            Some(bytes) if status.is_success() => return Ok((status, bytes, started)),
            Some(bytes) => {
                answer::status_error(call.endpoint, &self.secrets(), status, &bytes, retry_after)
            }
        };
        record(call.endpoint, &Err(&failed), started.elapsed());
        Err(failed)
    }

    fn decode<T: DeserializeOwned>(
        &self,
        call: &Call,
        status: StatusCode,
        body: &[u8],
    ) -> Result<T, ApiError> {
        answer::decode(call.endpoint, &self.secrets(), status, body)
    }

    /// The key values, to scrub out of body excerpts.
    fn secrets(&self) -> Vec<&str> {
        self.inner
            .secrets
            .iter()
            .map(|s| s.expose_secret())
            .collect()
    }
}

/// What the `Retry-After` of a 429 or 503 answer asks (docs/payment-api.md, "Retry-After");
/// other statuses' is not advice about the agent's pace.
fn retry_after_of(status: StatusCode, headers: &HeaderMap) -> Option<Duration> {
    if status != StatusCode::TOO_MANY_REQUESTS && status != StatusCode::SERVICE_UNAVAILABLE {
        return None;
    }
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    retry_after::parse(
        text(reqwest::header::RETRY_AFTER)?,
        text(reqwest::header::DATE),
        SystemTime::now(),
    )
}

/// Counts one attempt in the metrics (docs/operations.md, "Metrics").
fn record(endpoint: Endpoint, result: &Result<(), &ApiError>, elapsed: Duration) {
    let outcome = match result {
        Ok(()) => ApiOutcome::Ok,
        Err(ApiError::Rejected { .. }) => ApiOutcome::Rejected,
        Err(ApiError::Status { status, .. }) if *status < 500 => ApiOutcome::ClientError,
        Err(ApiError::Status { .. }) => ApiOutcome::ServerError,
        Err(error @ ApiError::Transport { .. }) if error.was_not_sent() => ApiOutcome::NotSent,
        Err(ApiError::Undecodable { .. }) => ApiOutcome::Undecodable,
        Err(_) => ApiOutcome::Transport,
    };
    METRICS.api_request(endpoint.index(), outcome, elapsed);
}

impl Call {
    fn new(endpoint: Endpoint, path: String, body: Option<Value>) -> Call {
        Call {
            endpoint,
            path,
            body,
        }
    }

    fn operation(&self) -> &'static str {
        self.endpoint.operation()
    }
}

/// Where Linux distributions keep the PEM bundle of trusted CAs (Debian, Fedora, Alpine/others).
pub const CA_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// The CAs an https payment API is checked against: the system's bundle (`SSL_CERT_FILE` when
/// set, else the first of [`CA_BUNDLES`] that exists). The terminal's own CA store is used
/// rather than a list compiled in, so the binary stays small and CAs follow the system's
/// updates.
pub fn system_trust_anchors(
    ssl_cert_file: Option<std::ffi::OsString>,
) -> Result<Vec<reqwest::Certificate>, ClientSetupError> {
    let path = match ssl_cert_file.filter(|p| !p.is_empty()) {
        Some(path) => std::path::PathBuf::from(path),
        None => CA_BUNDLES
            .iter()
            .map(std::path::PathBuf::from)
            .find(|p| p.is_file())
            .ok_or_else(|| ClientSetupError::NoTrustAnchors {
                reason: format!("none of {} exists", CA_BUNDLES.join(", ")),
            })?,
    };
    let unusable = |why: String| ClientSetupError::NoTrustAnchors {
        reason: format!("{}: {why}", path.display()),
    };
    let pem = std::fs::read(&path).map_err(|e| unusable(e.to_string()))?;
    let certificates =
        reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| unusable(e.to_string()))?;
    if certificates.is_empty() {
        return Err(unusable("no certificate in it".into()));
    }
    Ok(certificates)
}

#[cfg(test)]
mod tests {

    fn fixture(name: &str) -> std::ffi::OsString {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
            .into_os_string()
    }

    #[test]
    fn trust_anchors_come_from_the_bundle_ssl_cert_file_names() {
        let anchors = system_trust_anchors(Some(fixture("ca-isrg-root-x1.pem"))).unwrap();
        assert_eq!(anchors.len(), 1);
    }

    #[test]
    fn a_missing_or_empty_bundle_is_an_error_naming_it() {
        let missing = system_trust_anchors(Some("/nonexistent/ca.pem".into())).unwrap_err();
        assert!(
            missing.to_string().contains("/nonexistent/ca.pem"),
            "{missing}"
        );
        assert!(missing.to_string().contains("SSL_CERT_FILE"), "{missing}");
        let not_pem = system_trust_anchors(Some(fixture("README.md"))).unwrap_err();
        assert!(not_pem.to_string().contains("README.md"), "{not_pem}");
    }

    use super::*;

    fn config(url: &str) -> PaywallConfig {
        PaywallConfig {
            physical_api_url: url.into(),
            payment_api_url: None,
            api_key_private: Some(SecretString::from("k")),
            api_client_private: Some(SecretString::from("c")),
            api_key_public: None,
            api_client_public: None,
            request_timeout: Duration::from_secs(1),
            locale: None,
            allow_insecure_http: false,
        }
    }

    #[test]
    fn plain_http_needs_the_explicit_switch() {
        let err = PaywallClient::from_config(&config("http://127.0.0.1:1")).unwrap_err();
        assert!(
            err.to_string().contains("paywall.physical_api_url"),
            "{err}"
        );
        let mut allowed = config("http://127.0.0.1:1");
        allowed.allow_insecure_http = true;
        assert!(PaywallClient::from_config(&allowed).is_ok());
        assert!(PaywallClient::from_config(&config("https://api.example")).is_ok());
    }

    #[test]
    fn missing_private_key_names_the_key() {
        let mut c = config("https://api.example");
        c.api_client_private = None;
        let err = PaywallClient::from_config(&c).unwrap_err();
        assert!(
            err.to_string().contains("paywall.api_client_private"),
            "{err}"
        );
    }

    #[test]
    fn half_a_public_pair_is_refused() {
        let mut c = config("https://api.example");
        c.api_key_public = Some(SecretString::from("p"));
        let err = PaywallClient::from_config(&c).unwrap_err();
        assert!(
            err.to_string().contains("paywall.api_client_public"),
            "{err}"
        );
    }

    #[test]
    fn dates_are_utc_days() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_735_000_000);
        assert_eq!(utc_date(t), "2024-12-24");
    }
}
