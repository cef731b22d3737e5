//! Injected faults map to the right error class, retries stop at their budget, a sale is never
//! repeated, and a sale whose answer was lost is resolved by its MerchantUniqueCode
//! (docs/payment-api.md §4, docs/state.md).

use std::time::{Duration, SystemTime};

use crate::support::paths::{CANCEL, DISCONNECT, SALE};
use crate::support::payment_api::*;
use pos_agent::paywall::*;
use pos_agent::simulator::api::*;
use uuid::Uuid;

fn two_retries(sim: &ApiSimulator) -> PaywallClient {
    client(sim).with_retry_policy(RetryPolicy {
        max_retries: 2,
        ..FAST_RETRY
    })
}

#[tokio::test]
async fn cancel_retries_stop_at_the_budget_and_report_the_http_status() {
    let sim = start();
    let c = two_retries(&sim);
    let payment = c.sale(&sale(Uuid::new_v4())).await.unwrap();
    sim.inject(Fault::new("POST", CANCEL, FaultKind::Status500).times(10));
    let err = c.cancel(payment.payment_request_id).await.unwrap_err();
    assert!(
        matches!(err, ApiError::Status { status: 500, .. }),
        "{err:?}"
    );
    assert!(err.is_retryable() && !err.outcome_unknown() && !err.is_rejection());
    assert_eq!(
        sim.requests_to("POST", CANCEL).len(),
        3,
        "one try and two retries"
    );
    assert_eq!(
        sim.payment(payment.payment_request_id).unwrap().status,
        PaymentStatus::CREATED
    );
}

#[tokio::test]
async fn cancel_succeeds_after_transient_server_errors() {
    let sim = start();
    let c = client(&sim);
    let payment = c.sale(&sale(Uuid::new_v4())).await.unwrap();
    sim.inject(Fault::new("POST", CANCEL, FaultKind::Status500).times(2));
    let accepted = c.cancel(payment.payment_request_id).await.unwrap();
    assert_eq!(accepted.payment_status, Some(PaymentStatus::CANCELLED));
    assert_eq!(sim.requests_to("POST", CANCEL).len(), 3);
}

#[tokio::test]
async fn a_rejection_is_not_retried() {
    let sim = start();
    let err = client(&sim).cancel(Uuid::new_v4()).await.unwrap_err();
    assert!(err.is_rejection(), "{err:?}");
    assert_eq!(sim.requests_to("POST", CANCEL).len(), 1);
}

#[tokio::test]
async fn sale_answered_500_is_not_repeated_and_its_outcome_is_unknown() {
    let sim = start();
    sim.inject(Fault::new("POST", SALE, FaultKind::Status500).times(5));
    let err = client(&sim).sale(&sale(Uuid::new_v4())).await.unwrap_err();
    assert!(
        matches!(err, ApiError::Status { status: 500, .. }),
        "{err:?}"
    );
    assert!(err.outcome_unknown());
    assert_eq!(sim.requests_to("POST", SALE).len(), 1);
}

