//! Loading the state file (docs/state.md) as the agent does at start, after a power cut may have
//! torn or truncated it. Properties, beyond "no panic":
//! - a refused file is a typed error (`Unreadable` or `UnknownVersion`) naming the file, and the
//!   file is left exactly as it was (the operator repairs it; nothing is lost);
//! - an accepted file is not rewritten by opening, and the state read re-encodes and loads to
//!   itself (round trip);
//! - a torn copy of an accepted file (cut before its last byte of content) is refused, never
//!   read as some other state.

use std::path::Path;

use pos_agent::state::{StateError, StateStore, STATE_FILE};

fn open(directory: &Path, bytes: &[u8]) -> Result<StateStore, StateError> {
    let file = directory.join(STATE_FILE);
    std::fs::write(&file, bytes).expect("write the scratch state file");
    let opened = StateStore::open(directory);
    assert_eq!(
        std::fs::read(&file).expect("read the scratch state file"),
        bytes,
        "opening the state changed the file"
    );
    opened
}

fn assert_refused(directory: &Path, error: &StateError) {
    let file = directory.join(STATE_FILE);
    match error {
        StateError::Unreadable { file: named, .. }
        | StateError::UnknownVersion { file: named, .. } => {
            assert_eq!(named, &file)
        }
        other => panic!("refused with an unexpected error: {other:?}"),
    }
}

/// Checks one input as the state file in `directory` (a scratch directory of its own); panics
/// when a property does not hold.
pub fn check(data: &[u8], directory: &Path) {
    let state = match open(directory, data) {
        Ok(store) => store.state().clone(),
        Err(error) => return assert_refused(directory, &error),
    };
    let again = serde_json::to_vec(&state).expect("an accepted state encodes");
    assert_eq!(
        open(directory, &again)
            .expect("a re-encoded state loads")
            .state(),
        &state
    );

    // A torn write: the file cut somewhere before the end of its content.
    let content = data.trim_ascii_end();
    if content.is_empty() {
        return;
    }
    let cut = usize::from(data[0]) * content.len() / 256;
    match open(directory, &content[..cut]) {
        Ok(store) => panic!(
            "a torn state file ({cut} of {} bytes) loaded: {:?}",
            content.len(),
            store.state()
        ),
        Err(error) => assert_refused(directory, &error),
    }
}
