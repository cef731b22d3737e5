//! Every endpoint's request as it arrives over real HTTP on loopback: method, path, the right
//! header pair (and not the other), `locale`, and the exact body field names (docs/payment-api.md §4).

use crate::support::payment_api::*;
use crate::support::SERVICE_PARAMETER_SECRET;
use pos_agent::paywall::*;
use pos_agent::simulator::api::*;
use std::time::{Duration, SystemTime};
use uuid::Uuid;

const PRIVATE: [&str; 2] = ["apikeyprivate", "apiclientprivate"];
const PUBLIC: [&str; 2] = ["apikeypublic", "apiclientpublic"];

fn last(sim: &ApiSimulator) -> RecordedRequest {
    sim.requests().pop().expect("a request was recorded")
}

/// Checks method, path, the header pair (values included), `locale` and the body keys.
fn assert_request(
    request: &RecordedRequest,
    method: &str,
    path: &str,
    pair: [&str; 2],
    body_keys: &[&str],
) {
    assert_eq!(request.method, method, "{request:?}");
    assert_eq!(request.path, path, "{request:?}");
    let (expected, other) = if pair == PRIVATE {
        ([DEMO_API_KEY_PRIVATE, DEMO_API_CLIENT_PRIVATE], PUBLIC)
    } else {
        ([DEMO_API_KEY_PUBLIC, DEMO_API_CLIENT_PUBLIC], PRIVATE)
    };
    assert_eq!(request.header(pair[0]), Some(expected[0]), "{request:?}");
    assert_eq!(request.header(pair[1]), Some(expected[1]), "{request:?}");
    for name in other {
        assert_eq!(
            request.header(name),
            None,
            "{name} must not be sent: {request:?}"
        );
    }
    assert_eq!(request.header("locale"), Some("tr"));
    assert_eq!(request.body_keys(), sorted(body_keys), "{request:?}");
    if body_keys.is_empty() {
        assert!(request.raw_body.is_empty(), "{request:?}");
    } else {
        assert_eq!(request.header("content-type"), Some("application/json"));
    }
}

const ESTABLISH_KEYS: [&str; 11] = [
    "Name",
    "DisplayName",
    "BrandId",
    "ProviderId",
    "RegionId",
    "EndOfDayId",
    "IsProd",
    "IsReporting",
    "IsAsyncPayment",
    "IsSocketPayment",
    "ServiceParameters",
];

#[tokio::test]
async fn establish_posts_the_documented_fields_and_returns_the_id() {
    let sim = start();
    let id = client(&sim)
        .establish_connection(&establish_config())
        .await
        .unwrap();
    let request = last(&sim);
    assert_request(
        &request,
        "POST",
        "/api/connection",
        PRIVATE,
        &ESTABLISH_KEYS,
    );
    let body = request.body.unwrap();
    assert_eq!(body["BrandId"], 10);
    assert_eq!(
        body["ServiceParameters"]["Reporting_ApiKey"],
        SERVICE_PARAMETER_SECRET
    );
    assert!(sim.connections().iter().any(|c| c.id == id));
}

#[tokio::test]
async fn disconnect_and_reconnect_send_only_the_id_as_seed_000_does() {
    let sim = start();
    let c = client(&sim);
    let seed_keys = fixture_keys("seed000_disconnect_request.json");
    c.disconnect(DEMO_CONNECTION_ID).await.unwrap();
    let request = last(&sim);
    assert_request(
        &request,
        "PUT",
        "/api/connection/disconnect",
        PRIVATE,
        &["Id"],
    );
    assert_eq!(request.body_keys(), seed_keys);
    c.reconnect(DEMO_CONNECTION_ID).await.unwrap();
    assert_request(
        &last(&sim),
        "PUT",
        "/api/connection/reconnect",
        PRIVATE,
        &["Id"],
    );
}

#[tokio::test]
async fn sale_sends_terminal_id_code_and_decimal_amount() {
    let sim = start();
    let code = Uuid::new_v4();
    let accepted = client(&sim).sale(&sale(code)).await.unwrap();
    let request = last(&sim);
    assert_request(
        &request,
        "POST",
        "/api/payment/async/sale",
        PRIVATE,
        &["TerminalId", "MerchantUniqueCode", "Amount", "CurrencyId"],
    );
    let body = request.body.unwrap();
    assert_eq!(body["Amount"], 22.5);
    assert_eq!(body["MerchantUniqueCode"], code.to_string());
    assert_eq!(body["TerminalId"], DEMO_TERMINAL_ID);
    assert_eq!(
        sim.payments()[0].payment_request_id,
        accepted.payment_request_id
    );
    assert_eq!(sim.payments()[0].amount_minor, 2250);
}