#[tokio::test]
async fn sale_whose_reply_is_dropped_after_creation_is_found_by_its_merchant_code() {
    let sim = start();
    let c = client(&sim);
    let code = Uuid::new_v4();
    let sent_at = SystemTime::now();
    sim.inject(Fault::new("POST", SALE, FaultKind::CreateThenDropReply));
    let err = c.sale(&sale(code)).await.unwrap_err();
    assert!(
        matches!(
            err,
            ApiError::Transport {
                kind: TransportKind::ConnectionLost,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.outcome_unknown(), "{err}");
    assert_eq!(
        sim.requests_to("POST", SALE).len(),
        1,
        "a sale is never resent"
    );
    let created = sim.payments();
    assert_eq!(created.len(), 1);

    let found = c
        .find_payment_by_merchant_code(code, sent_at)
        .await
        .unwrap();
    let found = found.expect("the payment the API created is found");
    assert_eq!(found.payment_request_id, created[0].payment_request_id);
    assert_eq!(found.merchant_unique_code, Some(code));
    assert_eq!(found.amount_minor, Some(2250));
}

#[tokio::test]
async fn sale_closed_without_reply_leaves_no_payment_and_the_search_says_so() {
    let sim = start();
    let c = client(&sim);
    let code = Uuid::new_v4();
    sim.create_payment_elsewhere(Uuid::new_v4(), 100);
    sim.inject(Fault::new("POST", SALE, FaultKind::CloseWithoutReply));
    let err = c.sale(&sale(code)).await.unwrap_err();
    assert!(matches!(err, ApiError::Transport { .. }), "{err:?}");
    assert!(err.outcome_unknown());
    assert_eq!(sim.requests_to("POST", SALE).len(), 1);
    assert_eq!(
        c.find_payment_by_merchant_code(code, SystemTime::now())
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn malformed_body_is_undecodable_with_an_excerpt() {
    let sim = start();
    let c = client(&sim);
    sim.inject(Fault::new("POST", SALE, FaultKind::MalformedBody));
    let err = c.sale(&sale(Uuid::new_v4())).await.unwrap_err();
    match &err {
        ApiError::Undecodable { excerpt, .. } => {
            assert!(excerpt.starts_with("{\"Result\""), "{excerpt}")
        }
        other => panic!("{other:?}"),
    }
    assert!(
        err.outcome_unknown(),
        "a sale's unreadable answer leaves its outcome unknown"
    );

    sim.inject(Fault::new("PUT", DISCONNECT, FaultKind::MalformedBody));
    let err = c.disconnect(DEMO_CONNECTION_ID).await.unwrap_err();
    assert!(matches!(err, ApiError::Undecodable { .. }), "{err:?}");
    assert!(!err.outcome_unknown() && !err.is_retryable());
    assert_eq!(sim.requests_to("PUT", DISCONNECT).len(), 1);
}

#[tokio::test]
async fn disconnect_dropped_without_reply_is_retried_and_succeeds() {
    let sim = start();
    sim.inject(Fault::new("PUT", DISCONNECT, FaultKind::CloseWithoutReply));
    client(&sim).disconnect(DEMO_CONNECTION_ID).await.unwrap();
    assert_eq!(sim.requests_to("PUT", DISCONNECT).len(), 2);
    assert!(!sim.connections()[0].is_connected);
}

#[tokio::test]
async fn latency_beyond_the_request_timeout_is_a_timeout() {
    let sim = start();
    let mut config = config(&sim.url());
    config.request_timeout = Duration::from_millis(200);
    let c = PaywallClient::from_config(&config)
        .unwrap()
        .with_retry_policy(RetryPolicy::NONE);
    sim.inject(Fault::new(
        "POST",
        SALE,
        FaultKind::Latency(Duration::from_secs(5)),
    ));
    let err = c.sale(&sale(Uuid::new_v4())).await.unwrap_err();
    assert!(
        matches!(
            err,
            ApiError::Transport {
                kind: TransportKind::Timeout,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.outcome_unknown());
}

#[tokio::test]
async fn latency_within_the_timeout_only_slows_the_answer() {
    let sim = start();
    sim.set_latency(Duration::from_millis(50));
    let started = std::time::Instant::now();
    client(&sim).disconnect(DEMO_CONNECTION_ID).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(50));
}

#[tokio::test]
async fn refused_connection_is_a_transport_error_with_a_known_outcome() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = PaywallClient::from_config(&config(&format!("http://127.0.0.1:{port}")))
        .unwrap()
        .with_retry_policy(RetryPolicy::NONE);
    let err = c.sale(&sale(Uuid::new_v4())).await.unwrap_err();
    assert!(
        matches!(
            err,
            ApiError::Transport {
                kind: TransportKind::Connect,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        !err.outcome_unknown(),
        "nothing was sent, so the sale did not happen"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn search_pages_through_the_whole_window() {
    let sim = start();
    let c = client(&sim);
    let code = Uuid::new_v4();
    // The wanted payment is the oldest, so it sits on the last page (newest first).
    let wanted = sim.create_payment_elsewhere(code, 999);
    for _ in 0..230 {
        sim.create_payment_elsewhere(Uuid::new_v4(), 100);
    }
    let found = c
        .find_payment_by_merchant_code(code, SystemTime::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.payment_request_id, wanted);
    assert_eq!(sim.requests_to("POST", "/api/payment/list").len(), 3);
}

#[tokio::test]
async fn search_errors_are_errors_not_absence() {
    let sim = start();
    let c = two_retries(&sim);
    sim.inject(Fault::new("POST", "/api/payment/list", FaultKind::Status500).always());
    let err = c
        .find_payment_by_merchant_code(Uuid::new_v4(), SystemTime::now())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ApiError::Status { status: 500, .. }),
        "{err:?}"
    );
    assert_eq!(sim.requests_to("POST", "/api/payment/list").len(), 3);
}

#[tokio::test]
async fn a_redirect_is_not_followed_so_the_keys_stay_home() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let thief = start();
    let redirector = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let redirector_url = format!("http://{}", redirector.local_addr().unwrap());
    let location = format!("{}/api/connection/disconnect", thief.url());
    tokio::spawn(async move {
        let (mut stream, _) = redirector.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        // Read the head and the small body, then answer with a redirect.
        while !String::from_utf8_lossy(&request).contains("\"Id\"") {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
        }
        let answer = format!(
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(answer.as_bytes()).await.unwrap();
        stream.shutdown().await.unwrap();
    });
    let c = PaywallClient::from_config(&config(&redirector_url))
        .unwrap()
        .with_retry_policy(RetryPolicy::NONE);
    let err = c.disconnect(DEMO_CONNECTION_ID).await.unwrap_err();
    assert!(
        matches!(err, ApiError::Status { status: 307, .. }),
        "{err:?}"
    );
    assert!(thief.requests().is_empty(), "the redirect was followed");
}

/// An API that answers every page of the payments list with the same full page (it ignores
/// the page index) ends a merchant-code lookup after 200 pages, as unknown, never as absent.
#[tokio::test]
async fn a_payments_list_without_an_end_stops_the_lookup_at_the_page_cap() {
    let sim = start();
    let items: Vec<serde_json::Value> = (0..100)
        .map(|_| serde_json::json!({ "PaymentRequestId": Uuid::new_v4(), "MerchantUniqueCode": Uuid::new_v4() }))
        .collect();
    let body = serde_json::json!({
        "Result": { "Items": items }, "ErrorCode": 0, "Failed": false, "Message": "",
        "ClientMessage": "", "Succeeded": true
    })
    .to_string();
    sim.inject(
        Fault::new(
            "POST",
            "/api/payment/list",
            FaultKind::Reply { status: 200, body },
        )
        .always(),
    );
    let err = client(&sim)
        .find_payment_by_merchant_code(Uuid::new_v4(), SystemTime::now())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("past 200 pages"), "{err}");
    assert_eq!(sim.requests_to("POST", "/api/payment/list").len(), 200);
}

/// An answer body over the cap is not read to its end: the call fails naming the cap.
#[tokio::test]
async fn an_answer_longer_than_the_cap_is_an_error_not_read_whole() {
    let sim = start();
    let body = format!(r#"{{"Result": "{}"}}"#, "x".repeat(3 << 20));
    sim.inject(
        Fault::new(
            "POST",
            "/api/payment/list",
            FaultKind::Reply { status: 200, body },
        )
        .always(),
    );
    let err = client(&sim)
        .find_payment_by_merchant_code(Uuid::new_v4(), SystemTime::now())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("longer than 2 MiB"), "{err}");
}
