use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::model::FINAL_SALE_RETENTION;
use super::*;

fn at(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seconds)
}

#[test]
fn timestamp_is_rfc3339_with_milliseconds_and_round_trips() {
    let stamp = Timestamp::from_system_time(UNIX_EPOCH + Duration::from_micros(1_500_123));
    assert_eq!(stamp.to_string(), "1970-01-01T00:00:01.500Z");
    let json = serde_json::to_string(&stamp).unwrap();
    assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), stamp);
    assert!(serde_json::from_str::<Timestamp>("\"yesterday\"").is_err());
}

#[test]
fn timestamp_clamps_out_of_range_instants() {
    let before_epoch = UNIX_EPOCH - Duration::from_secs(5);
    assert_eq!(Timestamp::from_system_time(before_epoch).unix_millis(), 0);
    let far = Timestamp::from_unix_millis(u64::MAX);
    assert_eq!(far.to_string(), "9999-12-31T23:59:59.999Z");
}

#[test]
fn sale_goes_from_intent_to_started_to_final() {
    let mut state = AgentState::default();
    state.record_sale_intent("m1", 1250, 1, at(0)).unwrap();
    assert_eq!(state.sales["m1"].stage, SaleStage::Intent);
    assert!(state.payments.is_empty());

    state.record_sale_started("m1", &pid("p1"), at(1)).unwrap();
    let payment = &state.payments["p1"];
    assert_eq!(payment.merchant_unique_code.as_deref(), Some("m1"));
    assert_eq!(payment.amount_minor, Some(1250));
    assert_eq!(payment.currency_id, Some(1));
    assert_eq!(payment.source, PaymentSource::Terminal);
    assert_eq!(payment.since, at(1).into());

    assert!(state.finish_payment(&pid("p1"), PaymentOutcome::Succeeded, at(2)));
    assert!(state.payments.is_empty());
    assert_eq!(
        state.sales["m1"].stage,
        SaleStage::Final {
            payment_request_id: Some(pid("p1")),
            outcome: PaymentOutcome::Succeeded,
            at: at(2).into()
        }
    );
    assert!(!state.finish_payment(&pid("p1"), PaymentOutcome::Failed, at(3)));
}

#[test]
fn repeated_sale_code_is_a_conflict_naming_the_stage() {
    let mut state = AgentState::default();
    state.record_sale_intent("m1", 1, 1, at(0)).unwrap();
    let error = state.record_sale_intent("m1", 1, 1, at(1)).unwrap_err();
    assert!(matches!(
        error,
        StateError::SaleConflict {
            stage: "an intent",
            ..
        }
    ));
    state.record_sale_started("m1", &pid("p1"), at(1)).unwrap();
    // The same answer again is no change; a different id is a conflict.
    state.record_sale_started("m1", &pid("p1"), at(2)).unwrap();
    assert!(state.record_sale_started("m1", &pid("p2"), at(2)).is_err());
    assert!(state
        .record_sale_started("unknown", &pid("p3"), at(2))
        .is_err());
}

#[test]
fn only_an_intent_can_be_forgotten() {
    let mut state = AgentState::default();
    state.record_sale_intent("m1", 1, 1, at(0)).unwrap();
    state.forget_sale_intent("m1").unwrap();
    assert!(state.sales.is_empty());
    state.forget_sale_intent("m1").unwrap();
    state.record_sale_intent("m2", 1, 1, at(0)).unwrap();
    state.record_sale_started("m2", &pid("p2"), at(0)).unwrap();
    assert!(state.forget_sale_intent("m2").is_err());
    assert!(state.sales.contains_key("m2"));
}

#[test]
fn cancel_request_keeps_the_first_reason() {
    let mut state = AgentState::default();
    assert!(state.track_payment(
        &pid("p1"),
        PendingPayment::new(PaymentSource::Elsewhere, at(0))
    ));
    assert!(!state.track_payment(
        &pid("p1"),
        PendingPayment::new(PaymentSource::Recovered, at(9))
    ));
    assert_eq!(state.payments["p1"].source, PaymentSource::Elsewhere);
    state
        .mark_cancel_requested(&pid("p1"), CancelReason::Operator, at(1))
        .unwrap();
    state
        .mark_cancel_requested(&pid("p1"), CancelReason::Shutdown, at(2))
        .unwrap();
    assert_eq!(
        state.payments["p1"].cancel_requested,
        Some(CancelRequest {
            reason: CancelReason::Operator,
            at: at(1).into()
        })
    );
    assert!(matches!(
        state.mark_cancel_requested(&pid("p9"), CancelReason::Timeout, at(3)),
        Err(StateError::UnknownPayment(_))
    ));
}

#[test]
fn rejected_sale_is_final_without_a_payment() {
    let mut state = AgentState::default();
    state.record_sale_intent("m1", 1, 1, at(0)).unwrap();
    state
        .finish_sale("m1", PaymentOutcome::Rejected, at(1))
        .unwrap();
    assert!(matches!(
        state.sales["m1"].stage,
        SaleStage::Final {
            payment_request_id: None,
            outcome: PaymentOutcome::Rejected,
            ..
        }
    ));
}

#[test]
fn finishing_a_started_sale_ends_its_payment() {
    let mut state = AgentState::default();
    state.record_sale_intent("m1", 1, 1, at(0)).unwrap();
    state.record_sale_started("m1", &pid("p1"), at(0)).unwrap();
    state
        .finish_sale("m1", PaymentOutcome::Cancelled, at(1))
        .unwrap();
    assert!(state.payments.is_empty());
}

#[test]
fn pruning_drops_old_and_excess_final_sales_but_never_intents_or_started() {
    let mut state = AgentState::default();
    let now = at(FINAL_SALE_RETENTION.as_secs() + 1_000_000);
    let old = at(0);
    state.record_sale_intent("old-intent", 1, 1, old).unwrap();
    state.record_sale_intent("old-started", 1, 1, old).unwrap();
    state
        .record_sale_started("old-started", &pid("p"), old)
        .unwrap();
    state.record_sale_intent("old-final", 1, 1, old).unwrap();
    state
        .finish_sale("old-final", PaymentOutcome::Succeeded, old)
        .unwrap();
    for i in 0..MAX_FINAL_SALES + 5 {
        let code = format!("recent-{i:05}");
        let when = now - Duration::from_secs(1_000) + Duration::from_millis(i as u64);
        state.record_sale_intent(&code, 1, 1, when).unwrap();
        state
            .finish_sale(&code, PaymentOutcome::Succeeded, when)
            .unwrap();
    }
    state.prune_final_sales(now);
    assert!(state.sales.contains_key("old-intent"));
    assert!(state.sales.contains_key("old-started"));
    assert!(!state.sales.contains_key("old-final"));
    let finals = state
        .sales
        .values()
        .filter(|s| matches!(s.stage, SaleStage::Final { .. }))
        .count();
    assert_eq!(finals, MAX_FINAL_SALES);
    // The oldest went first.
    assert!(!state.sales.contains_key("recent-00004"));
    assert!(state.sales.contains_key("recent-00005"));
}

fn pid(text: &str) -> crate::ids::PaymentRequestId {
    crate::ids::PaymentRequestId::stored(text)
}
