//! The simulator's memory (connections, terminals, payments, Masterpass sessions) and what each
//! endpoint does to it. Pure functions of the state and the request, so the server around them
//! (`mod.rs`) only deals with HTTP and faults. Answers use the seeds' envelopes and casing;
//! choices made where the reference has gaps are listed in `docs/payment-api.md`.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use uuid::Uuid;

use crate::paywall::envelope::lowercase_keys;
use crate::paywall::{amount, PaymentStatus};

use super::{
    SimConnection, SimPayment, SimTerminal, DEMO_CONNECTION_ID, DEMO_TERMINAL_ID,
    DEMO_TERMINAL_TAG_CODE,
};

/// Error codes and client messages of the simulator's failure envelopes. The numbers follow
/// Paywall's PaymentAPI error-code list where it has one (docs/payment-api.md (Reading the answers)).
pub mod codes {
    pub const GENERAL: i64 = -1;
    pub const FAILURE: i64 = 1;
    pub const UNEXPECTED_PARAMETERS: i64 = 2;
    pub const DUPLICATE_MERCHANT_UNIQUE_CODE: i64 = 4;
    pub const PAYMENT_ALREADY_COMPLETED: i64 = 7;
    pub const PROVIDER_NOT_CONNECTED: i64 = 24;
}

/// An HTTP answer: status and JSON body.
pub(crate) struct ApiReply {
    pub status: u16,
    pub body: Value,
}

impl ApiReply {
    /// PhysicalAPI success, PascalCase (terminal list, connection detail, sale).
    fn physical(result: Value) -> ApiReply {
        ApiReply {
            status: 200,
            body: json!({"Result": result, "Failed": false, "Message": null, "ClientMessage": null, "Succeeded": true}),
        }
    }

    /// PhysicalAPI success, camelCase (seed 000: disconnect, delete, reconnect; seed 004: cancel).
    fn physical_camel(result: Value) -> ApiReply {
        ApiReply {
            status: 200,
            body: json!({"result": result, "failed": false, "message": null, "clientMessage": null, "succeeded": true}),
        }
    }

    pub(crate) fn physical_failure(
        status: u16,
        code: i64,
        client_message: &str,
        message: &str,
    ) -> ApiReply {
        ApiReply {
            status,
            body: json!({"Result": null, "ErrorCode": code, "Failed": true, "Message": message, "ClientMessage": client_message, "Succeeded": false}),
        }
    }

    fn payment(body: Value) -> ApiReply {
        ApiReply {
            status: 200,
            body: json!({"ErrorCodeType": 1, "ErrorMessage": null, "ErrorCode": 0, "Result": true, "Message": "", "Body": body}),
        }
    }

    pub(crate) fn payment_failure(status: u16, code: i64, message: &str) -> ApiReply {
        ApiReply {
            status,
            body: json!({"ErrorCodeType": 1, "ErrorMessage": message, "ErrorCode": code, "Result": false, "Message": message, "Body": null}),
        }
    }

    fn bad_parameters(message: &str) -> ApiReply {
        ApiReply::physical_failure(
            200,
            codes::UNEXPECTED_PARAMETERS,
            "UnexpectedParameters",
            message,
        )
    }
}

/// Which header pair an endpoint wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyPairKind {
    Private,
    Public,
}

/// The header pair `path` needs: public for APM unlink and checkout passive (seeds 001, 003),
/// private for everything else (PhysicalAPI, seed 002).
pub(crate) fn required_pair(path: &str) -> KeyPairKind {
    match path.trim_end_matches('/') {
        "/api/paywall/apm/unlink" | "/api/paywall/checkout/passive" => KeyPairKind::Public,
        _ => KeyPairKind::Private,
    }
}

/// True for PaymentAPI paths, whose answers use the PaymentAPI envelope.
pub(crate) fn is_payment_api(path: &str) -> bool {
    path.starts_with("/api/paywall/")
}

pub(crate) struct State {
    pub connections: Vec<SimConnection>,
    pub terminals: Vec<SimTerminal>,
    pub payments: Vec<SimPayment>,
    pub masterpass_sessions: BTreeSet<Uuid>,
    pub deactivated_checkouts: BTreeSet<i64>,
    pub apm_unlinks: Vec<(String, Option<String>, Option<i64>)>,
}

