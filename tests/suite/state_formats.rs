//! Golden files: every form of the state any commit of main wrote (`tests/state_formats/`, with
//! a README saying which commit wrote which), each read by today's reader with what it must mean;
//! and a check that the writer emits nothing those files do not hold, so that a change to the
//! format cannot land without a fixture for it (docs/state.md, "Compatibility between releases").
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use pos_agent::ids::PaymentRequestId;
use pos_agent::state::{
    encode_record, encode_snapshot, load_from_bytes, AgentState, CancelReason, CancelRefused,
    CancelRequest, Change, Loaded, PaymentOutcome, PaymentSource, PendingPayment, Record,
    SaleRecord, SaleStage, Timestamp, RECORD_HEADER_LEN,
};
use proptest::prelude::*;
use serde_json::Value;

const C: &str = "c57542b8-eed3-497e-b109-bfaa30190229";
const C_OLD: &str = "2890f25b-d170-4b2a-a40f-45b7783ebb40";
const P_STARTED: &str = "d8467b0e-3c69-45b3-a729-ae98badd0d34";
const P_ELSEWHERE: &str = "5ccd994a-ce7d-4f9d-8618-33dc33031eed";
const P_RECOVERED: &str = "8de63752-fac9-4b85-ba91-44570cd10f63";
const P_SHUTDOWN: &str = "d206cb89-339c-4211-b15e-c3185f5ef2f5";
const P_TIMEOUT: &str = "2fce4fc5-b85a-490b-9807-7ff9e345e26d";
const P_ABANDONED: &str = "9d28d462-2365-416a-938a-f33e42a069e4";
const P_REFUSED: &str = "5838833b-73ca-47e4-bd88-4e53a05a22b2";
const P_OLD: &str = "ef1d56a1-cbad-474b-bcd0-bf29934e158f";
const M_INTENT: &str = "b80e7dba-caa7-44c6-8191-b615dba27e9a";
const M_STARTED: &str = "2c35ec65-f2bf-450c-8ad2-752d3de0558a";
const M_TIMEOUT: &str = "c61e8593-24dd-48e3-b4f2-84ed6eb5bcc4";
const M_SUCCEEDED: &str = "01a794ad-6a06-4b12-a327-557118d1fe04";
const M_FAILED: &str = "35a02b26-13fa-4b87-857a-30564c9f59f3";
const M_CANCELLED: &str = "b71c4277-93ca-4a7a-817a-7b86b6fa0974";
const M_REJECTED: &str = "dd9d3ff0-c79e-4571-aeb6-f0f7a2ca89ce";
const M_FINAL_AT_API: &str = "6b93f1fc-be4a-43a0-a2cb-2a35317d20ad";
const M_ABANDONED: &str = "702caaff-bf55-40e3-9e48-0877ba1d9686";
const M_ABANDONED_FOUND: &str = "1a6affbd-e1eb-4c3a-adf4-be8820d87bbd";
const M_ABANDONED_FINAL: &str = "9e8975cf-1598-44d4-a2c1-798f3b46ffd4";
const M_GONE: &str = "5933fe62-b93b-402f-9d15-d7a20ac03490";
const M_OLD: &str = "4894bf10-ed93-47e2-9354-a120ee4573e5";
const F_SUCCEEDED: &str = "c751247c-ea72-47a7-a460-380f3881a300";
const F_FAILED: &str = "51911231-c3e4-439f-9304-f72ba2befc4d";
const F_CANCELLED: &str = "eb59c763-2951-463e-8539-a5ce6c55cc7e";
const F_FINAL_AT_API: &str = "bea84f80-d16e-4ef2-801d-bcd1206faee1";

fn at(text: &str) -> Timestamp {
    serde_json::from_value(Value::String(text.into())).expect("a timestamp")
}

fn payment(
    code: Option<&str>,
    amount: Option<(u64, i64)>,
    since: &str,
    source: PaymentSource,
    cancel: Option<(CancelReason, &str)>,
) -> PendingPayment {
    PendingPayment {
        merchant_unique_code: code.map(str::to_owned),
        amount_minor: amount.map(|(minor, _)| minor),
        currency_id: amount.map(|(_, currency)| currency),
        since: at(since),
        source,
        cancel_requested: cancel.map(|(reason, when)| CancelRequest {
            reason,
            at: at(when),
        }),
        cancel_refused: None,
    }
}

