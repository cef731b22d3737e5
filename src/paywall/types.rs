//! Request and response types of the payment API calls the agent makes
//! (docs/payment-api.md (Methods)). Response types are read from JSON whose
//! keys have been lower-cased (see `envelope.rs`), hence the lower-case `rename`s; where the API
//! documentation has a gap, the names chosen are listed in `docs/payment-api.md`.

use serde::{Deserialize, Deserializer};
use serde_json::Value;
use uuid::Uuid;

/// Conversion between the agent's amounts (integer minor units, e.g. kuruş) and the API's
/// `Amount` (a decimal number of major units: 2250 → `22.5`).
pub mod amount {
    /// The largest amount that survives the trip through a JSON (f64) number exactly: any
    /// decimal of at most 15 significant digits does.
    pub const MAX_MINOR: i64 = 999_999_999_999_999;

    /// `2250` → `22.5`. `None` for amounts that a JSON number cannot carry exactly.
    pub fn minor_to_decimal(minor: i64) -> Option<serde_json::Number> {
        if !(-MAX_MINOR..=MAX_MINOR).contains(&minor) {
            return None;
        }
        // The f64 nearest to the exact decimal; serde_json prints its shortest round-tripping
        // form ("22.5", "19.99", "22.0").
        serde_json::Number::from_f64(minor as f64 / 100.0)
    }

    /// `22.5` → `2250`, rounding to the nearest minor unit. `None` for non-finite or huge values.
    pub fn decimal_to_minor(decimal: f64) -> Option<i64> {
        let minor = (decimal * 100.0).round();
        (minor.is_finite() && minor.abs() <= MAX_MINOR as f64).then_some(minor as i64)
    }
}

/// Which page of a list to fetch: the API's `pageIndex` (from 0) and `pageSize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub index: u32,
    pub size: u32,
}

impl Default for PageRequest {
    fn default() -> Self {
        Self { index: 0, size: 10 }
    }
}

/// One page of a list. `total_count` is given when the API sends `TotalCount`.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total_count: Option<u64>,
}

#[derive(Deserialize)]
pub(crate) struct PageWire<T> {
    #[serde(default = "Vec::new")]
    pub items: Vec<T>,
    #[serde(rename = "totalcount", alias = "totalitems", default)]
    pub total_count: Option<u64>,
}

impl<T> From<PageWire<T>> for Page<T> {
    fn from(wire: PageWire<T>) -> Self {
        Page {
            items: wire.items,
            total_count: wire.total_count,
        }
    }
}

pub use crate::config::{TagCode, TerminalId, TerminalRef};

/// An async sale (`POST /api/payment/async/sale`, docs/payment-api.md (Methods)).
#[derive(Debug, Clone, PartialEq)]
pub struct SaleRequest {
    pub terminal: TerminalRef,
    /// The agent's tracking id, durable before the sale is sent (docs/state.md).
    pub merchant_unique_code: Uuid,
    /// Minor units (2250 = 22.50); sent as the decimal `Amount` (see [`amount`]).
    pub amount_minor: i64,
    pub currency_id: i64,
    /// Text shown on the terminal, at most 25 characters.
    pub display_code: Option<String>,
    /// Webhook for status updates, at most 150 characters.
    pub callback_address: Option<String>,
}

/// A payment status id. The Physical POS status page is a gap in the documentation; the
/// constants are the general PaymentAPI list (docs/payment-api.md (Reading the answers)), plus [`PaymentStatus::CANCELLED`],
/// the simulator's choice for a cancelled payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(transparent)]
pub struct PaymentStatus(pub i64);

impl PaymentStatus {
    pub const CREATED: Self = Self(1);
    pub const STARTED: Self = Self(2);
    pub const WAITING_FOR_FINANCIALIZATION: Self = Self(3);
    pub const SUCCESSFUL: Self = Self(4);
    pub const FAILED: Self = Self(5);
    pub const PAY_JUMP: Self = Self(6);
    pub const FAILED_ON_QUERY: Self = Self(7);
    /// Not documented by Paywall: the id the simulator gives a cancelled payment.
    pub const CANCELLED: Self = Self(8);

    /// A readable name, `"status 42"` for ids outside the known list.
    pub fn name(self) -> String {
        match self.0 {
            1 => "created".into(),
            2 => "started".into(),
            3 => "waiting for financialization".into(),
            4 => "successful".into(),
            5 => "failed".into(),
            6 => "payjump".into(),
            7 => "failed (on query)".into(),
            8 => "cancelled".into(),
            other => format!("status {other}"),
        }
    }