impl State {
    pub(crate) fn new(with_connection: bool) -> State {
        let mut connections = Vec::new();
        if with_connection {
            connections.push(SimConnection {
                id: DEMO_CONNECTION_ID.into(),
                name: "demo connection".into(),
                display_name: Some("Demo".into()),
                brand_id: 10,
                provider_id: 10,
                region_id: 1,
                end_of_day_id: 10,
                is_prod: false,
                is_reporting: false,
                is_async_payment: true,
                is_socket_payment: false,
                is_connected: true,
                service_parameter_names: vec!["Reporting_ApiKey".into()],
            });
        }
        State {
            connections,
            terminals: vec![SimTerminal {
                id: DEMO_TERMINAL_ID.into(),
                tag_code: DEMO_TERMINAL_TAG_CODE.into(),
                connection_id: with_connection.then(|| DEMO_CONNECTION_ID.to_owned()),
                provider_terminal_id: "10177".into(),
                serial_no: "PAV960000015-sim".into(),
            }],
            payments: Vec::new(),
            masterpass_sessions: BTreeSet::new(),
            deactivated_checkouts: BTreeSet::new(),
            apm_unlinks: Vec::new(),
        }
    }

    /// Carries out one API request (already authenticated) and returns the answer.
    pub(crate) fn handle(&mut self, method: &str, path: &str, body: &[u8]) -> ApiReply {
        let parsed = if body.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            match serde_json::from_slice::<Value>(body) {
                Ok(v) => lowercase_keys(v),
                Err(_) => {
                    let message = "The request body is not valid JSON.";
                    return if is_payment_api(path) {
                        ApiReply::payment_failure(400, codes::UNEXPECTED_PARAMETERS, message)
                    } else {
                        ApiReply::physical_failure(
                            400,
                            codes::UNEXPECTED_PARAMETERS,
                            "UnexpectedParameters",
                            message,
                        )
                    };
                }
            }
        };
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (method, segments.as_slice()) {
            ("POST", ["api", "connection"]) => self.establish(&parsed),
            ("PUT", ["api", "connection"]) => self.update(&parsed),
            ("DELETE", ["api", "connection"]) => self.delete(&parsed),
            ("GET", ["api", "connection", id, "detail"]) => self.detail(id),
            ("POST", ["api", "connection", "list"]) => {
                let items: Vec<Value> = self.connections.iter().map(connection_json).collect();
                page_reply(&parsed, items)
            }
            ("PUT", ["api", "connection", "reconnect"]) => self.set_connected(&parsed, true),
            ("PUT", ["api", "connection", "disconnect"]) => self.set_connected(&parsed, false),
            ("POST", ["api", "terminal", "list"]) => {
                let items: Vec<Value> = self
                    .terminals
                    .iter()
                    .map(|t| self.terminal_json(t))
                    .collect();
                page_reply(&parsed, items)
            }
            ("POST", ["api", "payment", "async", "sale"]) => self.sale(&parsed),
            ("POST", ["api", "payment", "async", "cancel"]) => self.cancel(&parsed),
            ("POST", ["api", "payment", "list"]) => self.payment_list(&parsed),
            ("GET", ["api", "payment", "inquiry", id]) => match Uuid::parse_str(id)
                .ok()
                .and_then(|id| self.payments.iter().find(|p| p.payment_request_id == id))
            {
                Some(p) => ApiReply::physical(payment_json(p)),
                None => ApiReply::physical_failure(
                    200,
                    codes::GENERAL,
                    "PaymentNotFound",
                    "Payment not found.",
                ),
            },
            ("POST", ["api", "paywall", "apm", "unlink"]) => self.apm_unlink(&parsed),
            ("DELETE", ["api", "paywall", "masterpass", "merchant", "unlink"]) => {
                self.masterpass_unlink(&parsed)
            }
            ("PUT", ["api", "paywall", "checkout", "passive"]) => {
                match parsed.get("id").and_then(Value::as_i64) {
                    Some(id) if id > 0 => {
                        self.deactivated_checkouts.insert(id);
                        ApiReply::payment(Value::Null)
                    }
                    _ => ApiReply::payment_failure(
                        200,
                        codes::UNEXPECTED_PARAMETERS,
                        "Id must be a positive integer.",
                    ),
                }
            }
            _ if is_payment_api(path) => {
                ApiReply::payment_failure(404, codes::GENERAL, "No such endpoint.")
            }
            _ => ApiReply::physical_failure(404, codes::GENERAL, "NotFound", "No such endpoint."),
        }
    }

    fn connection_mut(&mut self, body: &Value) -> Result<&mut SimConnection, ApiReply> {
        let Some(id) = body.get("id").and_then(Value::as_str) else {
            return Err(ApiReply::bad_parameters("Id is required."));
        };
        self.connections
            .iter_mut()
            .find(|c| c.id.eq_ignore_ascii_case(id))
            .ok_or_else(|| {
                ApiReply::physical_failure(
                    200,
                    codes::GENERAL,
                    "ConnectionNotFound",
                    "Connection not found.",
                )
            })
    }

    fn establish(&mut self, body: &Value) -> ApiReply {
        let connection = match connection_from_body(Uuid::new_v4().to_string(), body) {
            Ok(c) => c,
            Err(reply) => return reply,
        };
        let id = connection.id.clone();
        self.connections.push(connection);
        // The demo terminal follows the newest connection when it has none that still exists.
        for terminal in &mut self.terminals {
            let bound = terminal
                .connection_id
                .as_ref()
                .is_some_and(|c| self.connections.iter().any(|k| &k.id == c));
            if !bound {
                terminal.connection_id = Some(id.clone());
            }
        }
        ApiReply::physical(json!({ "Id": id }))
    }

    fn update(&mut self, body: &Value) -> ApiReply {
        let existing = match self.connection_mut(body) {
            Ok(c) => c,
            Err(reply) => return reply,
        };
        let mut updated = match connection_from_body(existing.id.clone(), body) {
            Ok(c) => c,
            Err(reply) => return reply,
        };
        updated.is_connected = existing.is_connected;
        *existing = updated;
        ApiReply::physical_camel(json!({ "status": true }))
    }

    fn delete(&mut self, body: &Value) -> ApiReply {
        let id = match self.connection_mut(body) {
            Ok(c) => c.id.clone(),
            Err(reply) => return reply,
        };
        self.connections.retain(|c| c.id != id);
        for terminal in &mut self.terminals {
            if terminal.connection_id.as_deref() == Some(id.as_str()) {
                terminal.connection_id = None;
            }
        }
        ApiReply::physical_camel(json!({ "status": true }))
    }

    fn set_connected(&mut self, body: &Value, connected: bool) -> ApiReply {
        match self.connection_mut(body) {
            Ok(c) => {
                c.is_connected = connected;
                ApiReply::physical_camel(json!({ "status": true }))
            }
            Err(reply) => reply,
        }
    }

    fn detail(&self, id: &str) -> ApiReply {
        match self
            .connections
            .iter()
            .find(|c| c.id.eq_ignore_ascii_case(id))
        {
            Some(c) => ApiReply::physical(connection_json(c)),
            None => ApiReply::physical_failure(
                200,
                codes::GENERAL,
                "ConnectionNotFound",
                "Connection not found.",
            ),
        }
    }

    fn terminal_json(&self, t: &SimTerminal) -> Value {
        let connection_name = t
            .connection_id
            .as_ref()
            .and_then(|id| self.connections.iter().find(|c| &c.id == id))
            .map(|c| c.name.clone());
        json!({
            "Id": t.id,
            "ConnectionId": t.connection_id,
            "BrandId": 10,
            "ProviderId": 10,
            "RegionId": 1,
            "ConnectionName": connection_name,
            "SourceId": null,
            "TerminalId": t.provider_terminal_id,
            "SerialNo": t.serial_no,
            "SourceCreatedDate": "2024-12-23T09:00:00Z",
            "SourceUpdateDate": "2024-12-23T09:00:00Z",
            "MerchantId": "1308",
            "TerminalTagCode": t.tag_code,
        })
    }

    fn sale(&mut self, body: &Value) -> ApiReply {
        let terminal_id = body.get("terminalid").and_then(Value::as_str);
        let tag_code = body.get("terminaltagcode").and_then(Value::as_str);
        let terminal = match (terminal_id, tag_code) {
            (Some(id), None) => self
                .terminals
                .iter()
                .find(|t| t.id.eq_ignore_ascii_case(id)),
            (None, Some(tag)) => self.terminals.iter().find(|t| t.tag_code == tag),
            _ => {
                return ApiReply::bad_parameters(
                    "Send exactly one of TerminalId and TerminalTagCode.",
                )
            }
        };
        let Some(terminal) = terminal.cloned() else {
            return ApiReply::physical_failure(
                200,
                codes::GENERAL,
                "TerminalNotFound",
                "Terminal not found.",
            );
        };
        let Some(merchant_unique_code) = body
            .get("merchantuniquecode")
            .and_then(Value::as_str)
            .and_then(|s| Uuid::parse_str(s).ok())
        else {
            return ApiReply::bad_parameters("MerchantUniqueCode must be a Guid.");
        };
        let Some(amount_minor) = body
            .get("amount")
            .and_then(Value::as_f64)
            .and_then(amount::decimal_to_minor)
            .filter(|a| *a > 0)
        else {
            return ApiReply::bad_parameters("Amount must be a positive number.");
        };
        let Some(currency_id) = body.get("currencyid").and_then(|v| {
            v.as_i64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        }) else {
            return ApiReply::bad_parameters("CurrencyId is required.");
        };
        let connection = terminal
            .connection_id
            .as_ref()
            .and_then(|id| self.connections.iter().find(|c| &c.id == id));
        let Some(connection) = connection.filter(|c| c.is_connected) else {
            return ApiReply::physical_failure(
                200,
                codes::PROVIDER_NOT_CONNECTED,
                "ConnectionNotActive",
                "The terminal's connection is not active.",
            );
        };
        if self
            .payments
            .iter()
            .any(|p| p.merchant_unique_code == merchant_unique_code)
        {
            return ApiReply::physical_failure(
                200,
                codes::DUPLICATE_MERCHANT_UNIQUE_CODE,
                "MerchantUniqueCodeAlreadyExists",
                "MerchantUniqueCode already exists.",
            );
        }
        let payment = SimPayment {
            payment_request_id: Uuid::new_v4(),
            merchant_unique_code,
            terminal_id: terminal.id.clone(),
            connection_id: connection.id.clone(),
            amount_minor,
            currency_id,
            display_code: body
                .get("displaycode")
                .and_then(Value::as_str)
                .map(str::to_owned),
            callback_address: body
                .get("callbackaddress")
                .and_then(Value::as_str)
                .map(str::to_owned),
            status: PaymentStatus::CREATED,
            activity_id: Uuid::new_v4(),
            activity_type_id: 1,
            created_at: SystemTime::now(),
        };
        let reply = ApiReply::physical(activity_json(&payment, false));
        self.payments.push(payment);
        reply
    }

    fn cancel(&mut self, body: &Value) -> ApiReply {
        let Some(id) = body
            .get("paymentrequestid")
            .and_then(Value::as_str)
            .and_then(|s| Uuid::parse_str(s).ok())
        else {
            return ApiReply::bad_parameters("PaymentRequestId must be a Guid.");
        };
        let Some(payment) = self
            .payments
            .iter_mut()
            .find(|p| p.payment_request_id == id)
        else {
            return ApiReply::physical_failure(
                200,
                codes::GENERAL,
                "PaymentNotFound",
                "Payment not found.",
            );
        };
        if payment.status == PaymentStatus::CANCELLED {
            // Cancelling twice answers like the first time, so a retried cancel whose first
            // answer was lost is not reported as a failure.
            return ApiReply::physical_camel(activity_json(payment, true));
        }
        if payment.status.is_final() {
            return ApiReply::physical_failure(
                200,
                codes::PAYMENT_ALREADY_COMPLETED,
                "PaymentAlreadyCompleted",
                "The payment is already completed.",
            );
        }
        payment.status = PaymentStatus::CANCELLED;
        payment.activity_id = Uuid::new_v4();
        payment.activity_type_id = 2;
        ApiReply::physical_camel(activity_json(payment, true))
    }

    fn payment_list(&self, body: &Value) -> ApiReply {
        let day = |key: &str| -> Result<Option<SystemTime>, ApiReply> {
            match body.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => {
                    let date = s.get(..10).unwrap_or(s);
                    humantime::parse_rfc3339_weak(&format!("{date} 00:00:00"))
                        .map(Some)
                        .map_err(|_| {
                            ApiReply::bad_parameters("startDate/endDate must be YYYY-MM-DD.")
                        })
                }
                Some(_) => Err(ApiReply::bad_parameters(
                    "startDate/endDate must be YYYY-MM-DD.",
                )),
            }
        };
        let (start, end) = match (day("startdate"), day("enddate")) {
            (Ok(s), Ok(e)) => (s, e.map(|e| e + Duration::from_secs(24 * 60 * 60))),
            (Err(r), _) | (_, Err(r)) => return r,
        };
        let mut matching: Vec<&SimPayment> = self
            .payments
            .iter()
            .filter(|p| start.is_none_or(|s| p.created_at >= s))
            .filter(|p| end.is_none_or(|e| p.created_at < e))
            .collect();
        matching.sort_by_key(|p| std::cmp::Reverse(p.created_at));
        let items: Vec<Value> = matching.into_iter().map(payment_json).collect();
        page_reply(body, items)
    }

    fn apm_unlink(&mut self, body: &Value) -> ApiReply {
        let phone = body
            .get("phone")
            .and_then(Value::as_str)
            .filter(|p| !p.trim().is_empty());
        let key = body
            .get("apmkey")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let connection_id = body.get("apmconnectionid").and_then(Value::as_i64);
        let Some(phone) = phone else {
            return ApiReply::payment_failure(
                200,
                codes::UNEXPECTED_PARAMETERS,
                "Phone is required.",
            );
        };
        if key.is_some() == connection_id.is_some() {
            return ApiReply::payment_failure(
                200,
                codes::UNEXPECTED_PARAMETERS,
                "Send exactly one of ApmKey and ApmConnectionId.",
            );
        }
        self.apm_unlinks
            .push((phone.to_owned(), key.clone(), connection_id));
        ApiReply::payment(json!({
            "ApmKey": key,
            "ApmConnectionId": connection_id,
            "ProviderDummyResponse": {
                "ErrorCode": 0,
                "Body": {
                    "Result": {"RetrievalReferenceNumber": "100006348197"},
                    "Version": null, "BuildId": "1", "StatusCode": 200, "Message": "OK",
                    "CorrelationId": Uuid::new_v4(), "RequestId": null, "Exception": null
                },
                "HttpCode": 200
            }
        }))
    }

    fn masterpass_unlink(&mut self, body: &Value) -> ApiReply {
        let Some(session) = body
            .get("sessionid")
            .and_then(Value::as_str)
            .and_then(|s| Uuid::parse_str(s).ok())
        else {
            return ApiReply::payment_failure(
                200,
                codes::UNEXPECTED_PARAMETERS,
                "SessionId must be a Guid.",
            );
        };
        if self.masterpass_sessions.remove(&session) {
            ApiReply::payment(json!({
                "Session": {"SessionRenewed": false, "SessionId": session},
                "Masterpass": {
                    "Result": {"RetrievalReferenceNumber": "100005844116"},
                    "BuildId": "83", "CorrelationId": Uuid::new_v4(), "Exception": null,
                    "Message": "OK", "RequestId": null, "StatusCode": 200, "Version": null
                }
            }))
        } else {
            // Seed 002's failure example: the envelope says success, Masterpass says 404.
            ApiReply::payment(json!({
                "Session": {"SessionRenewed": true, "SessionId": Uuid::new_v4()},
                "Masterpass": {
                    "Result": null, "BuildId": "83", "CorrelationId": null,
                    "Exception": {"Level": "NotFound", "Code": "ACCOUNT_NOT_LINKED_TO_MERCHANT", "Message": "Hesap iş yerine bağlı değil."},
                    "Message": "NotFound", "RequestId": null, "StatusCode": 404, "Version": null
                }
            }))
        }
    }
}