fn sale(amount_minor: u64, currency_id: i64, since: &str, stage: SaleStage) -> SaleRecord {
    SaleRecord {
        amount_minor,
        currency_id,
        since: at(since),
        stage,
    }
}

fn started(id: &str) -> SaleStage {
    SaleStage::Started {
        payment_request_id: PaymentRequestId::stored(id),
    }
}

fn ended(id: Option<&str>, outcome: PaymentOutcome, when: &str) -> SaleStage {
    SaleStage::Final {
        payment_request_id: id.map(PaymentRequestId::stored),
        outcome,
        at: at(when),
    }
}

/// What the first model (0b743c3 to 97324ec) could hold: three sources, four cancel reasons,
/// intent/started/final, four outcomes.
fn first_model() -> AgentState {
    use PaymentOutcome::*;
    use PaymentSource::*;
    let payments = BTreeMap::from([
        (
            PaymentRequestId::stored(P_STARTED),
            payment(
                Some(M_STARTED),
                Some((1250, 1)),
                "2026-11-21T13:16:40.123Z",
                Terminal,
                None,
            ),
        ),
        (
            PaymentRequestId::stored(P_ELSEWHERE),
            payment(
                None,
                None,
                "2026-11-21T13:17:01.000Z",
                Elsewhere,
                Some((CancelReason::Operator, "2026-11-21T13:17:02.004Z")),
            ),
        ),
        (
            PaymentRequestId::stored(P_RECOVERED),
            payment(
                None,
                None,
                "2026-11-21T13:18:00.500Z",
                Recovered,
                Some((CancelReason::Terminal, "2026-11-21T13:18:30.000Z")),
            ),
        ),
        (
            PaymentRequestId::stored(P_SHUTDOWN),
            payment(
                None,
                None,
                "2026-11-21T13:19:00.000Z",
                Elsewhere,
                Some((CancelReason::Shutdown, "2026-11-21T13:40:00.001Z")),
            ),
        ),
        (
            PaymentRequestId::stored(P_TIMEOUT),
            payment(
                Some(M_TIMEOUT),
                Some((99, 2)),
                "2026-11-21T13:20:00.000Z",
                Terminal,
                Some((CancelReason::Timeout, "2026-11-21T13:35:00.000Z")),
            ),
        ),
    ]);
    let sales = BTreeMap::from([
        (
            M_INTENT.into(),
            sale(700, 1, "2026-11-21T13:21:00.000Z", SaleStage::Intent),
        ),
        (
            M_STARTED.into(),
            sale(1250, 1, "2026-11-21T13:16:39.870Z", started(P_STARTED)),
        ),
        (
            M_TIMEOUT.into(),
            sale(99, 2, "2026-11-21T13:19:59.800Z", started(P_TIMEOUT)),
        ),
        (
            M_SUCCEEDED.into(),
            sale(
                2000,
                1,
                "2026-11-21T13:10:00.000Z",
                ended(Some(F_SUCCEEDED), Succeeded, "2026-11-21T13:11:00.000Z"),
            ),
        ),
        (
            M_FAILED.into(),
            sale(
                3000,
                1,
                "2026-11-21T13:12:00.000Z",
                ended(Some(F_FAILED), Failed, "2026-11-21T13:13:00.000Z"),
            ),
        ),
        (
            M_CANCELLED.into(),
            sale(
                4000,
                1,
                "2026-11-21T13:14:00.000Z",
                ended(Some(F_CANCELLED), Cancelled, "2026-11-21T13:15:00.000Z"),
            ),
        ),
        (
            M_REJECTED.into(),
            sale(
                5000,
                3,
                "2026-11-21T13:15:30.000Z",
                ended(None, Rejected, "2026-11-21T13:15:30.250Z"),
            ),
        ),
    ]);
    AgentState {
        version: 2,
        connection_id: Some(C.into()),
        payments,
        sales,
    }
}

