//! The two response envelopes of the payment API, read case-insensitively
//! (docs/payment-api.md (Reading the answers)): the seeds mix `result`/`Result` and
//! `succeeded`/`Succeeded`, so every body is parsed to JSON, every object key is lower-cased
//! ([`lowercase_keys`], the one place where casing is dealt with), and the typed payloads are
//! then read with lower-case field names.
//!
//! - PhysicalAPI: `{Result, ErrorCode?, Succeeded, Failed, Message, ClientMessage}`; success is
//!   `Succeeded: true`, `Failed` not true, `ErrorCode` absent or 0.
//! - PaymentAPI: `{ErrorCode, Result: bool, Message, Body}`; success is `Result: true` and
//!   `ErrorCode` absent or 0.

use serde_json::{Map, Value};

use super::endpoint::Endpoint;
use super::error::ApiError;

/// Returns `value` with every object key lower-cased, recursively. Values are left alone.
pub(crate) fn lowercase_keys(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k.to_lowercase(), lowercase_keys(v)))
                .collect::<Map<String, Value>>(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(lowercase_keys).collect()),
        other => other,
    }
}

/// What the decoder needs to know about the call whose answer it reads.
pub(crate) struct DecodeContext<'a> {
    pub endpoint: Endpoint,
    /// The call is not safe to repeat, so an unreadable answer leaves its outcome unknown.
    pub outcome_unknown_on_failure: bool,
    /// Values that must never appear in an excerpt (the client's keys).
    pub secrets: &'a [&'a str],
}

impl DecodeContext<'_> {
    /// The start of a body for an error message: at most [`EXCERPT_CHARS`] characters, control
    /// characters replaced, and the client's secrets replaced by `***`.
    pub(crate) fn excerpt(&self, body: &[u8]) -> String {
        let text = String::from_utf8_lossy(body);
        let mut cut: String = text
            .chars()
            .take(EXCERPT_CHARS)
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        for secret in self.secrets.iter().filter(|s| !s.is_empty()) {
            cut = cut.replace(secret, "***");
            // A secret cut in half at the end of the excerpt would leak its first part.
            for len in (1..secret.len()).rev() {
                if let Some(prefix) = secret.get(..len) {
                    if prefix.len() >= 4 && cut.ends_with(prefix) {
                        cut.truncate(cut.len() - prefix.len());
                        cut.push_str("***");
                        break;
                    }
                }
            }
        }
        if text.chars().count() > EXCERPT_CHARS {
            cut.push('…');
        }
        cut
    }

    /// `text` with the client's secrets replaced by `***` (for the API's own messages).
    pub(crate) fn scrub(&self, text: Option<String>) -> Option<String> {
        text.map(|t| self.without_secrets(t))
    }

    fn without_secrets(&self, mut text: String) -> String {
        for secret in self.secrets.iter().filter(|s| !s.is_empty()) {
            text = text.replace(secret, "***");
        }
        text
    }

    /// An unreadable answer. The reason is scrubbed too: it is built from the parser's message,
    /// which may quote the body.
    pub(crate) fn undecodable(&self, reason: impl Into<String>, body: &[u8]) -> ApiError {
        ApiError::Undecodable {
            endpoint: self.endpoint,
            reason: self.without_secrets(reason.into()),
            excerpt: self.excerpt(body),
            outcome_unknown: self.outcome_unknown_on_failure,
        }
    }

    /// Parses a body to JSON with lower-cased keys.
    pub(crate) fn json(&self, body: &[u8]) -> Result<Value, ApiError> {
        match serde_json::from_slice::<Value>(body) {
            Ok(value) => Ok(lowercase_keys(value)),
            Err(e) => Err(self.undecodable(format!("not JSON: {}", serde_error_kind(&e)), body)),
        }
    }

    /// Reads a typed payload out of an already lower-cased value.
    pub(crate) fn typed<T: serde::de::DeserializeOwned>(
        &self,
        value: Value,
        body: &[u8],
    ) -> Result<T, ApiError> {
        serde_json::from_value(value).map_err(|e| {
            self.undecodable(
                format!("unexpected shape: {}", strip_quoted_values(&e.to_string())),
                body,
            )
        })
    }
}

/// At most this many characters of a body go into an error.
pub(crate) const EXCERPT_CHARS: usize = 120;

fn serde_error_kind(e: &serde_json::Error) -> String {
    format!(
        "{:?} error at line {} column {}",
        e.classify(),
        e.line(),
        e.column()
    )
}

/// serde's messages quote offending values (`invalid type: string "abc"`, with the value's
/// own quotes and backslashes escaped as in Rust's `{:?}`); the excerpt already shows the body,
/// so the quoted values are dropped to keep the message short.
fn strip_quoted_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut in_quotes = false;
    let mut chars = message.chars();
    while let Some(c) = chars.next() {
        match (c, in_quotes) {
            ('"', false) => {
                out.push_str("\"…\"");
                in_quotes = true;
            }
            ('"', true) => in_quotes = false,
            // An escaped character inside the value (`\"`, `\\`) does not end it.
            ('\\', true) => {
                chars.next();
            }
            (_, true) => {}
            (c, false) => out.push(c),
        }
    }
    out
}