fn connection_from_body(id: String, body: &Value) -> Result<SimConnection, ApiReply> {
    let int = |key: &str| body.get(key).and_then(Value::as_i64);
    let flag = |key: &str| body.get(key).and_then(Value::as_bool).unwrap_or(false);
    let name = body
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.trim().is_empty() && n.chars().count() <= 100);
    let (Some(name), Some(brand_id), Some(provider_id), Some(region_id), Some(end_of_day_id)) = (
        name,
        int("brandid"),
        int("providerid"),
        int("regionid"),
        int("endofdayid"),
    ) else {
        return Err(ApiReply::bad_parameters(
            "Name, BrandId, ProviderId, RegionId and EndOfDayId are required.",
        ));
    };
    let Some(Value::Object(parameters)) = body.get("serviceparameters") else {
        return Err(ApiReply::bad_parameters("ServiceParameters is required."));
    };
    Ok(SimConnection {
        id,
        name: name.to_owned(),
        display_name: body
            .get("displayname")
            .and_then(Value::as_str)
            .map(str::to_owned),
        brand_id,
        provider_id,
        region_id,
        end_of_day_id,
        is_prod: flag("isprod"),
        is_reporting: flag("isreporting"),
        is_async_payment: flag("isasyncpayment"),
        is_socket_payment: flag("issocketpayment"),
        is_connected: true,
        service_parameter_names: parameters.keys().cloned().collect(),
    })
}