/// Everything the model holds since the abandoned sales (25ecbe1 for version 1, 41036ef for
/// version 2, and 68d6b89, the first release): the first model, plus a refused cancel, the
/// `abandoned` reason, stage and outcome, and the `final_at_api` outcome.
fn everything() -> AgentState {
    use PaymentOutcome::*;
    let mut state = first_model();
    let mut refused = payment(
        None,
        None,
        "2026-11-21T13:22:00.000Z",
        PaymentSource::Elsewhere,
        None,
    );
    refused.cancel_refused = Some(CancelRefused {
        message: "Payment cannot be cancelled in its current state".into(),
        at: at("2026-11-21T13:23:00.000Z"),
    });
    state
        .payments
        .insert(PaymentRequestId::stored(P_REFUSED), refused);
    state.payments.insert(
        PaymentRequestId::stored(P_ABANDONED),
        payment(
            Some(M_ABANDONED_FOUND),
            Some((650, 1)),
            "2026-11-21T13:24:00.000Z",
            PaymentSource::Terminal,
            Some((CancelReason::Abandoned, "2026-11-21T13:24:40.000Z")),
        ),
    );
    let abandoned = |when: &str| SaleStage::Abandoned { at: at(when) };
    state.sales.extend([
        (
            M_FINAL_AT_API.to_owned(),
            sale(
                6000,
                1,
                "2026-11-21T13:25:00.000Z",
                ended(Some(F_FINAL_AT_API), FinalAtApi, "2026-11-21T13:26:00.000Z"),
            ),
        ),
        (
            M_ABANDONED.to_owned(),
            sale(
                800,
                1,
                "2026-11-21T13:27:00.000Z",
                abandoned("2026-11-21T13:27:20.000Z"),
            ),
        ),
        (
            M_ABANDONED_FOUND.to_owned(),
            sale(
                650,
                1,
                "2026-11-21T13:24:00.000Z",
                abandoned("2026-11-21T13:24:20.000Z"),
            ),
        ),
        (
            M_ABANDONED_FINAL.to_owned(),
            sale(
                900,
                1,
                "2026-11-21T13:28:00.000Z",
                ended(None, PaymentOutcome::Abandoned, "2026-11-21T13:29:00.000Z"),
            ),
        ),
    ]);
    state
}

fn read_fixture(name: &str) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/state_formats")
        .join(name);
    let read = |file: &str| std::fs::read(dir.join(file)).ok();
    let files = (read("state.json"), read("state.journal"));
    assert!(files.0.is_some(), "no fixture {name}");
    files
}

fn load_fixture(name: &str) -> Loaded {
    let (snapshot, journal) = read_fixture(name);
    load_from_bytes(snapshot.as_deref(), journal.as_deref())
        .unwrap_or_else(|e| panic!("fixture {name} is refused: {e}"))
}

/// The fixtures, each with the commits of main that wrote its form.
const FIXTURES: &[&str] = &["v1-pretty", "v1", "v2-snapshot", "v2-journal", "v2-empty"];

#[test]
fn version_1_pretty_printed_as_the_first_commits_wrote_it_reads_as_the_first_model() {
    let loaded = load_fixture("v1-pretty");
    assert!(loaded.migrate, "version 1 is migrated");
    assert_eq!(loaded.records, 0);
    let state = loaded.state;
    assert_eq!(state.version, 2);
    assert_eq!(state.connection_id.as_deref(), Some(C));
    let reason = |id: &str| state.payments[id].cancel_requested.map(|c| c.reason);
    assert_eq!(reason(P_ELSEWHERE), Some(CancelReason::Operator));
    assert_eq!(reason(P_RECOVERED), Some(CancelReason::Terminal));
    assert_eq!(reason(P_SHUTDOWN), Some(CancelReason::Shutdown));
    assert_eq!(reason(P_TIMEOUT), Some(CancelReason::Timeout));
    assert_eq!(reason(P_STARTED), None);
    assert_eq!(state.payments[P_STARTED].amount_minor, Some(1250));
    assert_eq!(state.payments[P_RECOVERED].source, PaymentSource::Recovered);
    assert_eq!(state.sales[M_STARTED].stage, started(P_STARTED));
    assert_eq!(state.sales[M_INTENT].stage, SaleStage::Intent);
    assert!(matches!(
        &state.sales[M_REJECTED].stage,
        SaleStage::Final {
            payment_request_id: None,
            outcome: PaymentOutcome::Rejected,
            ..
        }
    ));
    assert_eq!(state, first_model());
}

