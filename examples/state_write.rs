//! Measures one durable state change (one journal record appended and `fdatasync`ed) with the
//! sales map at its bound, and its bytes: `cargo run --example state_write [-- DIRECTORY]`.
//! The directory decides the filesystem measured (default: a temporary directory).
use std::time::{Duration, Instant, SystemTime};

use pos_agent::ids::PaymentRequestId;
use pos_agent::state::{PaymentOutcome, StateStore, MAX_FINAL_SALES};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let temp = tempfile::tempdir()?;
    let dir = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| temp.path().to_owned());
    let mut store = StateStore::open(&dir)?;
    let now = SystemTime::now();
    store.update(|state| {
        for i in 0..MAX_FINAL_SALES {
            let code = format!("{:08x}-0000-4000-8000-{i:012x}", i);
            let id = PaymentRequestId::stored(format!("{:08x}-1111-4000-8000-{i:012x}", i));
            state.record_sale_intent(&code, 1250, 1, now)?;
            state.record_sale_started(&code, &id, now)?;
            state.finish_payment(&id, PaymentOutcome::Succeeded, now);
        }
        Ok(())
    })?;
    store.commit().wait()?;
    let size = std::fs::metadata(store.file())?.len();
    let before = store.writer_stats();
    let rounds = 50;
    let mut times = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let started = Instant::now();
        store.set_connection_id(Some(format!("connection-{i}")))?;
        store.commit().wait()?;
        times.push(started.elapsed());
    }
    times.sort();
    let median = times[rounds / 2];
    let worst = times.last().copied().unwrap_or(Duration::ZERO);
    let after = store.writer_stats();
    println!(
        "snapshot with {MAX_FINAL_SALES} final sales: {size} bytes; one durable change: median {median:?}, worst {worst:?}, {} bytes written ({rounds} changes)",
        (after.bytes_written - before.bytes_written) / rounds as u64
    );
    Ok(())
}
