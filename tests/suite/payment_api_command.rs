//! `pos-agent simulate-api` as a user runs it: the real binary prints its URL first on stdout,
//! serves the API (and the `/_sim/` control endpoints), logs requests to stderr without key
//! values, and stops cleanly on SIGTERM.
use crate::support;

use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;

use crate::support::payment_api::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pos_agent::paywall::{ApiError, PaywallClient, RetryPolicy};
use pos_agent::simulator::api::*;
use uuid::Uuid;

#[tokio::test]
async fn simulate_api_prints_its_url_serves_and_stops_on_sigterm() {
    let mut child = support::pos_agent()
        .args(["simulate-api", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut url = String::new();
    stdout.read_line(&mut url).unwrap();
    let url = url.trim().to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "first line: {url:?}");

    let c = PaywallClient::from_config(&config(&url))
        .unwrap()
        .with_retry_policy(RetryPolicy::NONE);
    c.disconnect(DEMO_CONNECTION_ID).await.unwrap();
    // The simulator process holds the connection disconnected: a sale is refused.
    let refused = c.sale(&sale(Uuid::new_v4())).await.unwrap_err();
    assert!(
        matches!(
            refused,
            ApiError::Rejected {
                error_code: Some(codes::PROVIDER_NOT_CONNECTED),
                ..
            }
        ),
        "{refused:?}"
    );

    let injected = reqwest::Client::new()
        .post(format!("{url}/_sim/fault"))
        .body(r#"{"method":"PUT","path":"/api/connection/reconnect","kind":"http_500"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(injected.status(), 200);
    let err = c.reconnect(DEMO_CONNECTION_ID).await.unwrap_err();
    assert!(
        matches!(err, ApiError::Status { status: 500, .. }),
        "{err:?}"
    );

    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    assert!(
        stderr.contains("PUT /api/connection/disconnect -> 200"),
        "{stderr}"
    );
    assert!(
        stderr.contains("PUT /api/connection/reconnect -> 500 (injected)"),
        "{stderr}"
    );
    for secret in [
        DEMO_API_KEY_PRIVATE,
        DEMO_API_CLIENT_PRIVATE,
        DEMO_API_KEY_PUBLIC,
        DEMO_API_CLIENT_PUBLIC,
    ] {
        assert!(!stderr.contains(secret), "{stderr}");
    }
}

#[test]
fn simulate_api_on_a_busy_address_fails_with_a_clear_message() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = busy.local_addr().unwrap().to_string();
    let output = support::pos_agent()
        .args(["simulate-api", "--listen", &address])
        .output()
        .unwrap();
    assert_ne!(output.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {address}")),
        "{stderr}"
    );
}