/// What the later version-1 writers (4d90a18 to 278df27) and every version-2 writer hold; `name`
/// is read with `migrate` as its version says.
fn assert_means_everything(name: &str, migrate: bool) -> Loaded {
    let loaded = load_fixture(name);
    assert_eq!(loaded.migrate, migrate, "{name}");
    assert!(!loaded.torn_tail, "{name}");
    let state = &loaded.state;
    assert_eq!(state.payments.len(), 7, "{name}");
    assert_eq!(state.sales.len(), 11, "{name}");
    let refused = state.payments[P_REFUSED].cancel_refused.as_ref();
    assert_eq!(
        refused.map(|r| r.message.as_str()),
        Some("Payment cannot be cancelled in its current state"),
        "{name}"
    );
    assert_eq!(state.payments[P_REFUSED].cancel_requested, None, "{name}");
    let abandoned = &state.payments[P_ABANDONED];
    assert_eq!(
        abandoned.merchant_unique_code.as_deref(),
        Some(M_ABANDONED_FOUND)
    );
    assert_eq!(
        abandoned.cancel_requested.map(|c| c.reason),
        Some(CancelReason::Abandoned)
    );
    assert!(matches!(
        state.sales[M_ABANDONED_FOUND].stage,
        SaleStage::Abandoned { .. }
    ));
    assert_eq!(
        state.sales[M_ABANDONED].stage,
        SaleStage::Abandoned {
            at: at("2026-11-21T13:27:20.000Z")
        }
    );
    let outcome = |code: &str| match &state.sales[code].stage {
        SaleStage::Final {
            payment_request_id,
            outcome,
            ..
        } => (payment_request_id.clone(), *outcome),
        other => panic!("{name}: sale {code} is {other:?}"),
    };
    use PaymentOutcome::*;
    assert_eq!(
        outcome(M_SUCCEEDED),
        (Some(PaymentRequestId::stored(F_SUCCEEDED)), Succeeded)
    );
    assert_eq!(
        outcome(M_FAILED),
        (Some(PaymentRequestId::stored(F_FAILED)), Failed)
    );
    assert_eq!(
        outcome(M_CANCELLED),
        (Some(PaymentRequestId::stored(F_CANCELLED)), Cancelled)
    );
    assert_eq!(
        outcome(M_FINAL_AT_API),
        (Some(PaymentRequestId::stored(F_FINAL_AT_API)), FinalAtApi)
    );
    assert_eq!(outcome(M_REJECTED), (None, Rejected));
    assert_eq!(outcome(M_ABANDONED_FINAL), (None, Abandoned));
    assert_eq!(state, &everything(), "{name}");
    loaded
}

#[test]
fn version_1_compact_with_refused_cancels_and_abandoned_sales_reads_as_everything() {
    assert_means_everything("v1", true);
}

#[test]
fn version_2_snapshot_alone_reads_as_everything() {
    let loaded = assert_means_everything("v2-snapshot", false);
    assert_eq!(loaded.records, 0);
}

#[test]
fn version_2_snapshot_and_a_journal_of_every_change_replay_to_everything() {
    let loaded = assert_means_everything("v2-journal", false);
    assert_eq!(loaded.records, 19);
    let (_, journal) = read_fixture("v2-journal");
    assert_eq!(loaded.journal_valid_len, journal.unwrap().len());
    // The snapshot alone: what the journal's first records replace or remove.
    let (snapshot, _) = read_fixture("v2-journal");
    let before = load_from_bytes(snapshot.as_deref(), None).unwrap().state;
    assert_eq!(before.connection_id.as_deref(), Some(C_OLD));
    assert!(before.payments.contains_key(P_OLD));
    assert!(before.sales.contains_key(M_OLD) && before.sales.contains_key(M_GONE));
    assert!(!loaded.state.payments.contains_key(P_OLD));
    assert!(!loaded.state.sales.contains_key(M_GONE));
}

