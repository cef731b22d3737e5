//! The state between releases, against the real daemon (docs/state.md, "Compatibility between
//! releases"): state only a newer release writes stops the start with exit 74 and an error that
//! names the version and keeps the files, never advising to move them away; and a clean stop
//! leaves the snapshot alone holding everything, with an empty journal.

use std::path::Path;

use crate::support::daemon::{Agent, Setup};
use nix::sys::signal::Signal;
use pos_agent::ids::PaymentRequestId;
use pos_agent::state::{load_from_bytes, AgentState, PaymentOutcome, SaleStage};

const EXIT_STATE_UNREADABLE: i32 = 74;

/// The error names `file`, says a newer release wrote it, and what else `says`; it never gives
/// the advice that loses every pending payment.
fn assert_refused_as_newer(log: &str, file: &Path, says: &str) {
    for needle in [
        file.display().to_string().as_str(),
        says,
        "do not move it away",
        "start that release or a newer one again",
    ] {
        assert!(log.contains(needle), "{needle:?} not in:\n{log}");
    }
    for advice in [
        "move it away (",
        "starts with empty state",
        "move the file away",
    ] {
        assert!(!log.contains(advice), "advises {advice:?}:\n{log}");
    }
}

/// Starts the agent again on its state directory as the test left it, and expects exit 74.
async fn refused_start(agent: &mut Agent) -> String {
    agent.spawn();
    let status = agent.wait_exit().await;
    assert_eq!(
        status.code(),
        Some(EXIT_STATE_UNREADABLE),
        "{}",
        agent.log()
    );
    agent.log()
}

#[tokio::test]
async fn a_state_file_of_a_newer_format_version_stops_the_start_naming_it_and_is_kept() {
    let mut agent = Agent::start(Setup::default()).await;
    agent.signal(Signal::SIGKILL);
    agent.wait_exit().await;
    let file = agent.state_dir.join("state.json");
    let newer = br#"{"version":3,"connection_id":null,"payments":{},"sales":{},"ledger":[]}"#;
    std::fs::write(&file, newer).unwrap();
    let _ = std::fs::remove_file(agent.state_dir.join("state.journal"));
    let log = refused_start(&mut agent).await;
    let says = "written by a newer pos-agent (format version 3; this one reads 1 and 2)";
    assert_refused_as_newer(&log, &file, says);
    assert_eq!(std::fs::read(&file).unwrap(), newer);
    agent.finish().await;
}

/// `payload` framed as a journal record (`pos_agent::state::frame_record`).
fn record(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    pos_agent::state::frame_record(payload, &mut out);
    out
}

