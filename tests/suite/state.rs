//! Durable state on a real filesystem: what survives a reopen, what a crash leaves behind, and
//! what happens to a file that cannot be read.
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pos_agent::ids::PaymentRequestId;
use pos_agent::state::{
    read_directory, AgentState, CancelReason, PaymentOutcome, PaymentSource, PendingPayment,
    SaleStage, StateError, StateStore, FORMAT_VERSION, JOURNAL_FILE, STATE_FILE, TEMP_FILE,
};
use proptest::prelude::*;

fn at(seconds: u64) -> SystemTime {
    // Recent enough that final sales are not pruned by age while the test runs.
    SystemTime::now() - Duration::from_secs(3600) + Duration::from_secs(seconds)
}

fn reopened(dir: &Path) -> AgentState {
    StateStore::open(dir).unwrap().state().clone()
}

#[test]
fn fresh_directory_is_created_private_with_empty_state() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("a/b/state");
    let store = StateStore::open(&dir).unwrap();
    assert_eq!(store.state(), &AgentState::default());
    assert_eq!(store.connection_id(), None);
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    // Nothing is written until something changes.
    assert!(!dir.join(STATE_FILE).exists());
}

#[test]
fn every_mutation_survives_a_reopen() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    type Step = Box<dyn Fn(&mut StateStore)>;
    let steps: Vec<Step> = vec![
        Box::new(|s| s.set_connection_id(Some("c-1".into())).unwrap()),
        Box::new(|s| s.record_sale_intent("m1", 1250, 1, at(1)).unwrap()),
        Box::new(|s| s.record_sale_started("m1", &pid("p1"), at(2)).unwrap()),
        Box::new(|s| {
            s.track_payment(
                &pid("p2"),
                PendingPayment::new(PaymentSource::Elsewhere, at(3)),
            )
            .unwrap();
        }),
        Box::new(|s| {
            s.mark_cancel_requested(&pid("p2"), CancelReason::Terminal, at(4))
                .unwrap()
        }),
        Box::new(|s| s.record_sale_intent("m3", 99, 2, at(5)).unwrap()),
        Box::new(|s| s.forget_sale_intent("m3").unwrap()),
        Box::new(|s| {
            s.finish_payment(&pid("p1"), PaymentOutcome::Succeeded, at(6))
                .unwrap();
        }),
        Box::new(|s| s.set_connection_id(None).unwrap()),
    ];
    for step in steps {
        let expected = {
            let mut store = StateStore::open(dir).unwrap();
            step(&mut store);
            store.state().clone()
        };
        assert_eq!(reopened(dir), expected);
    }
    let state = reopened(dir);
    assert_eq!(state.payments.len(), 1);
    assert_eq!(
        state.payments["p2"].cancel_requested.map(|c| c.reason),
        Some(CancelReason::Terminal)
    );
    assert!(matches!(state.sales["m1"].stage, SaleStage::Final { .. }));
    assert!(!state.sales.contains_key("m3"));
}

#[test]
fn state_is_a_versioned_json_snapshot_and_a_journal_both_mode_0600() {
    let root = tempfile::tempdir().unwrap();
    let mut store = StateStore::open(root.path()).unwrap();
    // The first change writes the snapshot; the next ones go to the journal.
    store.set_connection_id(Some("c-1".into())).unwrap();
    store.commit().wait().unwrap();
    store.record_sale_intent("m1", 500, 1, UNIX_EPOCH).unwrap();
    store.commit().wait().unwrap();
    let file = root.path().join(STATE_FILE);
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(json["version"], FORMAT_VERSION);
    assert_eq!(json["connection_id"], "c-1");
    let journal = root.path().join(JOURNAL_FILE);
    assert!(std::fs::metadata(&journal).unwrap().len() > 0);
    let state = serde_json::to_value(read_directory(root.path()).unwrap()).unwrap();
    assert_eq!(state["sales"]["m1"]["since"], "1970-01-01T00:00:00.000Z");
    assert_eq!(state["sales"]["m1"]["stage"]["status"], "intent");
    for path in [&file, &journal] {
        let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }
    assert!(!root.path().join(TEMP_FILE).exists());
}