#[test]
fn version_2_without_a_connection_and_an_empty_journal_reads_as_empty_state() {
    let loaded = load_fixture("v2-empty");
    assert_eq!((loaded.migrate, loaded.records), (false, 0));
    assert_eq!(loaded.state.connection_id, None);
    assert!(loaded.state.payments.is_empty() && loaded.state.sales.is_empty());
}

// The shape of what is written: every object key path, the JSON type at each, and the value of
// each field that names a variant. Entries of the two maps, and the entries journal changes
// carry, are named by their type (`payment`, `sale`), so a form is covered wherever it is held.

const VARIANT_KEYS: &[&str] = &["version", "status", "op", "source", "reason", "outcome"];

fn shape_of(value: &Value, path: &str, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            out.insert(format!("{path}: object"));
            for (key, child) in map {
                match (path, key.as_str()) {
                    ("state", "payments") | ("state", "sales") => {
                        out.insert(format!("{path}.{key}: map"));
                        let entry = if key == "payments" { "payment" } else { "sale" };
                        for child in child.as_object().into_iter().flat_map(|m| m.values()) {
                            shape_of(child, entry, out);
                        }
                    }
                    ("change", "payment") | ("change", "sale") => {
                        out.insert(format!("{path}.{key}"));
                        shape_of(child, key, out);
                    }
                    ("record", "changes") => {
                        out.insert(format!("{path}.{key}: array"));
                        for change in child.as_array().into_iter().flatten() {
                            shape_of(change, "change", out);
                        }
                    }
                    _ if VARIANT_KEYS.contains(&key.as_str()) => {
                        out.insert(format!("{path}.{key} = {child}"));
                    }
                    _ => shape_of(child, &format!("{path}.{key}"), out),
                }
            }
        }
        Value::Array(items) => {
            out.insert(format!("{path}: array"));
            for item in items {
                shape_of(item, &format!("{path}[]"), out);
            }
        }
        Value::Null => drop(out.insert(format!("{path}: null"))),
        Value::Bool(_) => drop(out.insert(format!("{path}: bool"))),
        Value::Number(_) => drop(out.insert(format!("{path}: number"))),
        Value::String(_) => drop(out.insert(format!("{path}: string"))),
    }
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("JSON")
}

/// The shape of a snapshot's bytes, and of each record's payload in a journal's bytes.
fn shape_of_files(snapshot: Option<&[u8]>, journal: Option<&[u8]>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if let Some(snapshot) = snapshot {
        shape_of(&json(snapshot), "state", &mut out);
    }
    let mut rest = journal.unwrap_or_default();
    while !rest.is_empty() {
        let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        let end = RECORD_HEADER_LEN + len;
        shape_of(&json(&rest[RECORD_HEADER_LEN..end]), "record", &mut out);
        rest = &rest[end..];
    }
    out
}

fn fixture_shapes() -> BTreeSet<String> {
    FIXTURES
        .iter()
        .flat_map(|name| {
            let (snapshot, journal) = read_fixture(name);
            shape_of_files(snapshot.as_deref(), journal.as_deref())
        })
        .collect()
}

/// The shape of what today's writer emits for `state` as a snapshot and `changes` as a record.
fn written_shape(state: &AgentState, changes: Vec<Change>) -> BTreeSet<String> {
    let snapshot = encode_snapshot(state).unwrap();
    let mut journal = Vec::new();
    encode_record(&Record { changes }, &mut journal).unwrap();
    shape_of_files(Some(&snapshot), Some(&journal))
}

fn assert_covered(written: &BTreeSet<String>, fixtures: &BTreeSet<String>) {
    let missing: Vec<&String> = written.difference(fixtures).collect();
    assert!(
        missing.is_empty(),
        "the state writer emits {missing:#?}, which no fixture holds: an older release may not \
         read it. Add a fixture under tests/state_formats/ (see its README) and a line to \
         docs/state.md's compatibility section (\"Compatibility between releases\")"
    );
}