fn text(value: Option<&Value>) -> Option<String> {
    match value {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Null) | None => None,
        Some(other) => Some(other.to_string()),
    }
}

fn integer(value: Option<&Value>) -> Option<i64> {
    match value {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The `message`/`clientmessage` pair of a failure envelope of either API, for an HTTP error
/// status. Anything unreadable gives `(None, None)`.
pub(crate) fn failure_messages(body: &[u8]) -> (Option<String>, Option<String>) {
    let Ok(value) = serde_json::from_slice::<Value>(body).map(lowercase_keys) else {
        return (None, None);
    };
    let message = text(value.get("message"))
        .filter(|m| !m.is_empty())
        .or_else(|| text(value.get("errormessage")));
    (message, text(value.get("clientmessage")))
}

/// Checks a PhysicalAPI envelope and returns its (lower-cased) `result`.
pub(crate) fn physical_result(ctx: &DecodeContext<'_>, body: &[u8]) -> Result<Value, ApiError> {
    let mut value = ctx.json(body)?;
    let Some(object) = value.as_object_mut() else {
        return Err(ctx.undecodable("the answer is not a JSON object", body));
    };
    let succeeded = object.get("succeeded").and_then(Value::as_bool);
    let failed = object.get("failed").and_then(Value::as_bool);
    let error_code = integer(object.get("errorcode"));
    if succeeded.is_none() && failed.is_none() {
        return Err(ctx.undecodable("no Succeeded/Failed field in the envelope", body));
    }
    let ok = succeeded == Some(true) && failed != Some(true) && error_code.unwrap_or(0) == 0;
    if !ok {
        return Err(ApiError::Rejected {
            endpoint: ctx.endpoint,
            message: ctx.scrub(text(object.get("message"))),
            client_message: ctx.scrub(text(object.get("clientmessage"))),
            error_code,
        });
    }
    Ok(object.remove("result").unwrap_or(Value::Null))
}

/// Checks a PaymentAPI envelope and returns its (lower-cased) `body`.
pub(crate) fn payment_body(ctx: &DecodeContext<'_>, body: &[u8]) -> Result<Value, ApiError> {
    let mut value = ctx.json(body)?;
    let Some(object) = value.as_object_mut() else {
        return Err(ctx.undecodable("the answer is not a JSON object", body));
    };
    let Some(result) = object.get("result").and_then(Value::as_bool) else {
        return Err(ctx.undecodable("no boolean Result field in the envelope", body));
    };
    let error_code = integer(object.get("errorcode"));
    if !result || error_code.unwrap_or(0) != 0 {
        let message = text(object.get("message"))
            .filter(|m| !m.is_empty())
            .or_else(|| text(object.get("errormessage")));
        return Err(ApiError::Rejected {
            endpoint: ctx.endpoint,
            message: ctx.scrub(message),
            client_message: None,
            error_code,
        });
    }
    Ok(object.remove("body").unwrap_or(Value::Null))
}

/// The Masterpass unlink answer succeeds only when, beyond the envelope,
/// `Body.Masterpass.StatusCode` is 2xx (seed 002: its failure example has `ErrorCode: 0`,
/// `Result: true` and `StatusCode: 404`). On failure the rejection carries
/// `Masterpass.Exception.Message` (else `Masterpass.Message`) as message,
/// `Masterpass.Exception.Code` as client message, and the Masterpass `StatusCode` as error code.
pub(crate) fn masterpass_body(ctx: &DecodeContext<'_>, body: &[u8]) -> Result<Value, ApiError> {
    let payload = payment_body(ctx, body)?;
    let Some(masterpass) = payload.get("masterpass") else {
        return Err(ctx.undecodable("no Body.Masterpass in the answer", body));
    };
    let Some(status_code) = integer(masterpass.get("statuscode")) else {
        return Err(ctx.undecodable("no Body.Masterpass.StatusCode in the answer", body));
    };
    if !(200..300).contains(&status_code) {
        let exception = masterpass.get("exception");
        let message = text(exception.and_then(|e| e.get("message")))
            .or_else(|| text(masterpass.get("message")));
        return Err(ApiError::Rejected {
            endpoint: ctx.endpoint,
            message: ctx.scrub(message),
            client_message: ctx.scrub(text(exception.and_then(|e| e.get("code")))),
            error_code: Some(status_code),
        });
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> DecodeContext<'static> {
        DecodeContext {
            endpoint: Endpoint::Sale,
            outcome_unknown_on_failure: false,
            secrets: &["very-secret-key-value"],
        }
    }

    #[test]
    fn keys_are_lowercased_recursively_and_values_kept() {
        let v =
            lowercase_keys(json!({"Result": {"PaymentRequestId": "AbC", "Items": [{"Id": 1}]}}));
        assert_eq!(
            v,
            json!({"result": {"paymentrequestid": "AbC", "items": [{"id": 1}]}})
        );
    }

    #[test]
    fn physical_envelope_in_either_casing_succeeds() {
        for body in [
            r#"{"result":{"status":true},"failed":false,"message":null,"clientMessage":null,"succeeded":true}"#,
            r#"{"Result":{"Status":true},"Failed":false,"Message":null,"ClientMessage":null,"Succeeded":true}"#,
            r#"{"RESULT":{"status":true},"SUCCEEDED":true}"#,
        ] {
            let result = physical_result(&ctx(), body.as_bytes()).unwrap();
            assert_eq!(result, json!({"status": true}), "{body}");
        }
    }

    #[test]
    fn physical_failure_is_a_rejection_with_messages() {
        let body = br#"{"Result":null,"ErrorCode":4,"Failed":true,"Succeeded":false,"Message":"dup","ClientMessage":"MerchantUniqueCodeAlreadyExists"}"#;
        match physical_result(&ctx(), body) {
            Err(ApiError::Rejected {
                message,
                client_message,
                error_code,
                ..
            }) => {
                assert_eq!(message.as_deref(), Some("dup"));
                assert_eq!(
                    client_message.as_deref(),
                    Some("MerchantUniqueCodeAlreadyExists")
                );
                assert_eq!(error_code, Some(4));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn succeeded_true_with_nonzero_error_code_is_still_a_rejection() {
        let body = br#"{"Succeeded":true,"Failed":false,"ErrorCode":7}"#;
        assert!(physical_result(&ctx(), body).unwrap_err().is_rejection());
    }

    #[test]
    fn envelope_without_success_fields_is_undecodable() {
        let err = physical_result(&ctx(), br#"{"hello":1}"#).unwrap_err();
        assert!(matches!(err, ApiError::Undecodable { .. }), "{err:?}");
        let err = payment_body(&ctx(), br#"{"Result":{"a":1}}"#).unwrap_err();
        assert!(matches!(err, ApiError::Undecodable { .. }), "{err:?}");
    }

    #[test]
    fn excerpt_is_short_and_never_contains_a_secret() {
        let body = format!(
            "{{\"echo\":\"very-secret-key-value\",\"pad\":\"{}\"}}",
            "x".repeat(500)
        );
        let e = ctx().excerpt(body.as_bytes());
        assert!(!e.contains("very-secret-key-value"));
        assert!(e.contains("***"));
        assert!(e.chars().count() <= EXCERPT_CHARS + 1);
        // A secret cut at the end of the excerpt is still hidden.
        let body = format!("{}very-secret-key-value", "y".repeat(EXCERPT_CHARS - 8));
        let e = ctx().excerpt(body.as_bytes());
        assert!(!e.contains("very-sec"), "{e}");
    }

    #[test]
    fn masterpass_status_code_outside_2xx_is_a_rejection() {
        let body = br#"{"ErrorCode":0,"Result":true,"Body":{"Masterpass":{"StatusCode":404,"Exception":{"Code":"ACCOUNT_NOT_LINKED_TO_MERCHANT","Message":"not linked"}}}}"#;
        match masterpass_body(&ctx(), body) {
            Err(ApiError::Rejected {
                client_message,
                error_code,
                ..
            }) => {
                assert_eq!(
                    client_message.as_deref(),
                    Some("ACCOUNT_NOT_LINKED_TO_MERCHANT")
                );
                assert_eq!(error_code, Some(404));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn serde_messages_lose_their_quoted_values() {
        assert_eq!(
            strip_quoted_values(r#"invalid type: string "secret", expected i64"#),
            r#"invalid type: string "…", expected i64"#
        );
        // The value's own escaped quotes and backslashes stay inside it (found by fuzzing:
        // the text after an escaped quote used to come out, the client's key with it).
        assert_eq!(
            strip_quoted_values(
                r#"invalid type: string "a\" very-secret-key-value \\", expected i64"#
            ),
            r#"invalid type: string "…", expected i64"#
        );
    }

    #[test]
    fn an_unexpected_shape_quoting_the_key_never_shows_it() {
        let body = br#"{"id": "x\" very-secret-key-value"}"#;
        let value = serde_json::json!("x\" very-secret-key-value");
        let err = ctx().typed::<i64>(value, body).unwrap_err();
        assert!(matches!(err, ApiError::Undecodable { .. }), "{err:?}");
        for text in [err.to_string(), format!("{err:?}")] {
            assert!(!text.contains("very-secret-key-value"), "{text}");
        }
    }
}