fn assert_refused_and_untouched(content: &[u8], expect_newer: bool) {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join(STATE_FILE);
    std::fs::write(&file, content).unwrap();
    let error = StateStore::open(root.path()).unwrap_err();
    assert!(
        error.to_string().contains(&file.display().to_string()),
        "{error}"
    );
    assert_eq!(
        matches!(error, StateError::NewerFormat { .. }),
        expect_newer,
        "{error}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), content);
}

#[test]
fn garbage_state_file_is_refused_and_left_untouched() {
    assert_refused_and_untouched(b"\x00\xffnot json at all", false);
    assert_refused_and_untouched(b"", false);
}

#[test]
fn truncated_state_file_is_refused_and_left_untouched() {
    let root = tempfile::tempdir().unwrap();
    {
        let mut store = StateStore::open(root.path()).unwrap();
        store.record_sale_intent("m1", 1, 1, at(0)).unwrap();
        store.record_sale_started("m1", &pid("p1"), at(0)).unwrap();
    }
    let full = std::fs::read(root.path().join(STATE_FILE)).unwrap();
    assert_refused_and_untouched(&full[..full.len() / 2], false);
}

#[test]
fn unknown_version_is_refused_and_left_untouched() {
    assert_refused_and_untouched(br#"{"version": 3, "whatever": true}"#, true);
}

#[test]
fn unknown_field_is_refused_as_from_a_newer_release_and_left_untouched() {
    let content =
        br#"{"version": 1, "connection_id": null, "payments": {}, "sales": {}, "extra": 1}"#;
    assert_refused_and_untouched(content, true);
}

#[test]
fn an_error_about_a_newer_format_names_its_version_and_never_advises_moving_it_away() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join(STATE_FILE), br#"{"version": 7}"#).unwrap();
    let error = StateStore::open(root.path()).unwrap_err().to_string();
    assert!(
        error.contains("written by a newer pos-agent (format version 7;"),
        "{error}"
    );
    assert!(error.contains("do not move it away"), "{error}");
    assert!(
        !error.contains("move it away (") && !error.contains("empty state"),
        "{error}"
    );
    // The same from the reader that takes nothing over.
    let error = read_directory(root.path()).unwrap_err();
    assert!(matches!(error, StateError::NewerFormat { .. }), "{error}");
}

#[test]
fn leftover_temp_file_from_a_crash_is_ignored() {
    let root = tempfile::tempdir().unwrap();
    {
        let mut store = StateStore::open(root.path()).unwrap();
        store.set_connection_id(Some("c-1".into())).unwrap();
    }
    let before = reopened(root.path());
    // A crash after writing part of the next state, before the rename.
    let temp = root.path().join(TEMP_FILE);
    std::fs::write(&temp, br#"{"version": 1, "connection_id": "c-2", "payme"#).unwrap();
    std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut store = StateStore::open(root.path()).unwrap();
    assert_eq!(store.state(), &before);
    // The next write replaces the leftover and still yields a private file.
    store.set_connection_id(Some("c-3".into())).unwrap();
    drop(store);
    assert_eq!(reopened(root.path()).connection_id.as_deref(), Some("c-3"));
    let mode = std::fs::metadata(root.path().join(STATE_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn second_open_of_the_same_directory_is_refused_while_the_first_holds_it() {
    let root = tempfile::tempdir().unwrap();
    let first = StateStore::open(root.path()).unwrap();
    let error = StateStore::open(root.path()).unwrap_err();
    assert!(matches!(error, StateError::Locked { .. }), "{error}");
    assert!(error
        .to_string()
        .contains(&root.path().display().to_string()));
    drop(first);
    StateStore::open(root.path()).unwrap();
}

#[test]
fn failed_change_writes_nothing_and_changes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let mut store = StateStore::open(root.path()).unwrap();
    store.record_sale_intent("m1", 1, 1, at(0)).unwrap();
    store.commit().wait().unwrap();
    let before = std::fs::read(root.path().join(STATE_FILE)).unwrap();
    let error = store
        .update(|state| {
            state.set_connection_id(Some("c-9".into()));
            state.record_sale_intent("m1", 2, 2, at(1))
        })
        .unwrap_err();
    assert!(matches!(error, StateError::SaleConflict { .. }));
    assert_eq!(store.connection_id(), None);
    store.commit().wait().unwrap();
    assert_eq!(std::fs::read(root.path().join(STATE_FILE)).unwrap(), before);
    assert!(!root.path().join(JOURNAL_FILE).exists());
}

/// Storage that refuses every write fails the commit, leaves the state on disk as it was, and
/// the first commit after it is back writes everything, the failed changes included. The
/// refusal is a plain file standing where the state directory was (every path in it: ENOTDIR):
/// unlike permission bits, root (as CI runs) cannot write through that either, so the
/// assertions hold for every user.
#[test]
fn a_refused_write_fails_the_commit_and_the_next_write_catches_up() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("state");
    let mut store = StateStore::open(&dir).unwrap();
    // The first change writes the snapshot; the journal is not open yet.
    store.set_connection_id(Some("c-1".into())).unwrap();
    store.commit().wait().unwrap();

    let away = root.path().join("state.away");
    std::fs::rename(&dir, &away).unwrap();
    std::fs::write(&dir, b"not a directory").unwrap();
    // A journal append, then (what reached the disk being unknown) the journal cut back to its
    // last durable record and appended again: both fail.
    store.set_connection_id(Some("c-2".into())).unwrap();
    let error = store.commit().wait().unwrap_err();
    assert!(matches!(error, StateError::Write { .. }), "{error}");
    store.record_sale_intent("m1", 1, 1, at(0)).unwrap();
    let error = store.commit().wait().unwrap_err();
    assert!(matches!(error, StateError::Write { .. }), "{error}");
    let before = read_directory(&away).unwrap();
    assert_eq!(before.connection_id.as_deref(), Some("c-1"));
    assert!(before.sales.is_empty());

    // Storage back: the next commit appends the failed changes with its own.
    std::fs::remove_file(&dir).unwrap();
    std::fs::rename(&away, &dir).unwrap();
    store.record_sale_intent("m2", 2, 1, at(1)).unwrap();
    store.commit().wait().unwrap();
    let state = read_directory(&dir).unwrap();
    assert_eq!(state.connection_id.as_deref(), Some("c-2"));
    assert!(state.sales.contains_key("m1"));
    assert!(state.sales.contains_key("m2"));
}

fn three_changes(dir: &Path) -> Vec<AgentState> {
    let mut store = StateStore::open(dir).unwrap();
    let mut states = Vec::new();
    store.set_connection_id(Some("c-1".into())).unwrap();
    store.commit().wait().unwrap();
    states.push(store.state().clone());
    store.record_sale_intent("m1", 1, 1, at(0)).unwrap();
    store.commit().wait().unwrap();
    states.push(store.state().clone());
    store.record_sale_started("m1", &pid("p1"), at(1)).unwrap();
    store.commit().wait().unwrap();
    states.push(store.state().clone());
    states
}

#[test]
fn a_torn_journal_tail_is_dropped_and_the_journal_stays_appendable() {
    let root = tempfile::tempdir().unwrap();
    let states = three_changes(root.path());
    let journal = root.path().join(JOURNAL_FILE);
    let whole = std::fs::read(&journal).unwrap();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&journal)
        .unwrap();
    file.set_len(whole.len() as u64 - 7).unwrap();
    drop(file);
    let mut store = StateStore::open(root.path()).unwrap();
    assert_eq!(store.state(), &states[1], "the torn last record is dropped");
    store.record_sale_intent("m2", 2, 1, at(2)).unwrap();
    store.commit().wait().unwrap();
    let expected = store.state().clone();
    drop(store);
    assert_eq!(reopened(root.path()), expected);
}

#[test]
fn a_damaged_journal_record_before_its_end_is_refused_and_left_untouched() {
    let root = tempfile::tempdir().unwrap();
    three_changes(root.path());
    let journal = root.path().join(JOURNAL_FILE);
    let mut bytes = std::fs::read(&journal).unwrap();
    bytes[20] ^= 0x08;
    std::fs::write(&journal, &bytes).unwrap();
    let snapshot = std::fs::read(root.path().join(STATE_FILE)).unwrap();
    let error = StateStore::open(root.path()).unwrap_err();
    assert!(matches!(error, StateError::Unreadable { .. }), "{error}");
    assert!(
        error.to_string().contains(&journal.display().to_string()),
        "{error}"
    );
    assert_eq!(std::fs::read(&journal).unwrap(), bytes);
    assert_eq!(
        std::fs::read(root.path().join(STATE_FILE)).unwrap(),
        snapshot
    );
}

#[test]
fn a_version_1_state_file_is_read_and_migrated_at_the_first_start() {
    let root = tempfile::tempdir().unwrap();
    let legacy = br#"{"version":1,"connection_id":"c-1","payments":{"p1":{"merchant_unique_code":null,"amount_minor":null,"currency_id":null,"since":"2026-11-21T13:16:40.123Z","source":"elsewhere","cancel_requested":null}},"sales":{}}"#;
    std::fs::write(root.path().join(STATE_FILE), legacy).unwrap();
    let mut store = StateStore::open(root.path()).unwrap();
    assert_eq!(store.connection_id(), Some("c-1"));
    assert!(store.payment(&pid("p1")).is_some());
    store.commit().wait().unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.path().join(STATE_FILE)).unwrap()).unwrap();
    assert_eq!(json["version"], FORMAT_VERSION);
    assert_eq!(json["payments"]["p1"]["source"], "elsewhere");
    drop(store);
    assert_eq!(reopened(root.path()).connection_id.as_deref(), Some("c-1"));
}