const SOURCES: [PaymentSource; 3] = [
    PaymentSource::Terminal,
    PaymentSource::Elsewhere,
    PaymentSource::Recovered,
];
const REASONS: [CancelReason; 5] = [
    CancelReason::Operator,
    CancelReason::Terminal,
    CancelReason::Shutdown,
    CancelReason::Timeout,
    CancelReason::Abandoned,
];
const OUTCOMES: [PaymentOutcome; 6] = [
    PaymentOutcome::Succeeded,
    PaymentOutcome::Failed,
    PaymentOutcome::Cancelled,
    PaymentOutcome::FinalAtApi,
    PaymentOutcome::Rejected,
    PaymentOutcome::Abandoned,
];

/// Stops compiling when a variant is added to the state's enums: add it to the lists above
/// (and then the coverage tests ask for its fixture).
#[allow(dead_code)]
fn every_variant_is_listed(
    source: PaymentSource,
    reason: CancelReason,
    outcome: PaymentOutcome,
    stage: SaleStage,
    change: Change,
) {
    match source {
        PaymentSource::Terminal | PaymentSource::Elsewhere | PaymentSource::Recovered => {}
    }
    match reason {
        CancelReason::Operator
        | CancelReason::Terminal
        | CancelReason::Shutdown
        | CancelReason::Timeout
        | CancelReason::Abandoned => {}
    }
    match outcome {
        PaymentOutcome::Succeeded
        | PaymentOutcome::Failed
        | PaymentOutcome::Cancelled
        | PaymentOutcome::FinalAtApi
        | PaymentOutcome::Rejected
        | PaymentOutcome::Abandoned => {}
    }
    match stage {
        SaleStage::Intent
        | SaleStage::Started { .. }
        | SaleStage::Abandoned { .. }
        | SaleStage::Final { .. } => {}
    }
    match change {
        Change::ConnectionId { .. }
        | Change::PutPayment { .. }
        | Change::RemovePayment { .. }
        | Change::PutSale { .. }
        | Change::RemoveSale { .. } => {}
    }
}

const T: &str = "2026-12-01T10:00:00.000Z";

fn payment_strategy() -> impl Strategy<Value = PendingPayment> {
    (
        proptest::option::of("[a-f0-9-]{1,36}"),
        proptest::option::of((any::<u64>(), any::<i64>())),
        proptest::sample::select(SOURCES.to_vec()),
        proptest::option::of(proptest::sample::select(REASONS.to_vec())),
        proptest::option::of(".{0,20}"),
    )
        .prop_map(|(code, amount, source, reason, refused)| {
            let mut payment = payment(code.as_deref(), amount, T, source, reason.map(|r| (r, T)));
            payment.cancel_refused = refused.map(|message| CancelRefused { message, at: at(T) });
            payment
        })
}

fn stage_strategy() -> impl Strategy<Value = SaleStage> {
    prop_oneof![
        Just(SaleStage::Intent),
        "[a-f0-9-]{1,36}".prop_map(|id| started(&id)),
        Just(SaleStage::Abandoned { at: at(T) }),
        (
            proptest::option::of("[a-f0-9-]{1,36}"),
            proptest::sample::select(OUTCOMES.to_vec())
        )
            .prop_map(|(id, outcome)| ended(id.as_deref(), outcome, T)),
    ]
}

fn sale_strategy() -> impl Strategy<Value = SaleRecord> {
    (any::<u64>(), any::<i64>(), stage_strategy())
        .prop_map(|(minor, currency, stage)| sale(minor, currency, T, stage))
}

fn state_strategy() -> impl Strategy<Value = AgentState> {
    (
        proptest::option::of("[a-f0-9-]{1,36}"),
        proptest::collection::btree_map("[a-f0-9-]{1,36}", payment_strategy(), 0..4),
        proptest::collection::btree_map("[a-f0-9-]{1,36}", sale_strategy(), 0..4),
    )
        .prop_map(|(connection_id, payments, sales)| AgentState {
            version: 2,
            connection_id,
            payments: payments
                .into_iter()
                .map(|(id, payment)| (PaymentRequestId::stored(id), payment))
                .collect(),
            sales,
        })
}

