//! No key value reaches an error message, a `Debug` output or a log line (BRIEF standards,
//! docs/configuration.md, docs/payment-api.md §4): this test provokes every kind of error the client can produce,
//! captures every log line at the most verbose level, collects the Display and Debug of all of
//! it plus the client's and the configuration's Debug, and fails if any secret appears.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::payment_api::*;
use crate::support::SECRETS;
use pos_agent::paywall::*;
use pos_agent::simulator::api::*;
use secrecy::SecretString;
use uuid::Uuid;

/// Collects log output in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn both(outputs: &mut Vec<String>, e: &dyn std::fmt::Debug, d: &dyn std::fmt::Display) {
    outputs.push(format!("{d}"));
    outputs.push(format!("{d:#}"));
    outputs.push(format!("{e:?}"));
    outputs.push(format!("{e:#?}"));
}

#[tokio::test]
async fn no_secret_appears_in_any_error_debug_output_or_log_line() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _log = tracing::subscriber::set_default(subscriber);

    let mut outputs: Vec<String> = Vec::new();
    let mut errors: Vec<ApiError> = Vec::new();

    let sim = start();
    let c = client(&sim).with_retry_policy(RetryPolicy {
        max_retries: 1,
        ..FAST_RETRY
    });

    // Successful calls, so their request logs are captured too.
    c.establish_connection(&establish_config()).await.unwrap();
    let payment = c.sale(&sale(Uuid::new_v4())).await.unwrap();
    c.cancel(payment.payment_request_id).await.unwrap();

    // Each fault, on a sale (outcome unknown) and on an idempotent call.
    for kind in [
        FaultKind::Status500,
        FaultKind::MalformedBody,
        FaultKind::CloseWithoutReply,
        FaultKind::CreateThenDropReply,
    ] {
        sim.inject(Fault::new("POST", "/api/payment/async/sale", kind.clone()));
        errors.push(c.sale(&sale(Uuid::new_v4())).await.unwrap_err());
        sim.inject(Fault::new("PUT", "/api/connection/disconnect", kind).times(2));
        errors.push(c.disconnect(DEMO_CONNECTION_ID).await.unwrap_err());
        sim.clear_faults();
    }
    // Answers that echo a key back: the excerpt and the messages must not carry it.
    let echo = format!(
        "<html>apikeyprivate={DEMO_API_KEY_PRIVATE} apiclientprivate={DEMO_API_CLIENT_PRIVATE}</html>"
    );
    sim.inject(Fault::new(
        "POST",
        "/api/payment/async/sale",
        FaultKind::Reply {
            status: 200,
            body: echo,
        },
    ));
    errors.push(c.sale(&sale(Uuid::new_v4())).await.unwrap_err());
    let echo_envelope = format!(
        r#"{{"Succeeded":false,"Failed":true,"Message":"bad key {DEMO_API_KEY_PRIVATE}","ClientMessage":"{DEMO_API_CLIENT_PRIVATE}"}}"#
    );
    sim.inject(
        Fault::new(
            "PUT",
            "/api/connection/reconnect",
            FaultKind::Reply {
                status: 502,
                body: echo_envelope.clone(),
            },
        )
        .times(2),
    );
    errors.push(c.reconnect(DEMO_CONNECTION_ID).await.unwrap_err());
    sim.inject(Fault::new(
        "PUT",
        "/api/connection/reconnect",
        FaultKind::Reply {
            status: 200,
            body: echo_envelope,
        },
    ));
    let rejection = c.reconnect(DEMO_CONNECTION_ID).await.unwrap_err();
    assert!(rejection.is_rejection());
    errors.push(rejection);

    // Rejections, timeouts, refused connections, setup and request errors.
    errors.push(c.cancel(Uuid::new_v4()).await.unwrap_err());
    errors.push(c.masterpass_unlink(Uuid::new_v4()).await.unwrap_err());
    let mut slow = config(&sim.url());
    slow.request_timeout = Duration::from_millis(100);
    let slow = PaywallClient::from_config(&slow)
        .unwrap()
        .with_retry_policy(RetryPolicy::NONE);
    sim.inject(Fault::new(
        "POST",
        "/api/payment/async/sale",
        FaultKind::Latency(Duration::from_secs(3)),
    ));
    errors.push(slow.sale(&sale(Uuid::new_v4())).await.unwrap_err());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let refused = PaywallClient::from_config(&config(&format!("http://127.0.0.1:{port}")))
        .unwrap()
        .with_retry_policy(FAST_RETRY);
    errors.push(refused.disconnect(DEMO_CONNECTION_ID).await.unwrap_err());
    let other_keys = ApiSimulator::start(SimulatorOptions {
        api_key_private: "another-key".into(),
        ..SimulatorOptions::default()
    })
    .unwrap();
    let unauthorised = PaywallClient::from_config(&config(&other_keys.url())).unwrap();
    errors.push(
        unauthorised
            .disconnect(DEMO_CONNECTION_ID)
            .await
            .unwrap_err(),
    );
    let mut no_public = config(&sim.url());
    no_public.api_key_public = None;
    no_public.api_client_public = None;
    let no_public = PaywallClient::from_config(&no_public).unwrap();
    errors.push(no_public.checkout_deactivate(1).await.unwrap_err());
    let mut bad_sale = sale(Uuid::new_v4());
    bad_sale.amount_minor = -5;
    errors.push(c.sale(&bad_sale).await.unwrap_err());
    assert_eq!(errors.len(), 18);

    let mut setup_errors = Vec::new();
    let mut insecure = config("http://127.0.0.1:1");
    insecure.allow_insecure_http = false;
    setup_errors.push(PaywallClient::from_config(&insecure).unwrap_err());
    let mut broken_key = config(&sim.url());
    broken_key.api_client_private =
        Some(SecretString::from(format!("{DEMO_API_CLIENT_PRIVATE}\n")));
    broken_key.api_key_private = Some(SecretString::from(format!("{DEMO_API_KEY_PRIVATE}\u{7f}")));
    setup_errors.push(PaywallClient::from_config(&broken_key).unwrap_err());
    let mut missing = config(&sim.url());
    missing.api_key_private = None;
    setup_errors.push(PaywallClient::from_config(&missing).unwrap_err());
    let mut half = config(&sim.url());
    half.api_client_public = None;
    setup_errors.push(PaywallClient::from_config(&half).unwrap_err());

    for e in &errors {
        both(&mut outputs, e, e);
    }
    for e in &setup_errors {
        both(&mut outputs, e, e);
    }
    outputs.push(format!("{c:?}"));
    outputs.push(format!("{:#?}", config(&sim.url())));
    outputs.push(format!("{:#?}", establish_config()));
    outputs.push(format!("{:?}", sim.requests()));
    drop(_log);
    outputs.push(String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned());

    assert!(
        outputs.last().unwrap().contains("/api/payment/async/sale"),
        "the request log was captured"
    );
    for output in &outputs {
        for secret in SECRETS {
            assert!(
                !output.contains(secret),
                "secret {secret:?} leaked in: {output}"
            );
            // Nor a large piece of it (an excerpt cut in the middle of a key).
            let head = &secret[..secret.len() * 2 / 3];
            assert!(
                !output.contains(head),
                "part of {secret:?} leaked in: {output}"
            );
        }
    }
}
