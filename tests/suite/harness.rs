//! The test harness's own promise (`support::daemon`): no test can forget the secret scan that
//! `Agent::finish` runs over everything the daemon wrote. Dropping an `Agent` that was neither
//! finished nor abandoned by name fails the test that dropped it.

use crate::support::daemon::{Agent, Setup};

#[tokio::test]
#[should_panic(expected = "dropped without Agent::finish")]
async fn an_agent_dropped_without_finish_fails_its_test() {
    let agent = Agent::start(Setup::default()).await;
    drop(agent);
}

#[tokio::test]
async fn an_agent_abandoned_by_name_is_dropped_without_the_scan() {
    let agent = Agent::start(Setup::default()).await;
    agent.abandon("this test shows the named escape from the drop check");
}