fn change_strategy() -> impl Strategy<Value = Change> {
    let id = || "[a-f0-9-]{1,36}";
    prop_oneof![
        proptest::option::of(id()).prop_map(|connection_id| Change::ConnectionId { connection_id }),
        (id(), payment_strategy()).prop_map(|(payment_request_id, payment)| Change::PutPayment {
            payment_request_id: PaymentRequestId::stored(payment_request_id),
            payment
        }),
        id().prop_map(|payment_request_id| Change::RemovePayment {
            payment_request_id: PaymentRequestId::stored(payment_request_id)
        }),
        (id(), sale_strategy()).prop_map(|(merchant_unique_code, sale)| Change::PutSale {
            merchant_unique_code,
            sale
        }),
        id().prop_map(|merchant_unique_code| Change::RemoveSale {
            merchant_unique_code
        }),
    ]
}

proptest! {
    #[test]
    fn whatever_the_writer_emits_for_any_state_and_change_a_fixture_holds(
        state in state_strategy(),
        changes in proptest::collection::vec(change_strategy(), 1..6),
    ) {
        assert_covered(&written_shape(&state, changes), &fixture_shapes());
    }
}

/// Every variant and every optional field both ways, in one state and one record: the same
/// check as the property, made complete.
#[test]
fn every_form_the_writer_can_emit_a_fixture_holds() {
    let mut state = AgentState {
        version: 2,
        connection_id: Some(C.into()),
        payments: BTreeMap::new(),
        sales: BTreeMap::new(),
    };
    let mut changes = vec![
        Change::ConnectionId {
            connection_id: None,
        },
        Change::ConnectionId {
            connection_id: Some(C.into()),
        },
        Change::RemovePayment {
            payment_request_id: PaymentRequestId::stored(P_OLD),
        },
        Change::RemoveSale {
            merchant_unique_code: M_OLD.into(),
        },
    ];
    let mut forms = Vec::new();
    for source in SOURCES {
        forms.push(payment(None, None, T, source, None));
        forms.push(payment(Some(M_OLD), Some((1, 1)), T, source, None));
    }
    for reason in REASONS {
        forms.push(payment(
            None,
            None,
            T,
            PaymentSource::Elsewhere,
            Some((reason, T)),
        ));
    }
    let mut refused = payment(None, None, T, PaymentSource::Elsewhere, None);
    refused.cancel_refused = Some(CancelRefused {
        message: "refused".into(),
        at: at(T),
    });
    forms.push(refused);
    for (i, payment) in forms.into_iter().enumerate() {
        state.payments.insert(
            PaymentRequestId::stored(format!("payment-{i}")),
            payment.clone(),
        );
        changes.push(Change::PutPayment {
            payment_request_id: PaymentRequestId::stored(format!("payment-{i}")),
            payment,
        });
    }
    let mut stages = vec![
        SaleStage::Intent,
        started(P_OLD),
        SaleStage::Abandoned { at: at(T) },
    ];
    for outcome in OUTCOMES {
        stages.push(ended(Some(P_OLD), outcome, T));
        stages.push(ended(None, outcome, T));
    }
    for (i, stage) in stages.into_iter().enumerate() {
        let sale = sale(1, 1, T, stage);
        state.sales.insert(format!("sale-{i}"), sale.clone());
        changes.push(Change::PutSale {
            merchant_unique_code: format!("sale-{i}"),
            sale,
        });
    }
    let mut empty = AgentState {
        version: 2,
        connection_id: None,
        payments: BTreeMap::new(),
        sales: BTreeMap::new(),
    };
    let fixtures = fixture_shapes();
    assert_covered(&written_shape(&state, changes), &fixtures);
    assert_covered(&written_shape(&empty, vec![]), &fixtures);
    empty.connection_id = Some(C.into());
    assert_covered(&written_shape(&empty, vec![]), &fixtures);
}