#[test]
fn bytes_written_per_change_do_not_grow_with_the_pending_payments() {
    let bytes_for_one_change = |pending: usize| {
        let root = tempfile::tempdir().unwrap();
        let mut store = StateStore::open(root.path()).unwrap();
        store
            .update(|state| {
                for i in 0..=pending {
                    let id = pid(format!("{i:08}-0000-4000-8000-000000000000"));
                    state.track_payment(&id, PendingPayment::new(PaymentSource::Elsewhere, at(0)));
                }
                Ok(())
            })
            .unwrap();
        store.commit().wait().unwrap();
        let before = store.writer_stats().bytes_written;
        let id = pid(format!("{pending:08}-0000-4000-8000-000000000000"));
        store
            .mark_cancel_requested(&id, CancelReason::Operator, at(1))
            .unwrap();
        store.commit().wait().unwrap();
        store.writer_stats().bytes_written - before
    };
    let small = bytes_for_one_change(0);
    assert!(small > 0);
    assert_eq!(bytes_for_one_change(500), small);
}

#[test]
fn batch_update_applies_several_changes_with_one_write() {
    let root = tempfile::tempdir().unwrap();
    let mut store = StateStore::open(root.path()).unwrap();
    store
        .update(|state| {
            state.set_connection_id(Some("c-1".into()));
            state.track_payment(
                &pid("p1"),
                PendingPayment::new(PaymentSource::Recovered, at(0)),
            );
            state.mark_cancel_requested(&pid("p1"), CancelReason::Shutdown, at(1))
        })
        .unwrap();
    drop(store);
    let state = reopened(root.path());
    assert_eq!(state.connection_id.as_deref(), Some("c-1"));
    assert_eq!(
        state.payments["p1"].cancel_requested.map(|c| c.reason),
        Some(CancelReason::Shutdown)
    );
}

