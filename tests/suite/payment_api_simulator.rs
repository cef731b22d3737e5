//! The simulator keeps state like the API would (docs/payment-api.md §2): key checks, connections,
//! payments, duplicate MerchantUniqueCodes, cancels, list and query, Masterpass sessions; and
//! its inspection helpers (`wait_for_request`) work on a current-thread runtime.

use std::time::{Duration, SystemTime};

use crate::support::payment_api::*;
use pos_agent::paywall::*;
use pos_agent::simulator::api::*;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use uuid::Uuid;

/// One call of the simulator as a plain HTTP request with the private key pair, its answer read
/// as the client reads it: the endpoints the agent never calls stay covered here.
async fn plain_call(
    sim: &ApiSimulator,
    endpoint: Endpoint,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Answer, ApiError> {
    let config = config(&sim.url());
    let secret = |s: Option<SecretString>| s.unwrap().expose_secret().to_owned();
    let mut request = reqwest::Client::new()
        .request(method, format!("{}{path}", sim.url()))
        .header("apikeyprivate", secret(config.api_key_private))
        .header("apiclientprivate", secret(config.api_client_private));
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let answer = request.send().await.unwrap();
    let status = answer.status().as_u16();
    let bytes = answer.bytes().await.unwrap();
    endpoint.read_answer(status, &bytes, &[])
}

async fn query_payment(sim: &ApiSimulator, id: Uuid) -> PaymentSummary {
    let path = format!("/api/payment/inquiry/{id}");
    match plain_call(
        sim,
        Endpoint::QueryPayment,
        reqwest::Method::GET,
        &path,
        None,
    )
    .await
    {
        Ok(Answer::Payment(payment)) => payment,
        other => panic!("{other:?}"),
    }
}

async fn connection_detail(sim: &ApiSimulator, id: &str) -> Result<ConnectionInfo, ApiError> {
    let path = format!("/api/connection/{id}/detail");
    match plain_call(
        sim,
        Endpoint::ConnectionDetail,
        reqwest::Method::GET,
        &path,
        None,
    )
    .await?
    {
        Answer::Connection(info) => Ok(info),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn wrong_keys_get_http_401_with_the_failure_message_and_no_retry() {
    let sim = start();
    let mut config = config(&sim.url());
    config.api_key_private = Some(SecretString::from("not-the-key"));
    let c = PaywallClient::from_config(&config)
        .unwrap()
        .with_retry_policy(FAST_RETRY);
    let err = c.disconnect(DEMO_CONNECTION_ID).await.unwrap_err();
    match &err {
        ApiError::Status {
            status: 401,
            message,
            client_message,
            ..
        } => {
            assert!(message.as_deref().unwrap().contains("key pair"));
            assert_eq!(client_message.as_deref(), Some("Unauthorized"));
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.is_retryable());
    assert_eq!(sim.requests().len(), 1);
    assert!(sim.connections()[0].is_connected, "nothing was done");
}

#[tokio::test]
async fn public_endpoints_refuse_the_private_pair() {
    let sim = start();
    let mut config = config(&sim.url());
    config.api_key_public = config.api_key_private.clone();
    config.api_client_public = config.api_client_private.clone();
    let c = PaywallClient::from_config(&config).unwrap();
    let err = c.checkout_deactivate(1).await.unwrap_err();
    assert!(
        matches!(err, ApiError::Status { status: 401, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn public_calls_without_public_keys_are_not_sent() {
    let sim = start();
    let mut config = config(&sim.url());
    config.api_key_public = None;
    config.api_client_public = None;
    let c = PaywallClient::from_config(&config).unwrap();
    let err = c.checkout_deactivate(1).await.unwrap_err();
    assert!(matches!(err, ApiError::NotConfigured { .. }), "{err:?}");
    assert!(err.to_string().contains("paywall.api_key_public"), "{err}");
    assert!(sim.requests().is_empty());
}

#[tokio::test]
async fn a_repeated_merchant_unique_code_is_rejected() {
    let sim = start();
    let c = client(&sim);
    let code = Uuid::new_v4();
    c.sale(&sale(code)).await.unwrap();
    let err = c.sale(&sale(code)).await.unwrap_err();
    match &err {
        ApiError::Rejected {
            error_code,
            client_message,
            ..
        } => {
            assert_eq!(*error_code, Some(codes::DUPLICATE_MERCHANT_UNIQUE_CODE));
            assert_eq!(
                client_message.as_deref(),
                Some("MerchantUniqueCodeAlreadyExists")
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.outcome_unknown());
    assert_eq!(sim.payments().len(), 1);
}

#[tokio::test]
async fn cancel_changes_the_status_that_list_and_query_report() {
    let sim = start();
    let c = client(&sim);
    let code = Uuid::new_v4();
    let payment = c.sale(&sale(code)).await.unwrap();
    assert_eq!(payment.payment_status, Some(PaymentStatus::CREATED));
    let before = query_payment(&sim, payment.payment_request_id).await;
    assert_eq!(before.status, Some(PaymentStatus::CREATED));

    let cancelled = c.cancel(payment.payment_request_id).await.unwrap();
    assert_eq!(cancelled.payment_request_id, payment.payment_request_id);
    assert_eq!(cancelled.activity_type_id, Some(2));
    assert_eq!(cancelled.payment_status, Some(PaymentStatus::CANCELLED));
    assert_eq!(
        sim.payment(payment.payment_request_id).unwrap().status,
        PaymentStatus::CANCELLED
    );
    let after = query_payment(&sim, payment.payment_request_id).await;
    assert_eq!(after.status, Some(PaymentStatus::CANCELLED));
    let now = SystemTime::now();
    let listed = c
        .list_payments(&PaymentListQuery {
            page: PageRequest::default(),
            start: now,
            end: now,
        })
        .await
        .unwrap();
    assert_eq!(listed.total_count, Some(1));
    assert_eq!(listed.items[0].merchant_unique_code, Some(code));
    assert_eq!(listed.items[0].status, Some(PaymentStatus::CANCELLED));
}

#[tokio::test]
async fn payments_outside_the_date_window_are_not_listed() {
    let sim = start();
    let c = client(&sim);
    c.sale(&sale(Uuid::new_v4())).await.unwrap();
    let long_ago = SystemTime::now() - Duration::from_secs(10 * 86_400);
    let listed = c
        .list_payments(&PaymentListQuery {
            page: PageRequest::default(),
            start: long_ago,
            end: long_ago,
        })
        .await
        .unwrap();
    assert!(listed.items.is_empty());
}

#[tokio::test]
async fn a_final_payment_cannot_be_cancelled_and_an_unknown_one_is_not_found() {
    let sim = start();
    let c = client(&sim);
    let payment = c.sale(&sale(Uuid::new_v4())).await.unwrap();
    assert!(sim.set_payment_status(payment.payment_request_id, PaymentStatus::SUCCESSFUL));
    let err = c.cancel(payment.payment_request_id).await.unwrap_err();
    assert!(
        matches!(
            err,
            ApiError::Rejected {
                error_code: Some(codes::PAYMENT_ALREADY_COMPLETED),
                ..
            }
        ),
        "{err:?}"
    );
    let err = c.cancel(Uuid::new_v4()).await.unwrap_err();
    assert!(
        matches!(
            err,
            ApiError::Rejected {
                error_code: Some(codes::GENERAL),
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn cancelling_twice_answers_like_the_first_time() {
    let sim = start();
    let c = client(&sim);
    let payment = c.sale(&sale(Uuid::new_v4())).await.unwrap();
    let first = c.cancel(payment.payment_request_id).await.unwrap();
    let second = c.cancel(payment.payment_request_id).await.unwrap();
    assert_eq!(first, second);
}

#[tokio::test]
async fn sale_on_a_disconnected_connection_is_rejected_until_reconnect() {
    let sim = start();
    let c = client(&sim);
    c.disconnect(DEMO_CONNECTION_ID).await.unwrap();
    let detail = connection_detail(&sim, DEMO_CONNECTION_ID).await.unwrap();
    assert_eq!(detail.is_connected, Some(false));
    let err = c.sale(&sale(Uuid::new_v4())).await.unwrap_err();
    assert!(
        matches!(
            err,
            ApiError::Rejected {
                error_code: Some(codes::PROVIDER_NOT_CONNECTED),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(sim.payments().is_empty());
    c.reconnect(DEMO_CONNECTION_ID).await.unwrap();
    c.sale(&sale(Uuid::new_v4())).await.unwrap();
}

#[tokio::test]
async fn sale_on_an_unknown_terminal_is_rejected() {
    let sim = start();
    let mut request = sale(Uuid::new_v4());
    request.terminal = TerminalRef::TagCode(TagCode::parse("no_such_pos").unwrap());
    let err = client(&sim).sale(&request).await.unwrap_err();
    match err {
        ApiError::Rejected { client_message, .. } => {
            assert_eq!(client_message.as_deref(), Some("TerminalNotFound"))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn invalid_sales_are_refused_before_sending() {
    let sim = start();
    let c = client(&sim);
    // Lengths (display code, callback address) are checked where they enter, not here: the
    // terminal's request when it is read, the configuration when it is loaded.
    let mut zero = sale(Uuid::new_v4());
    zero.amount_minor = 0;
    let mut too_large = sale(Uuid::new_v4());
    too_large.amount_minor = amount::MAX_MINOR + 1;
    for request in [zero, too_large] {
        let err = c.sale(&request).await.unwrap_err();
        assert!(matches!(err, ApiError::InvalidRequest { .. }), "{err:?}");
    }
    assert!(sim.requests().is_empty());
}

#[tokio::test]
async fn connection_lifecycle_without_a_starting_connection() {
    let sim = ApiSimulator::start(SimulatorOptions {
        with_connection: false,
        ..SimulatorOptions::default()
    })
    .unwrap();
    let c = client(&sim);
    let err = c.sale(&sale(Uuid::new_v4())).await.unwrap_err();
    assert!(err.is_rejection(), "no connection yet: {err:?}");

    let id = c.establish_connection(&establish_config()).await.unwrap();
    assert_eq!(
        sim.terminals()[0].connection_id.as_deref(),
        Some(id.as_str())
    );
    c.sale(&sale(Uuid::new_v4())).await.unwrap();

    let establish = establish_config();
    let renamed = json!({
        "Id": id, "Name": "renamed", "DisplayName": establish.display_name,
        "BrandId": establish.brand_id, "ProviderId": establish.provider_id,
        "RegionId": establish.region_id, "EndOfDayId": establish.end_of_day_id,
        "IsProd": establish.is_prod, "IsReporting": establish.is_reporting,
        "IsAsyncPayment": establish.is_async_payment,
        "IsSocketPayment": establish.is_socket_payment, "ServiceParameters": {},
    });
    let put = reqwest::Method::PUT;
    let updated = plain_call(
        &sim,
        Endpoint::UpdateConnection,
        put,
        "/api/connection",
        Some(renamed),
    );
    assert_eq!(updated.await.unwrap(), Answer::Done);
    let detail = connection_detail(&sim, &id).await.unwrap();
    assert_eq!(detail.name.as_deref(), Some("renamed"));
    let page = Some(json!({ "pageIndex": 0, "pageSize": 10 }));
    let post = reqwest::Method::POST;
    match plain_call(
        &sim,
        Endpoint::ListConnections,
        post.clone(),
        "/api/connection/list",
        page.clone(),
    )
    .await
    {
        Ok(Answer::Connections(connections)) => assert_eq!(connections.items.len(), 1),
        other => panic!("{other:?}"),
    }
    match plain_call(
        &sim,
        Endpoint::ListTerminals,
        post,
        "/api/terminal/list",
        page,
    )
    .await
    {
        Ok(Answer::Terminals(terminals)) => {
            assert_eq!(terminals.items[0].id, DEMO_TERMINAL_ID);
            assert_eq!(
                terminals.items[0].tag_code.as_deref(),
                Some(DEMO_TERMINAL_TAG_CODE)
            );
        }
        other => panic!("{other:?}"),
    }

    let delete = reqwest::Method::DELETE;
    let deleted = plain_call(
        &sim,
        Endpoint::DeleteConnection,
        delete,
        "/api/connection",
        Some(json!({ "Id": id })),
    );
    assert_eq!(deleted.await.unwrap(), Answer::Done);
    assert!(sim.connections().is_empty());
    assert!(connection_detail(&sim, &id)
        .await
        .unwrap_err()
        .is_rejection());
}

#[tokio::test]
async fn masterpass_session_unlinks_once_then_answers_like_the_seed_failure() {
    let sim = start();
    let c = client(&sim);
    let session = Uuid::new_v4();
    sim.link_masterpass_session(session);
    c.masterpass_unlink(session).await.unwrap();
    let err = c.masterpass_unlink(session).await.unwrap_err();
    match err {
        ApiError::Rejected {
            client_message,
            error_code,
            ..
        } => {
            assert_eq!(
                client_message.as_deref(),
                Some("ACCOUNT_NOT_LINKED_TO_MERCHANT")
            );
            assert_eq!(error_code, Some(404));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn apm_unlink_needs_exactly_one_target_on_the_wire() {
    let sim = start();
    let http = reqwest::Client::new();
    let answer = http
        .post(format!("{}/api/paywall/apm/unlink", sim.url()))
        .header("apikeypublic", DEMO_API_KEY_PUBLIC)
        .header("apiclientpublic", DEMO_API_CLIENT_PUBLIC)
        .body(r#"{"Phone":"905342979639","ApmConnectionId":2013,"ApmKey":"Masterpass_IFrame"}"#)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(value["Result"], false, "{answer}");
    assert_eq!(value["ErrorCode"], codes::UNEXPECTED_PARAMETERS);
}

#[tokio::test]
async fn wait_for_request_wakes_when_the_request_arrives() {
    let sim = start();
    let c = client(&sim);
    let payment = c.sale(&sale(Uuid::new_v4())).await.unwrap();
    let id = payment.payment_request_id.to_string();
    let (seen, cancelled) = tokio::join!(
        sim.wait_for_request(
            |r| r.is("POST", "/api/payment/async/cancel")
                && r.body
                    .as_ref()
                    .is_some_and(|b| b["PaymentRequestId"] == id.as_str()),
            Duration::from_secs(10),
        ),
        c.cancel(payment.payment_request_id),
    );
    cancelled.unwrap();
    assert!(seen.is_some());
}

#[tokio::test]
async fn wait_for_request_gives_up_after_its_timeout() {
    let sim = start();
    let seen = sim
        .wait_for_request(
            |r| r.is("POST", "/api/payment/async/cancel"),
            Duration::from_millis(50),
        )
        .await;
    assert!(seen.is_none());
}

#[test]
fn starting_outside_a_runtime_is_an_error_not_a_panic() {
    let err = ApiSimulator::start(SimulatorOptions::default()).unwrap_err();
    assert!(err.to_string().contains("tokio runtime"));
}

#[tokio::test]
async fn admin_endpoint_injects_faults_for_other_processes() {
    let sim = start();
    let http = reqwest::Client::new();
    let answer = http
        .post(format!("{}/_sim/fault", sim.url()))
        .body(r#"{"method":"PUT","path":"/api/connection/disconnect","kind":"http_500","times":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let c = client(&sim).with_retry_policy(RetryPolicy::NONE);
    let err = c.disconnect(DEMO_CONNECTION_ID).await.unwrap_err();
    assert!(
        matches!(err, ApiError::Status { status: 500, .. }),
        "{err:?}"
    );
    c.disconnect(DEMO_CONNECTION_ID).await.unwrap();
    let state: serde_json::Value = serde_json::from_str(
        &http
            .get(format!("{}/_sim/state", sim.url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(state["result"]["connections"][0]["IsConnected"], false);
}

#[tokio::test]
async fn a_rate_limit_set_through_the_admin_endpoint_holds_the_client() {
    let sim = start();
    let http = reqwest::Client::new();
    let answer = http
        .post(format!("{}/_sim/fault", sim.url()))
        .body(r#"{"method":"PUT","path":"/api/connection/reconnect","kind":"retry_after","status":503,"retry_after":"7"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    // Not retried by the client: the wait is the caller's to honour.
    let c = client(&sim);
    let err = c.reconnect(DEMO_CONNECTION_ID).await.unwrap_err();
    assert!(
        matches!(
            err,
            ApiError::Status {
                status: 503,
                retry_after: Some(wait),
                ..
            } if wait == Duration::from_secs(7)
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("asks to be called again in 7 s"),
        "{err}"
    );
    assert_eq!(sim.requests().len(), 1);
    let hold = c.held().expect("the client holds");
    assert_eq!(hold.http_status, 503);
    // Until it ends, nothing is sent, whichever call and whichever clone.
    let held = c.clone().disconnect(DEMO_CONNECTION_ID).await.unwrap_err();
    assert!(
        matches!(
            held,
            ApiError::Held {
                http_status: 503,
                ..
            }
        ),
        "{held:?}"
    );
    assert!(held.was_not_sent() && !held.is_retryable(), "{held:?}");
    assert!(held.retry_after().unwrap() <= Duration::from_secs(7));
    assert_eq!(sim.requests().len(), 1);

    let bad = http
        .post(format!("{}/_sim/fault", sim.url()))
        .body(r#"{"method":"*","path":"*","kind":"retry_after","status":500,"retry_after":"7"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn a_refusal_set_through_the_admin_endpoint_is_answered_as_given() {
    let sim = start();
    let http = reqwest::Client::new();
    let answer = http
        .post(format!("{}/_sim/fault", sim.url()))
        .body(
            r#"{"method":"POST","path":"/api/payment/async/cancel","kind":"reply","status":200,
                "body":{"Result":null,"ErrorCode":1,"Failed":true,"Message":"Cancel is not allowed now.",
                        "ClientMessage":"CancelNotAllowed","Succeeded":false}}"#,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let c = client(&sim).with_retry_policy(RetryPolicy::NONE);
    let err = c.cancel(Uuid::new_v4()).await.unwrap_err();
    assert!(
        matches!(
            &err,
            ApiError::Rejected { client_message: Some(m), error_code: Some(1), .. } if m == "CancelNotAllowed"
        ),
        "{err:?}"
    );
    // Once, as `times` defaults to 1: the next cancel reaches the simulator's own logic.
    let next = c.cancel(Uuid::new_v4()).await;
    assert!(
        !format!("{next:?}").contains("CancelNotAllowed"),
        "{next:?}"
    );

    for bad in [
        r#"{"method":"*","path":"*","kind":"reply","status":200}"#,
        r#"{"method":"*","path":"*","kind":"reply","status":1000,"body":"x"}"#,
    ] {
        let answer = http
            .post(format!("{}/_sim/fault", sim.url()))
            .body(bad)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 400, "{bad}");
    }
}