    /// True for the statuses after which nothing more happens to the payment (successful,
    /// failed, failed on query, cancelled). Unknown ids are not final: the agent keeps
    /// watching a payment it does not understand rather than forgetting it.
    pub fn is_final(self) -> bool {
        matches!(self.0, 4 | 5 | 7 | 8)
    }
}

/// The `Result` of an accepted async sale or cancel: `{PaymentRequestId,
/// PaymentRequestActivityId, PaymentRequestActivityTypeId, PaymentStatus}` (seed 004).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PaymentActivity {
    #[serde(rename = "paymentrequestid")]
    pub payment_request_id: Uuid,
    #[serde(rename = "paymentrequestactivityid", default)]
    pub activity_id: Option<Uuid>,
    #[serde(rename = "paymentrequestactivitytypeid", default)]
    pub activity_type_id: Option<i64>,
    #[serde(rename = "paymentstatus", alias = "paymentstatusid", default)]
    pub payment_status: Option<PaymentStatus>,
}

/// The API accepted the sale; `payment_request_id` must be stored (docs/state.md).
pub type SaleAccepted = PaymentActivity;
/// The API accepted the cancel.
pub type CancelAccepted = PaymentActivity;

/// Filter of the payments list (`POST /api/payment/list`): a page and a date window. The API
/// takes whole days (`"2024-12-23"`, UTC), both ends inclusive.
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentListQuery {
    pub page: PageRequest,
    pub start: std::time::SystemTime,
    pub end: std::time::SystemTime,
}

/// One payment as the payments list and query return it. Field names are a documented gap;
/// these follow the physical callback's keys (docs/payment-api.md (Reading the answers)).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PaymentSummary {
    #[serde(rename = "paymentrequestid")]
    pub payment_request_id: Uuid,
    #[serde(
        rename = "merchantuniquecode",
        default,
        deserialize_with = "lenient_uuid"
    )]
    pub merchant_unique_code: Option<Uuid>,
    #[serde(rename = "terminalid", default, deserialize_with = "string_or_number")]
    pub terminal_id: Option<String>,
    #[serde(
        rename = "connectionid",
        default,
        deserialize_with = "string_or_number"
    )]
    pub connection_id: Option<String>,
    #[serde(rename = "amount", default, deserialize_with = "decimal_amount")]
    pub amount_minor: Option<i64>,
    #[serde(rename = "currencyid", default, deserialize_with = "lenient_i64")]
    pub currency_id: Option<i64>,
    #[serde(rename = "paymentstatusid", alias = "paymentstatus", default)]
    pub status: Option<PaymentStatus>,
    #[serde(rename = "displaycode", default)]
    pub display_code: Option<String>,
    /// RFC 3339, as the API sends it.
    #[serde(rename = "createdate", alias = "createddate", default)]
    pub created: Option<String>,
}

/// A connection as detail and list return it (docs/payment-api.md (Methods)). Its `ServiceParameters` are
/// deliberately not read: they are provider credentials (masked by the API anyway).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ConnectionInfo {
    #[serde(rename = "id", deserialize_with = "required_string_or_number")]
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(rename = "displayname", default)]
    pub display_name: Option<String>,
    #[serde(rename = "brandid", default)]
    pub brand_id: Option<i64>,
    #[serde(rename = "providerid", default)]
    pub provider_id: Option<i64>,
    #[serde(rename = "regionid", default)]
    pub region_id: Option<i64>,
    #[serde(rename = "endofdayid", default)]
    pub end_of_day_id: Option<i64>,
    #[serde(rename = "isprod", default)]
    pub is_prod: Option<bool>,
    #[serde(rename = "isreporting", default)]
    pub is_reporting: Option<bool>,
    #[serde(rename = "isasyncpayment", default)]
    pub is_async_payment: Option<bool>,
    #[serde(rename = "issocketpayment", default)]
    pub is_socket_payment: Option<bool>,
    #[serde(rename = "isconnected", default)]
    pub is_connected: Option<bool>,
    #[serde(rename = "isdelete", default)]
    pub is_deleted: Option<bool>,
}