/// One change a test can apply; codes and ids come from small pools so that changes collide.
#[derive(Debug, Clone)]
enum Change {
    Connection(Option<u8>),
    Intent(u8, u64, i64, u64),
    Started(u8, u8, u64),
    Forget(u8),
    Track(u8, u8, u64),
    Cancel(u8, u8, u64),
    FinishPayment(u8, u8, u64),
    FinishSale(u8, u8, u64),
}

fn change() -> impl Strategy<Value = Change> {
    let code = 0u8..6;
    let id = 0u8..6;
    let secs = 0u64..3000;
    prop_oneof![
        proptest::option::of(0u8..3).prop_map(Change::Connection),
        (code.clone(), any::<u64>(), any::<i64>(), secs.clone())
            .prop_map(|(c, a, k, t)| Change::Intent(c, a, k, t)),
        (code.clone(), id.clone(), secs.clone()).prop_map(|(c, i, t)| Change::Started(c, i, t)),
        code.clone().prop_map(Change::Forget),
        (id.clone(), 0u8..3, secs.clone()).prop_map(|(i, s, t)| Change::Track(i, s, t)),
        (id.clone(), 0u8..4, secs.clone()).prop_map(|(i, r, t)| Change::Cancel(i, r, t)),
        (id, 0u8..4, secs.clone()).prop_map(|(i, o, t)| Change::FinishPayment(i, o, t)),
        (code, 0u8..4, secs).prop_map(|(c, o, t)| Change::FinishSale(c, o, t)),
    ]
}