pub(crate) fn connection_json(c: &SimConnection) -> Value {
    let masked: serde_json::Map<String, Value> = c
        .service_parameter_names
        .iter()
        .map(|k| (k.clone(), json!("***")))
        .collect();
    json!({
        "Id": c.id, "Name": c.name, "DisplayName": c.display_name,
        "BrandId": c.brand_id, "ProviderId": c.provider_id, "RegionId": c.region_id,
        "EndOfDayId": c.end_of_day_id, "IsReporting": c.is_reporting,
        "IsAsyncPayment": c.is_async_payment, "IsSocketPayment": c.is_socket_payment,
        "IsConnected": c.is_connected, "IsDelete": false, "IsProd": c.is_prod,
        "ServiceParameters": masked,
    })
}

fn activity_json(p: &SimPayment, camel: bool) -> Value {
    if camel {
        json!({
            "paymentRequestId": p.payment_request_id,
            "paymentRequestActivityId": p.activity_id,
            "paymentRequestActivityTypeId": p.activity_type_id,
            "paymentStatus": p.status.0,
        })
    } else {
        json!({
            "PaymentRequestId": p.payment_request_id,
            "PaymentRequestActivityId": p.activity_id,
            "PaymentRequestActivityTypeId": p.activity_type_id,
            "PaymentStatus": p.status.0,
        })
    }
}

