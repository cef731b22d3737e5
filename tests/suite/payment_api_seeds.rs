//! Every JSON response example of the payment API's published pages (in `tests/fixtures/`), replayed by
//! the simulator over real HTTP, gives the outcome its page describes (docs/payment-api.md §4).

use crate::support::payment_api::*;
use pos_agent::paywall::*;
use pos_agent::simulator::api::*;
use uuid::Uuid;

fn replay(sim: &ApiSimulator, method: &str, path: &str, fixture_name: &str) {
    sim.inject(Fault::new(
        method,
        path,
        FaultKind::Reply {
            status: 200,
            body: fixture(fixture_name),
        },
    ));
}

#[tokio::test]
async fn seed_000_disconnect_camel_case_envelope_is_a_success() {
    let sim = start();
    replay(
        &sim,
        "PUT",
        "/api/connection/disconnect",
        "seed000_disconnect_response.json",
    );
    client(&sim).disconnect(DEMO_CONNECTION_ID).await.unwrap();
    // The canned answer replaced the real one: the connection is untouched.
    assert!(sim.connections()[0].is_connected);
}

#[tokio::test]
async fn seed_001_apm_unlink_answer_is_a_success_with_its_key_and_connection_id() {
    let sim = start();
    replay(
        &sim,
        "POST",
        "/api/paywall/apm/unlink",
        "seed001_apm_unlink_response.json",
    );
    let unlinked = client(&sim)
        .apm_unlink("905342979639", ApmTarget::Key("Masterpass_IFrame".into()))
        .await
        .unwrap();
    assert_eq!(
        unlinked,
        ApmUnlinked {
            apm_key: Some("Masterpass_IFrame".into()),
            apm_connection_id: Some(2013),
        }
    );
}

#[tokio::test]
async fn seed_002_masterpass_success_example_is_a_success() {
    let sim = start();
    replay(
        &sim,
        "DELETE",
        "/api/paywall/masterpass/merchant/unlink",
        "seed002_masterpass_unlink_success.json",
    );
    let unlinked = client(&sim)
        .masterpass_unlink(Uuid::new_v4())
        .await
        .unwrap();
    assert_eq!(
        unlinked,
        MasterpassUnlinked {
            session_id: Some("b827433e-f36b-1410-80e5-004205aa382d".into()),
            session_renewed: Some(false),
            retrieval_reference_number: Some("100005844116".into()),
        }
    );
}

#[tokio::test]
async fn seed_002_masterpass_failure_example_is_a_rejection_despite_result_true() {
    let sim = start();
    replay(
        &sim,
        "DELETE",
        "/api/paywall/masterpass/merchant/unlink",
        "seed002_masterpass_unlink_failure.json",
    );
    let err = client(&sim)
        .masterpass_unlink(Uuid::new_v4())
        .await
        .unwrap_err();
    match &err {
        ApiError::Rejected {
            message,
            client_message,
            error_code,
            ..
        } => {
            assert_eq!(message.as_deref(), Some("Hesap iş yerine bağlı değil."));
            assert_eq!(
                client_message.as_deref(),
                Some("ACCOUNT_NOT_LINKED_TO_MERCHANT")
            );
            assert_eq!(*error_code, Some(404));
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert!(!err.is_retryable());
    // A rejection is not retried.
    assert_eq!(sim.requests().len(), 1);
}

#[tokio::test]
async fn seed_003_checkout_passive_answer_with_null_body_is_a_success() {
    let sim = start();
    replay(
        &sim,
        "PUT",
        "/api/paywall/checkout/passive",
        "seed003_checkout_passive_response.json",
    );
    client(&sim).checkout_deactivate(205334385).await.unwrap();
}

#[tokio::test]
async fn seed_004_cancel_answer_gives_the_ids_activity_type_and_status() {
    let sim = start();
    replay(
        &sim,
        "POST",
        "/api/payment/async/cancel",
        "seed004_async_cancel_response.json",
    );
    let accepted = client(&sim).cancel(Uuid::new_v4()).await.unwrap();
    assert_eq!(
        accepted,
        CancelAccepted {
            payment_request_id: "72ec8714-d116-4306-8881-38a43c485da9".parse().unwrap(),
            activity_id: Some("3a7deace-d437-4d3f-8ef8-1cba82f18e8f".parse().unwrap()),
            activity_type_id: Some(2),
            payment_status: Some(PaymentStatus(4)),
        }
    );
}

/// The simulator's raw answer (with the private pair) as JSON.
async fn raw(
    sim: &ApiSimulator,
    method: reqwest::Method,
    path: &str,
    body: String,
) -> serde_json::Value {
    let text = reqwest::Client::new()
        .request(method, format!("{}{path}", sim.url()))
        .header("apikeyprivate", DEMO_API_KEY_PRIVATE)
        .header("apiclientprivate", DEMO_API_CLIENT_PRIVATE)
        .body(body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn keys(value: &serde_json::Value) -> Vec<String> {
    let mut keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn the_simulators_own_answers_use_the_seeds_casing() {
    let sim = start();
    let reconnect = raw(
        &sim,
        reqwest::Method::PUT,
        "/api/connection/reconnect",
        format!("{{\"Id\":\"{DEMO_CONNECTION_ID}\"}}"),
    )
    .await;
    let seed_000: serde_json::Value =
        serde_json::from_str(&fixture("seed000_disconnect_response.json")).unwrap();
    assert_eq!(keys(&reconnect), keys(&seed_000), "{reconnect}");
    assert_eq!(reconnect["result"], seed_000["result"]);

    let payment = client(&sim).sale(&sale(Uuid::new_v4())).await.unwrap();
    let cancel = raw(
        &sim,
        reqwest::Method::POST,
        "/api/payment/async/cancel",
        format!(
            "{{\"PaymentRequestId\":\"{}\"}}",
            payment.payment_request_id
        ),
    )
    .await;
    let seed_004: serde_json::Value =
        serde_json::from_str(&fixture("seed004_async_cancel_response.json")).unwrap();
    assert_eq!(keys(&cancel), keys(&seed_004), "{cancel}");
    assert_eq!(
        keys(&cancel["result"]),
        keys(&seed_004["result"]),
        "{cancel}"
    );
}
