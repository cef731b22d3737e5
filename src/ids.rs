//! The two ids money hangs on, as types: a payment's `PaymentRequestId` and a sale's merchant
//! unique code. Each is parsed once where it enters the agent (a terminal's or an operator's
//! request, the payment API's answer); inside, a payment id cannot be mistaken for a sale code
//! or for any other text. A leaf: it uses no other module of the crate
//! (docs/architecture.md, "Layers").

use std::borrow::Borrow;
use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A payment's id at the payment API, in the one spelling the agent keys it by: the lower-case,
/// hyphenated text of its GUID, so a terminal that writes it in upper case still finds its
/// payment. Stored and sent as that text (serde transparent); an id read back from a state file
/// is used as stored, as it always was.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PaymentRequestId(String);

impl PaymentRequestId {
    /// Parses an id as a terminal or an operator wrote it: surrounding blanks go, and any
    /// spelling of a GUID becomes the canonical one.
    pub fn parse(text: &str) -> Result<Self, InvalidPaymentRequestId> {
        Uuid::parse_str(text.trim())
            .map(Self::from)
            .map_err(|_| InvalidPaymentRequestId(text.to_owned()))
    }

    /// An id as the agent stored it, unchecked: state written by an older release keeps the
    /// spelling it was written in.
    pub fn stored(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The GUID, for the payment API's requests; `None` for a stored id that is not one.
    pub fn uuid(&self) -> Option<Uuid> {
        Uuid::parse_str(&self.0).ok()
    }
}

impl From<Uuid> for PaymentRequestId {
    fn from(uuid: Uuid) -> Self {
        Self(uuid.to_string())
    }
}

/// The id's text, for the wire formats that carry it as a string.
impl From<PaymentRequestId> for String {
    fn from(id: PaymentRequestId) -> Self {
        id.0
    }
}

impl fmt::Display for PaymentRequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for PaymentRequestId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

/// Maps keyed by id are looked up by its text (the ordering and equality are the text's).
impl Borrow<str> for PaymentRequestId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// Text that is no `PaymentRequestId`; the message is the one terminals and operators read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("payment_request_id {0:?} is not a GUID")]
pub struct InvalidPaymentRequestId(String);

/// A sale's merchant unique code: the GUID the terminal's sale order carries, which keeps a
/// sale idempotent across retries and restarts. Shown, stored and sent as its lower-case,
/// hyphenated text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MerchantCode(Uuid);

impl MerchantCode {
    pub fn uuid(self) -> Uuid {
        self.0
    }

    /// A code as a state file keys its sale, `None` for text that is no GUID.
    pub fn parse(text: &str) -> Option<Self> {
        Uuid::parse_str(text).ok().map(Self)
    }
}

impl From<Uuid> for MerchantCode {
    fn from(uuid: Uuid) -> Self {
        Self(uuid)
    }
}

impl fmt::Display for MerchantCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUID: &str = "6f1c1a7e-3b7f-4d0e-9a51-0f2b7c3d9e10";

    #[test]
    fn a_payment_id_is_parsed_to_one_spelling() {
        for text in [
            GUID,
            " 6F1C1A7E-3B7F-4D0E-9A51-0F2B7C3D9E10\n",
            "6f1c1a7e3b7f4d0e9a510f2b7c3d9e10",
        ] {
            assert_eq!(
                PaymentRequestId::parse(text).unwrap().as_str(),
                GUID,
                "{text:?}"
            );
        }
    }

    #[test]
    fn text_that_is_no_guid_is_refused_with_the_text_as_given() {
        let error = PaymentRequestId::parse(" nope").unwrap_err();
        assert_eq!(
            error.to_string(),
            r#"payment_request_id " nope" is not a GUID"#
        );
    }

    #[test]
    fn a_payment_id_is_stored_and_read_as_its_text() {
        let id = PaymentRequestId::parse(GUID).unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{GUID}\""));
        // Read back as stored, whatever its spelling.
        let upper: PaymentRequestId = serde_json::from_str("\"P-1\"").unwrap();
        assert_eq!(upper.as_str(), "P-1");
        assert_eq!(upper.uuid(), None);
    }

    #[test]
    fn a_merchant_code_shows_and_serialises_as_hyphenated_lower_case() {
        let code = MerchantCode::from(Uuid::parse_str(&GUID.to_uppercase()).unwrap());
        assert_eq!(code.to_string(), GUID);
        assert_eq!(serde_json::to_string(&code).unwrap(), format!("\"{GUID}\""));
        assert_eq!(MerchantCode::parse(GUID), Some(code));
        assert_eq!(MerchantCode::parse("m1"), None);
    }
}