fn outcome(n: u8) -> PaymentOutcome {
    [
        PaymentOutcome::Succeeded,
        PaymentOutcome::Failed,
        PaymentOutcome::Cancelled,
        PaymentOutcome::Rejected,
    ][usize::from(n % 4)]
}

fn apply(store: &mut StateStore, change: &Change) {
    let code = |c: &u8| format!("merchant-{c}");
    let id = |i: &u8| pid(format!("payment-{i}"));
    // Refused changes (conflicts, unknown ids) are part of the sequence too.
    let _ = match change {
        Change::Connection(c) => store.set_connection_id(c.map(|c| format!("conn-{c}"))),
        Change::Intent(c, amount, currency, t) => {
            store.record_sale_intent(&code(c), *amount, *currency, at(*t))
        }
        Change::Started(c, i, t) => store.record_sale_started(&code(c), &id(i), at(*t)),
        Change::Forget(c) => store.forget_sale_intent(&code(c)),
        Change::Track(i, s, t) => {
            let source = [
                PaymentSource::Terminal,
                PaymentSource::Elsewhere,
                PaymentSource::Recovered,
            ][usize::from(*s % 3)];
            store
                .track_payment(&id(i), PendingPayment::new(source, at(*t)))
                .map(drop)
        }
        Change::Cancel(i, r, t) => {
            let reason = [
                CancelReason::Operator,
                CancelReason::Terminal,
                CancelReason::Shutdown,
                CancelReason::Timeout,
            ][usize::from(*r % 4)];
            store.mark_cancel_requested(&id(i), reason, at(*t))
        }
        Change::FinishPayment(i, o, t) => {
            store.finish_payment(&id(i), outcome(*o), at(*t)).map(drop)
        }
        Change::FinishSale(c, o, t) => store.finish_sale(&code(c), outcome(*o), at(*t)),
    };
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn any_sequence_of_changes_reads_back_identically(changes in proptest::collection::vec(change(), 1..30)) {
        let root = tempfile::tempdir().unwrap();
        let mut store = StateStore::open(root.path()).unwrap();
        for change in &changes {
            apply(&mut store, change);
        }
        let in_memory = store.state().clone();
        drop(store);
        prop_assert_eq!(reopened(root.path()), in_memory);
    }
}

fn pid(text: impl Into<String>) -> PaymentRequestId {
    PaymentRequestId::stored(text)
}
