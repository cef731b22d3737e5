//! The payment API client against the simulator, in process: a client configured for a running
//! simulator, the establish parameters, a sale, the seed fixtures.

use std::collections::BTreeMap;
use std::time::Duration;

use pos_agent::config::{EstablishConfig, PaywallConfig};
use pos_agent::paywall::{PaywallClient, RetryPolicy, SaleRequest, TerminalId, TerminalRef};
use pos_agent::simulator::api::*;
use secrecy::SecretString;
use uuid::Uuid;

use super::SERVICE_PARAMETER_SECRET;

/// Short waits so a test with retries takes milliseconds.
pub const FAST_RETRY: RetryPolicy = RetryPolicy {
    max_retries: 3,
    min_delay: Duration::from_millis(1),
    max_delay: Duration::from_millis(5),
};

pub fn config(url: &str) -> PaywallConfig {
    PaywallConfig {
        physical_api_url: url.to_owned(),
        payment_api_url: Some(url.to_owned()),
        api_key_private: Some(SecretString::from(DEMO_API_KEY_PRIVATE)),
        api_client_private: Some(SecretString::from(DEMO_API_CLIENT_PRIVATE)),
        api_key_public: Some(SecretString::from(DEMO_API_KEY_PUBLIC)),
        api_client_public: Some(SecretString::from(DEMO_API_CLIENT_PUBLIC)),
        request_timeout: Duration::from_secs(5),
        locale: Some("tr".to_owned()),
        allow_insecure_http: true,
    }
}

pub fn client(sim: &ApiSimulator) -> PaywallClient {
    PaywallClient::from_config(&config(&sim.url()))
        .unwrap()
        .with_retry_policy(FAST_RETRY)
}

pub fn start() -> ApiSimulator {
    ApiSimulator::start(SimulatorOptions::default()).unwrap()
}

pub fn establish_config() -> EstablishConfig {
    let mut service_parameters = BTreeMap::new();
    service_parameters.insert(
        "Reporting_ApiKey".to_owned(),
        SecretString::from(SERVICE_PARAMETER_SECRET),
    );
    EstablishConfig {
        name: "shop 1 till 2".to_owned(),
        display_name: Some("Till 2".to_owned()),
        brand_id: 10,
        provider_id: 10,
        region_id: 1,
        end_of_day_id: 10,
        is_prod: false,
        is_reporting: false,
        is_async_payment: true,
        is_socket_payment: false,
        service_parameters,
    }
}

pub fn sale(merchant_unique_code: Uuid) -> SaleRequest {
    SaleRequest {
        terminal: TerminalRef::Id(TerminalId::parse(DEMO_TERMINAL_ID).unwrap()),
        merchant_unique_code,
        amount_minor: 2250,
        currency_id: 1,
        display_code: None,
        callback_address: None,
    }
}

/// The top-level keys of a fixture, sorted.
pub fn fixture_keys(name: &str) -> Vec<String> {
    let value: serde_json::Value = serde_json::from_str(&fixture(name)).unwrap();
    let mut keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    keys
}

pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

pub fn sorted(keys: &[&str]) -> Vec<String> {
    let mut keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    keys.sort();
    keys
}