/// A terminal of the terminal list (docs/payment-api.md (Methods)). `id` is the Paywall Guid that sales take;
/// `provider_terminal_id` is the list's `TerminalId`, the provider's own id.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TerminalInfo {
    #[serde(rename = "id", deserialize_with = "required_string_or_number")]
    pub id: String,
    #[serde(
        rename = "connectionid",
        default,
        deserialize_with = "string_or_number"
    )]
    pub connection_id: Option<String>,
    #[serde(rename = "connectionname", default)]
    pub connection_name: Option<String>,
    #[serde(rename = "terminalid", default, deserialize_with = "string_or_number")]
    pub provider_terminal_id: Option<String>,
    #[serde(rename = "serialno", default)]
    pub serial_no: Option<String>,
    #[serde(rename = "merchantid", default, deserialize_with = "string_or_number")]
    pub merchant_id: Option<String>,
    #[serde(rename = "terminaltagcode", alias = "tagcode", default)]
    pub tag_code: Option<String>,
    #[serde(rename = "brandid", default)]
    pub brand_id: Option<i64>,
    #[serde(rename = "providerid", default)]
    pub provider_id: Option<i64>,
}

/// Which APM link to remove (seed 001): exactly one of `ApmKey` / `ApmConnectionId` is set, the
/// other goes on the wire as `null`, as in the seed's example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApmTarget {
    Key(String),
    ConnectionId(i64),
}

/// The `Body` of a successful APM unlink (seed 001).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct ApmUnlinked {
    #[serde(rename = "apmkey", default)]
    pub apm_key: Option<String>,
    #[serde(rename = "apmconnectionid", default, deserialize_with = "lenient_i64")]
    pub apm_connection_id: Option<i64>,
}

/// A successful Masterpass merchant unlink (seed 002).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MasterpassUnlinked {
    pub session_id: Option<String>,
    pub session_renewed: Option<bool>,
    pub retrieval_reference_number: Option<String>,
}

impl MasterpassUnlinked {
    pub(crate) fn from_body(body: &Value) -> Self {
        let session = body.get("session");
        MasterpassUnlinked {
            session_id: session
                .and_then(|s| s.get("sessionid"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            session_renewed: session
                .and_then(|s| s.get("sessionrenewed"))
                .and_then(Value::as_bool),
            retrieval_reference_number: body
                .get("masterpass")
                .and_then(|m| m.get("result"))
                .and_then(|r| r.get("retrievalreferencenumber"))
                .and_then(|r| match r {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                }),
        }
    }
}

fn value_to_string(value: Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Ids are Guid strings in most examples but an integer in one (docs/payment-api.md (Methods), terminal sync).
fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(value_to_string(Value::deserialize(d)?))
}

fn required_string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    value_to_string(Value::deserialize(d)?)
        .ok_or_else(|| serde::de::Error::custom("expected a string or a number"))
}

fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

fn lenient_uuid<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Uuid>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => Uuid::parse_str(s.trim()).ok(),
        _ => None,
    })
}

fn decimal_amount<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => n.as_f64().and_then(amount::decimal_to_minor),
        Value::String(s) => s
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(amount::decimal_to_minor),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn amounts_convert_as_documented() {
        assert_eq!(amount::minor_to_decimal(2250).unwrap().to_string(), "22.5");
        assert_eq!(amount::minor_to_decimal(1999).unwrap().to_string(), "19.99");
        assert_eq!(amount::minor_to_decimal(2200).unwrap().to_string(), "22.0");
        assert_eq!(amount::decimal_to_minor(22.5), Some(2250));
        assert_eq!(amount::decimal_to_minor(f64::NAN), None);
        assert_eq!(amount::minor_to_decimal(amount::MAX_MINOR + 1), None);
    }

    proptest! {
        #[test]
        fn amounts_survive_the_json_round_trip(minor in 0i64..=amount::MAX_MINOR) {
            let number = amount::minor_to_decimal(minor).unwrap();
            let text = serde_json::to_string(&number).unwrap();
            let back: f64 = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(amount::decimal_to_minor(back), Some(minor));
        }
    }

    #[test]
    fn final_statuses_are_the_terminal_ones() {
        assert!(PaymentStatus::SUCCESSFUL.is_final());
        assert!(PaymentStatus::CANCELLED.is_final());
        assert!(!PaymentStatus::CREATED.is_final());
        assert!(!PaymentStatus(42).is_final());
        assert_eq!(PaymentStatus(42).name(), "status 42");
    }
}
