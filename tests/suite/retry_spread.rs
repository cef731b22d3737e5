//! After an outage, agents do not come back in lockstep: several real daemons start against
//! payment APIs that refuse connections, keep retrying with the common retry policy (full
//! jitter, `src/retry.rs`), and when every API accepts again at the same instant their first
//! requests arrive spread out, and the waits they chose differ.

use std::time::Duration;

use crate::support::daemon::{Agent, Setup};
use crate::support::WAIT;
use pos_agent::simulator::api::{ApiSimulator, SimulatorOptions};

const AGENTS: usize = 4;
/// Failed attempts each agent makes before the APIs come back.
const FAILURES: usize = 3;

fn waits_chosen(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("payment API not reachable yet"))
        .filter_map(|l| l.rsplit("trying again in ").next().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn agents_retrying_an_outage_come_back_spread_out() {
    let mut agents = Vec::new();
    for _ in 0..AGENTS {
        let sim = ApiSimulator::start(SimulatorOptions::default()).unwrap();
        sim.set_refusing(true);
        // Every retry's line is read here, so none is summarised.
        let setup = Setup {
            extra_env: vec![("POS_AGENT__LOG__REPEAT_WINDOW", "0s".into())],
            ..Setup::default()
        };
        agents.push(Agent::start_with(sim, setup).await);
    }
    // Every agent has met the refusal a few times.
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    while agents
        .iter()
        .any(|a| waits_chosen(&a.log()).len() < FAILURES)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "agents did not retry {FAILURES} times"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let waits: Vec<Vec<String>> = agents
        .iter()
        .map(|a| waits_chosen(&a.log())[..FAILURES].to_vec())
        .collect();

    // The outage ends for all of them at once.
    let back = std::time::Instant::now();
    for agent in &agents {
        agent.sim.set_refusing(false);
    }
    let mut arrivals = Vec::new();
    for agent in &agents {
        let first = agent
            .sim
            .wait_for_request(|r| r.path.starts_with("/api/"), WAIT * 3)
            .await
            .expect("the agent comes back");
        arrivals.push(first.at.saturating_duration_since(back));
    }
    arrivals.sort();
    let spread = arrivals[AGENTS - 1] - arrivals[0];
    eprintln!("retry waits chosen: {waits:?}; first requests after the outage: {arrivals:?}");
    assert!(
        spread >= Duration::from_millis(100),
        "the agents came back together: {arrivals:?}"
    );
    // Lockstep would mean the same sequence of waits everywhere.
    for (i, a) in waits.iter().enumerate() {
        for b in &waits[i + 1..] {
            assert_ne!(a, b, "two agents chose the same waits: {waits:?}");
        }
    }
    for agent in agents {
        agent.finish().await;
    }
}
