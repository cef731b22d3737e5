//! Loading durable state (docs/state.md) from the snapshot and the journal as a power cut may
//! leave them, through the store's own pure loader (`state::load_from_bytes`). Input: a flags
//! byte (bit 0: no snapshot file, bit 1: no journal file), a byte that picks a cut point, then
//! the snapshot's bytes up to the first NUL and the journal's after it. Properties, beyond "no
//! panic":
//! - a refusal is a typed `LoadError` with a message;
//! - an accepted load replays whole records only: `journal_valid_len` is within the journal,
//!   and is all of it unless a torn tail was dropped; loading just that valid prefix gives the
//!   same state with no torn tail;
//! - the state re-encodes as a snapshot that loads to itself (round trip, no migration);
//! - a journal torn anywhere (cut at any byte of its valid part) still loads, dropping at most
//!   the cut record, and zeros after the valid part of a journal beside a snapshot (a
//!   preallocated tail) are a torn tail, not damage, with the same state;
//! - a sector of the valid journal that never reached the disk (512 bytes from a multiple of
//!   512, read as zeros: a later sector of an append written before it) is a torn tail at or
//!   before it, never damage;
//! - a torn copy of the snapshot (cut before its last byte of content) is refused, never read
//!   as some other state.

use pos_agent::state::{encode_snapshot, load_from_bytes, LoadError};

/// Checks one input; panics when a property does not hold.
pub fn check(data: &[u8]) {
    let [flags, cut, files @ ..] = data else {
        return;
    };
    let (snapshot, journal) = match files.iter().position(|&b| b == 0) {
        Some(nul) => (&files[..nul], &files[nul + 1..]),
        None => (files, &[][..]),
    };
    let snapshot = (flags & 1 == 0).then_some(snapshot);
    let journal = (flags & 2 == 0).then_some(journal);

    let loaded = match load_from_bytes(snapshot, journal) {
        Ok(loaded) => loaded,
        Err(error) => return assert_typed(&error),
    };
    let journal = journal.unwrap_or_default();
    assert!(loaded.journal_valid_len <= journal.len());
    assert_eq!(loaded.torn_tail, loaded.journal_valid_len < journal.len());
    let valid = &journal[..loaded.journal_valid_len];
    let again = load_from_bytes(snapshot, Some(valid)).expect("the valid prefix loads");
    assert_eq!(again.state, loaded.state);
    assert_eq!(again.records, loaded.records);
    assert!(!again.torn_tail);

    let encoded = encode_snapshot(&loaded.state).expect("an accepted state encodes");
    let reloaded = load_from_bytes(Some(&encoded), None).expect("a re-encoded snapshot loads");
    assert_eq!(reloaded.state, loaded.state);
    assert!(!reloaded.migrate);

    // A torn append: the valid journal cut anywhere.
    let at = usize::from(*cut) * (valid.len() + 1) / 256;
    let torn = load_from_bytes(snapshot, Some(&valid[..at]))
        .unwrap_or_else(|e| panic!("a journal cut at byte {at} is refused: {e}"));
    assert!(torn.records <= loaded.records);
    assert!(torn.journal_valid_len <= at);
    assert_eq!(torn.torn_tail, torn.journal_valid_len < at);
    // Zeros where the next record would be (without a snapshot, any journal bytes are refused
    // as a journal without its snapshot).
    if snapshot.is_some() {
        let mut zeroed = valid.to_vec();
        zeroed.resize(valid.len() + 1 + usize::from(*cut), 0);
        let padded = load_from_bytes(snapshot, Some(&zeroed)).expect("a zero tail loads");
        assert_eq!(padded.state, loaded.state);
        assert!(padded.torn_tail);
    }

    // One sector of the valid journal missing, whatever reached the disk after it.
    if snapshot.is_some() && !valid.is_empty() {
        let sector = at - at % 512;
        let mut holed = valid.to_vec();
        let end = (sector + 512).min(holed.len());
        if sector < end {
            holed[sector..end].fill(0);
            let read = load_from_bytes(snapshot, Some(&holed)).unwrap_or_else(|e| {
                panic!("a journal without its sector at {sector} is refused: {e}")
            });
            assert!(read.journal_valid_len <= sector);
            assert!(read.records <= loaded.records);
        }
    }

    // A torn snapshot write (the store renames a complete file, but a filesystem may not keep
    // that promise after a power cut).
    if let Some(snapshot) = snapshot {
        let content = snapshot.trim_ascii_end();
        if !content.is_empty() {
            let at = usize::from(*cut) * content.len() / 256;
            if let Ok(other) = load_from_bytes(Some(&content[..at]), None) {
                panic!(
                    "a snapshot cut at byte {at} of {} loads: {:?}",
                    content.len(),
                    other.state
                );
            }
        }
    }
}

fn assert_typed(error: &LoadError) {
    assert!(!error.to_string().is_empty());
}