#[tokio::test]
async fn a_journal_record_only_a_newer_release_writes_stops_the_start_naming_it_and_is_kept() {
    let mut agent = Agent::connected(Setup::default()).await;
    agent.started(100).await;
    agent.signal(Signal::SIGKILL);
    agent.wait_exit().await;
    // What a later release might journal: a stage this one does not know, in a whole record.
    let journal = agent.state_dir.join("state.journal");
    let mut bytes = std::fs::read(&journal).unwrap();
    assert!(!bytes.is_empty(), "the sale is journalled");
    bytes.extend(record(
        br#"{"changes":[{"op":"put_sale","merchant_unique_code":"m-1","sale":{"amount_minor":1,"currency_id":1,"since":"2026-12-01T10:00:00.000Z","stage":{"status":"settling","at":"2026-12-01T10:00:01.000Z"}}}]}"#,
    ));
    std::fs::write(&journal, &bytes).unwrap();
    let log = refused_start(&mut agent).await;
    let says = "written by a newer pos-agent (format version 2; unknown variant `settling`";
    assert_refused_as_newer(&log, &journal, says);
    assert_eq!(std::fs::read(&journal).unwrap(), bytes);
    // Damage is still damage, with the advice it always had.
    let mut damaged = bytes.clone();
    let at = damaged.len() - 20;
    damaged[at] ^= 0x20;
    damaged.extend(record(br#"{"changes":[]}"#));
    std::fs::write(&journal, &damaged).unwrap();
    let log = refused_start(&mut agent).await;
    let damage = log.lines().last().unwrap_or_default();
    assert!(damage.contains("record checksum mismatch"), "{log}");
    assert!(damage.contains("move it away"), "{log}");
    agent.finish().await;
}

fn read(path: &Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}

/// The state the snapshot alone holds, once the stop asserted the journal empty or absent.
fn snapshot_alone(agent: &Agent) -> AgentState {
    let journal = read(&agent.state_dir.join("state.journal")).unwrap_or_default();
    assert!(journal.is_empty(), "{} journal bytes left", journal.len());
    let snapshot = read(&agent.state_dir.join("state.json")).expect("a snapshot");
    load_from_bytes(Some(&snapshot), None).unwrap().state
}

fn journal_len(agent: &Agent) -> usize {
    read(&agent.state_dir.join("state.journal")).map_or(0, |j| j.len())
}

fn final_outcome(state: &AgentState, id: &str) -> Option<PaymentOutcome> {
    state.sales.values().find_map(|sale| match &sale.stage {
        SaleStage::Final {
            payment_request_id: Some(paid),
            outcome,
            ..
        } if paid == id => Some(*outcome),
        _ => None,
    })
}

#[tokio::test]
async fn a_clean_stop_leaves_the_snapshot_alone_holding_everything() {
    let mut agent = Agent::connected(Setup::default()).await;
    let cancelled = agent.started(100).await;
    let left = agent.started(200).await;
    let out = agent.cli(&["cancel", &cancelled]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let connection = agent.status().await["connection_id"].clone();
    assert!(journal_len(&agent) > 0, "the changes are in the journal");
    agent.signal(Signal::SIGTERM);
    let status = agent.wait_exit().await;
    assert_eq!(status.code(), Some(0), "{}", agent.log());
    let state = snapshot_alone(&agent);
    assert!(state.payments.is_empty(), "{state:?}");
    assert_eq!(
        final_outcome(&state, &cancelled),
        Some(PaymentOutcome::Cancelled)
    );
    assert_eq!(
        final_outcome(&state, &left),
        Some(PaymentOutcome::Cancelled)
    );
    assert_eq!(state.connection_id.as_deref(), connection.as_str());
    agent.finish().await;
}

fn keeping_pending() -> Setup {
    Setup {
        shutdown_toml: "deadline = \"10s\"\ncancel_pending = false\n".into(),
        ..Setup::default()
    }
}

#[tokio::test]
async fn a_clean_stop_that_keeps_pending_payments_compacts_too() {
    let mut agent = Agent::connected(keeping_pending()).await;
    let id = agent.started(100).await;
    assert!(journal_len(&agent) > 0);
    agent.signal(Signal::SIGTERM);
    assert_eq!(agent.wait_exit().await.code(), Some(0), "{}", agent.log());
    let state = snapshot_alone(&agent);
    assert!(state.payments.contains_key(id.as_str()), "{state:?}");
    assert!(state.sales.values().any(|sale| sale.stage
        == SaleStage::Started {
            payment_request_id: PaymentRequestId::stored(id.clone())
        }));
    agent.forget_notifications();
    agent.spawn();
    agent.wait_notification("READY=1").await;
    assert_eq!(agent.pending_ids().await, vec![id]);
    agent.finish().await;
}

#[tokio::test]
async fn a_compaction_that_fails_at_the_stop_is_logged_and_loses_nothing() {
    let mut agent = Agent::connected(keeping_pending()).await;
    let id = agent.started(100).await;
    // A directory where the snapshot's temporary file goes: the compaction cannot write it.
    let temp = agent.state_dir.join("state.json.tmp");
    std::fs::create_dir(&temp).unwrap();
    agent.signal(Signal::SIGTERM);
    assert_eq!(agent.wait_exit().await.code(), Some(0), "{}", agent.log());
    let log = agent.log();
    assert!(log.contains("cannot compact state at stop"), "{log}");
    assert!(journal_len(&agent) > 0, "the journal keeps the changes");
    let state = pos_agent::state::read_directory(&agent.state_dir).unwrap();
    assert!(state.payments.contains_key(id.as_str()), "{state:?}");
    agent.forget_notifications();
    agent.spawn();
    agent.wait_notification("READY=1").await;
    assert_eq!(agent.pending_ids().await, vec![id]);
    agent.finish().await;
}