pub(crate) fn payment_json(p: &SimPayment) -> Value {
    json!({
        "PaymentRequestId": p.payment_request_id,
        "MerchantUniqueCode": p.merchant_unique_code,
        "TerminalId": p.terminal_id,
        "ConnectionId": p.connection_id,
        "Amount": amount::minor_to_decimal(p.amount_minor),
        "CurrencyId": p.currency_id,
        "DisplayCode": p.display_code,
        "PaymentStatusId": p.status.0,
        "PaymentRequestActivityTypeId": p.activity_type_id,
        "CreateDate": humantime::format_rfc3339_millis(p.created_at).to_string(),
    })
}

/// A page of `items` per the body's `pageIndex`/`pageSize` (default 0 and 10, size at most
/// 100): `Result{Items, TotalCount, PageIndex, PageSize}`.
fn page_reply(body: &Value, items: Vec<Value>) -> ApiReply {
    let index = body.get("pageindex").and_then(Value::as_u64).unwrap_or(0);
    let size = body
        .get("pagesize")
        .and_then(Value::as_u64)
        .unwrap_or(10)
        .clamp(1, 100);
    let total = items.len();
    let start = usize::try_from(index.saturating_mul(size)).unwrap_or(usize::MAX);
    let page: Vec<Value> = items.into_iter().skip(start).take(size as usize).collect();
    ApiReply::physical(
        json!({"Items": page, "TotalCount": total, "PageIndex": index, "PageSize": size}),
    )
}