#[tokio::test]
async fn sale_by_tag_code_sends_only_the_tag_code_and_the_optional_fields() {
    let sim = start();
    let mut request = sale(Uuid::new_v4());
    request.terminal = TerminalRef::TagCode(TagCode::parse(DEMO_TERMINAL_TAG_CODE).unwrap());
    request.display_code = Some("Kişisel Bakım".to_owned());
    request.callback_address = Some("https://merchant.example/cb".to_owned());
    client(&sim).sale(&request).await.unwrap();
    let recorded = last(&sim);
    assert_request(
        &recorded,
        "POST",
        "/api/payment/async/sale",
        PRIVATE,
        &[
            "TerminalTagCode",
            "MerchantUniqueCode",
            "Amount",
            "CurrencyId",
            "DisplayCode",
            "CallbackAddress",
        ],
    );
    assert_eq!(recorded.body.unwrap()["DisplayCode"], "Kişisel Bakım");
}

#[tokio::test]
async fn cancel_sends_the_payment_request_id_as_seed_004_does() {
    let sim = start();
    let c = client(&sim);
    let accepted = c.sale(&sale(Uuid::new_v4())).await.unwrap();
    c.cancel(accepted.payment_request_id).await.unwrap();
    let request = last(&sim);
    assert_request(
        &request,
        "POST",
        "/api/payment/async/cancel",
        PRIVATE,
        &["PaymentRequestId"],
    );
    assert_eq!(
        request.body_keys(),
        fixture_keys("seed004_async_cancel_request.json")
    );
    assert_eq!(
        request.body.unwrap()["PaymentRequestId"],
        accepted.payment_request_id.to_string()
    );
}

#[tokio::test]
async fn payment_list_sends_paging_and_utc_days() {
    let sim = start();
    let now = SystemTime::now();
    client(&sim)
        .list_payments(&PaymentListQuery {
            page: PageRequest { index: 2, size: 50 },
            start: now - Duration::from_secs(86_400),
            end: now,
        })
        .await
        .unwrap();
    let request = last(&sim);
    assert_request(
        &request,
        "POST",
        "/api/payment/list",
        PRIVATE,
        &["pageIndex", "pageSize", "startDate", "endDate"],
    );
    let body = request.body.unwrap();
    assert_eq!(body["pageIndex"], 2);
    let end = body["endDate"].as_str().unwrap();
    assert_eq!(end.len(), 10, "YYYY-MM-DD: {end}");
    assert_eq!(end, &humantime::format_rfc3339(now).to_string()[..10]);
}

#[tokio::test]
async fn apm_unlink_uses_the_public_pair_and_seed_001_fields() {
    let sim = start();
    let c = client(&sim);
    let unlinked = c
        .apm_unlink(
            "905342979639",
            ApmTarget::Key("Masterpass_IFrame".to_owned()),
        )
        .await
        .unwrap();
    let request = last(&sim);
    assert_request(
        &request,
        "POST",
        "/api/paywall/apm/unlink",
        PUBLIC,
        &["Phone", "ApmConnectionId", "ApmKey"],
    );
    assert_eq!(
        request.body_keys(),
        fixture_keys("seed001_apm_unlink_request.json")
    );
    let body = request.body.unwrap();
    assert!(body["ApmConnectionId"].is_null());
    assert_eq!(body["ApmKey"], "Masterpass_IFrame");
    assert_eq!(unlinked.apm_key.as_deref(), Some("Masterpass_IFrame"));

    c.apm_unlink("905342979639", ApmTarget::ConnectionId(2013))
        .await
        .unwrap();
    let body = last(&sim).body.unwrap();
    assert_eq!(body["ApmConnectionId"], 2013);
    assert!(body["ApmKey"].is_null());
}

#[tokio::test]
async fn masterpass_unlink_uses_the_private_pair_and_seed_002_fields() {
    let sim = start();
    let session = Uuid::new_v4();
    sim.link_masterpass_session(session);
    let unlinked = client(&sim).masterpass_unlink(session).await.unwrap();
    let request = last(&sim);
    assert_request(
        &request,
        "DELETE",
        "/api/paywall/masterpass/merchant/unlink",
        PRIVATE,
        &["SessionId"],
    );
    assert_eq!(
        request.body_keys(),
        fixture_keys("seed002_masterpass_unlink_request.json")
    );
    assert_eq!(unlinked.session_id, Some(session.to_string()));
}

#[tokio::test]
async fn checkout_deactivate_uses_the_public_pair_and_an_integer_id_as_seed_003_does() {
    let sim = start();
    client(&sim).checkout_deactivate(205334385).await.unwrap();
    let request = last(&sim);
    assert_request(
        &request,
        "PUT",
        "/api/paywall/checkout/passive",
        PUBLIC,
        &["Id"],
    );
    assert_eq!(
        request.body_keys(),
        fixture_keys("seed003_checkout_passive_request.json")
    );
    assert_eq!(request.body.unwrap()["Id"], 205334385);
    assert_eq!(sim.deactivated_checkouts(), vec![205334385]);
}
