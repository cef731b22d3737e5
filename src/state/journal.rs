//! The on-disk format of durable state: a snapshot (`state.json`) and the journal of changes
//! made since it (`state.journal`), and the one pure function that reads them back
//! ([`load_from_bytes`]). Kept apart from the store so that loading can be tested and fuzzed
//! on bytes alone; `docs/state.md` describes the format and why a crash anywhere is safe.

use serde::{Deserialize, Serialize};

use super::{AgentState, PendingPayment, SaleRecord, FORMAT_VERSION};
use crate::ids::PaymentRequestId;

/// The snapshot in the state directory.
pub const STATE_FILE: &str = "state.json";
/// The journal of changes since the snapshot.
pub const JOURNAL_FILE: &str = "state.journal";
/// The file a snapshot goes to before it is renamed over [`STATE_FILE`].
pub const TEMP_FILE: &str = "state.json.tmp";
/// The file whose `flock` says which process owns the directory.
pub(crate) const LOCK_FILE: &str = "state.lock";

/// The snapshot format this build migrates from (a `state.json` without a journal).
pub const LEGACY_FORMAT_VERSION: u32 = 1;
/// A record's header: payload length, CRC-32C of the length, CRC-32C of the payload (all u32,
/// little-endian).
pub const RECORD_HEADER_LEN: usize = 12;
/// The largest payload a record may declare; a longer one is damage, not a record.
pub const MAX_RECORD_LEN: usize = 16 * 1024 * 1024;

const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// One change to the state, as journalled. Each carries the whole new value of the one entry
/// it touches (or its removal), never a delta: replaying a record twice, or over a snapshot
/// that already holds it, yields the same state. A new field or stage of [`PendingPayment`]
/// or [`SaleRecord`] is journalled with no change here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Change {
    ConnectionId {
        connection_id: Option<String>,
    },
    PutPayment {
        payment_request_id: PaymentRequestId,
        payment: PendingPayment,
    },
    RemovePayment {
        payment_request_id: PaymentRequestId,
    },
    PutSale {
        merchant_unique_code: String,
        sale: SaleRecord,
    },
    RemoveSale {
        merchant_unique_code: String,
    },
}

impl Change {
    pub fn apply(self, state: &mut AgentState) {
        match self {
            Change::ConnectionId { connection_id } => state.connection_id = connection_id,
            Change::PutPayment {
                payment_request_id,
                payment,
            } => {
                state.payments.insert(payment_request_id, payment);
            }
            Change::RemovePayment { payment_request_id } => {
                state.payments.remove(&payment_request_id);
            }
            Change::PutSale {
                merchant_unique_code,
                sale,
            } => {
                state.sales.insert(merchant_unique_code, sale);
            }
            Change::RemoveSale {
                merchant_unique_code,
            } => {
                state.sales.remove(&merchant_unique_code);
            }
        }
    }
}

/// One journal record: the changes of one store operation, made durable together or not at
/// all (the checksum covers them all).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub changes: Vec<Change>,
}

/// Appends `record` to `out`, framed: header, then its JSON.
pub fn encode_record(record: &Record, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    frame_record(&serde_json::to_vec(record)?, out);
    Ok(())
}

/// Appends `payload` to `out` in the record framing: its length, the CRC-32C of the length,
/// the CRC-32C of the payload, then the payload. Public for tests that write records this
/// release would not (a newer release's).
pub fn frame_record(payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len())
        .unwrap_or(u32::MAX)
        .to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&CRC32C.checksum(&len).to_le_bytes());
    out.extend_from_slice(&CRC32C.checksum(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// The snapshot, serialised as written to `state.json`.
pub fn encode_snapshot(state: &AgentState) -> Result<Vec<u8>, serde_json::Error> {
    let mut bytes = serde_json::to_vec(state)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// What [`load_from_bytes`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub state: AgentState,
    /// Bytes of the journal that hold whole, valid records; anything after them is a torn tail.
    pub journal_valid_len: usize,
    /// Records replayed from the journal.
    pub records: usize,
    /// A torn tail was found (and is dropped: the next write replaces it).
    pub torn_tail: bool,
    /// The snapshot has the legacy format (version 1) and is rewritten in this one.
    pub migrate: bool,
}

/// Why state on disk cannot be used. The store never writes over state it could not load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("the snapshot is not a pos-agent state file ({0})")]
    SnapshotNotState(String),
    /// What only a newer release writes: a format version above this one's, or (with a version
    /// this one knows) an unknown variant or field, in the snapshot or in a record whose checksum
    /// holds. Never damage: the state must be kept for that release.
    #[error("format version {version}; {reason}")]
    Newer {
        version: u64,
        in_journal: bool,
        reason: String,
    },
    #[error("the snapshot has invalid content ({0})")]
    SnapshotInvalid(String),
    #[error("a journal exists without its snapshot (state.json is missing)")]
    JournalWithoutSnapshot,
    #[error("the journal is damaged at byte {offset}, before its end: {reason}")]
    CorruptJournal { offset: usize, reason: String },
}

/// Reads state from the bytes of the snapshot and the journal (`None`: the file does not
/// exist). Pure: no I/O, never panics, whatever the bytes. Records are replayed in order
/// over the snapshot; a torn tail (what a crash during an append leaves) is dropped, damage
/// anywhere before it is an error.
pub fn load_from_bytes(
    snapshot: Option<&[u8]>,
    journal: Option<&[u8]>,
) -> Result<Loaded, LoadError> {
    let (mut state, version, migrate) = match snapshot {
        Some(bytes) => parse_snapshot(bytes)?,
        None if journal.is_some_and(|j| !j.is_empty()) => {
            return Err(LoadError::JournalWithoutSnapshot)
        }
        None => (AgentState::default(), FORMAT_VERSION.into(), false),
    };
    let journal = journal.unwrap_or_default();
    let mut offset = 0;
    let mut records = 0;
    let mut torn_tail = false;
    while offset < journal.len() {
        match read_record(journal, offset) {
            Ok((record, next)) => {
                for change in record.changes {
                    change.apply(&mut state);
                }
                records += 1;
                offset = next;
            }
            Err(Damage::TornTail) => {
                torn_tail = true;
                break;
            }
            Err(Damage::Corrupt(reason)) => {
                return Err(LoadError::CorruptJournal { offset, reason })
            }
            Err(Damage::Unparsed(e)) => return Err(unparsed(e, version, Some(offset))),
        }
    }
    Ok(Loaded {
        state,
        journal_valid_len: offset,
        records,
        torn_tail,
        migrate,
    })
}

/// The snapshot's state, the format version it had, and whether it is to be migrated.
#[inline(never)]
fn parse_snapshot(bytes: &[u8]) -> Result<(AgentState, u64, bool), LoadError> {
    #[derive(Deserialize)]
    struct Versioned {
        version: u64,
    }
    let versioned: Versioned =
        serde_json::from_slice(bytes).map_err(|e| LoadError::SnapshotNotState(e.to_string()))?;
    let version = versioned.version;
    let migrate = match version {
        v if v == u64::from(FORMAT_VERSION) => false,
        v if v == u64::from(LEGACY_FORMAT_VERSION) => true,
        _ => {
            return Err(LoadError::Newer {
                version,
                in_journal: false,
                reason: "this one reads 1 and 2".into(),
            })
        }
    };
    let mut state: AgentState =
        serde_json::from_slice(bytes).map_err(|e| unparsed(e, version, None))?;
    state.version = FORMAT_VERSION;
    Ok((state, version, migrate))
}

/// Why whole JSON (the snapshot, or the record at `journal_offset` whose checksum holds) does not
/// parse. A variant or a field this release does not know is what a newer writer adds
/// (`docs/state.md`, "Compatibility between releases"), not what damage looks like.
#[inline(never)]
fn unparsed(e: serde_json::Error, version: u64, journal_offset: Option<usize>) -> LoadError {
    let reason = e.to_string();
    // serde's `unknown variant` and `unknown field`.
    if reason.starts_with("unknown ") {
        return LoadError::Newer {
            version,
            in_journal: journal_offset.is_some(),
            reason,
        };
    }
    match journal_offset {
        Some(offset) => LoadError::CorruptJournal {
            offset,
            reason: format!("record with a valid checksum is invalid ({reason})"),
        },
        None => LoadError::SnapshotInvalid(reason),
    }
}

enum Damage {
    /// What an interrupted append leaves: a record cut short, or sectors of it never written.
    TornTail,
    Corrupt(String),
    /// A whole record (its checksum holds) that does not parse.
    Unparsed(serde_json::Error),
}

/// The smallest unit a block device writes: a sector of an unsynced append either holds what
/// was written or reads as zeros (`docs/state.md`, "Torn tail or damage").
pub(crate) const SECTOR: usize = 512;

/// Whether `journal[from..until]` touches a sector whose part in `journal[from..]` is all zeros:
/// a sector of an append that never reached the disk. `until` may run past the end.
fn holds_unwritten_sector(journal: &[u8], from: usize, until: usize) -> bool {
    let until = until.min(journal.len());
    let mut sector = from - from % SECTOR;
    while sector < until {
        let start = sector.max(from);
        let end = (sector + SECTOR).min(journal.len());
        if journal[start..end].iter().all(|&b| b == 0) {
            return true;
        }
        sector += SECTOR;
    }
    false
}

/// The record at `offset` and the offset after it.
///
/// A record that fails is a torn tail when it is what a power cut during its append can leave:
/// cut short by the end of the file, or with a sector of it reading as zeros (whatever follows:
/// a later sector of the same append may have reached the disk before an earlier one), or with
/// a payload that fails its checksum and nothing but zeros after it. Anything else (a header or
/// a payload changed without a zeroed sector, with more data after it; a record with a valid
/// checksum that is not a record) is damage.
fn read_record(journal: &[u8], offset: usize) -> Result<(Record, usize), Damage> {
    let rest = &journal[offset..];
    let zeros_from = |at: usize| {
        rest.get(at..)
            .is_none_or(|tail| tail.iter().all(|&b| b == 0))
    };
    let Some(header) = rest.get(..RECORD_HEADER_LEN) else {
        return Err(Damage::TornTail);
    };
    let word =
        |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    let (len, len_crc, payload_crc) = (word(0), word(4), word(8));
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if CRC32C.checksum(&header[..4]) != len_crc || len == 0 || len > MAX_RECORD_LEN {
        return if zeros_from(0)
            || holds_unwritten_sector(journal, offset, offset + RECORD_HEADER_LEN)
        {
            Err(Damage::TornTail)
        } else {
            Err(Damage::Corrupt("invalid record header".into()))
        };
    }
    let end = RECORD_HEADER_LEN + len;
    let Some(payload) = rest.get(RECORD_HEADER_LEN..end) else {
        return Err(Damage::TornTail);
    };
    if CRC32C.checksum(payload) != payload_crc {
        return if zeros_from(end) || holds_unwritten_sector(journal, offset, offset + end) {
            Err(Damage::TornTail)
        } else {
            Err(Damage::Corrupt("record checksum mismatch".into()))
        };
    }
    let record = serde_json::from_slice(payload).map_err(Damage::Unparsed)?;
    Ok((record, offset + end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection(id: &str) -> Record {
        Record {
            changes: vec![Change::ConnectionId {
                connection_id: Some(id.into()),
            }],
        }
    }

    fn journal(records: &[Record]) -> Vec<u8> {
        let mut out = Vec::new();
        for record in records {
            encode_record(record, &mut out).unwrap();
        }
        out
    }

    fn snapshot() -> Vec<u8> {
        encode_snapshot(&AgentState::default()).unwrap()
    }

    #[test]
    fn records_replay_in_order_over_the_snapshot() {
        let bytes = journal(&[connection("a"), connection("b")]);
        let loaded = load_from_bytes(Some(&snapshot()), Some(&bytes)).unwrap();
        assert_eq!(loaded.state.connection_id.as_deref(), Some("b"));
        assert_eq!((loaded.records, loaded.torn_tail), (2, false));
        assert_eq!(loaded.journal_valid_len, bytes.len());
    }

    #[test]
    fn every_truncation_of_the_last_record_is_a_torn_tail() {
        let whole = journal(&[connection("a"), connection("b")]);
        let first = journal(&[connection("a")]).len();
        for cut in first + 1..whole.len() {
            let loaded = load_from_bytes(Some(&snapshot()), Some(&whole[..cut])).unwrap();
            assert_eq!(
                loaded.state.connection_id.as_deref(),
                Some("a"),
                "cut {cut}"
            );
            assert!(loaded.torn_tail);
            assert_eq!(loaded.journal_valid_len, first);
        }
    }

    #[test]
    fn zeros_after_the_last_record_are_a_torn_tail() {
        let mut bytes = journal(&[connection("a")]);
        let valid = bytes.len();
        bytes.extend([0u8; 100]);
        let loaded = load_from_bytes(Some(&snapshot()), Some(&bytes)).unwrap();
        assert!(loaded.torn_tail);
        assert_eq!(loaded.journal_valid_len, valid);
        // A last record whose payload was only partly written before zeros.
        let mut bytes = journal(&[connection("a"), connection("bbbbbbbb")]);
        let len = bytes.len();
        bytes[len - 5..].fill(0);
        bytes.extend([0u8; 30]);
        let loaded = load_from_bytes(Some(&snapshot()), Some(&bytes)).unwrap();
        assert_eq!(loaded.state.connection_id.as_deref(), Some("a"));
    }

    /// Records of `n` bytes of payload each, enough of them to span several sectors.
    fn long_journal(count: usize) -> Vec<Record> {
        (0..count)
            .map(|i| connection(&format!("{i:03}-{}", "x".repeat(300))))
            .collect()
    }

    #[test]
    fn a_header_torn_at_a_sector_boundary_is_a_torn_tail() {
        let mut checked = 0;
        for pad in 0..256 {
            let mut records = vec![connection(&"p".repeat(pad + 1))];
            records.extend(long_journal(6));
            let whole = journal(&records);
            for i in 1..records.len() {
                let start = journal(&records[..i]).len();
                // The header's first bytes reached the disk, the sector after them did not.
                for boundary in (start + 1..start + RECORD_HEADER_LEN).filter(|b| b % SECTOR == 0) {
                    let mut bytes = whole.clone();
                    bytes[boundary..].fill(0);
                    let loaded = load_from_bytes(Some(&snapshot()), Some(&bytes)).unwrap();
                    assert_eq!(loaded.records, i, "pad {pad}, boundary {boundary}");
                    assert!(loaded.torn_tail);
                    assert_eq!(loaded.journal_valid_len, start);
                    checked += 1;
                }
            }
        }
        assert!(checked > 10, "{checked} headers torn");
    }

    #[test]
    fn a_later_sector_written_before_an_earlier_one_is_a_torn_tail() {
        let base = journal(&[connection("a")]);
        let mut bytes = base.clone();
        bytes.extend(journal(&long_journal(8)));
        // The first sector wholly inside the unsynced append reads as zeros; the ones after it
        // (more records, whole and valid) reached the disk.
        let hole = base.len().next_multiple_of(SECTOR);
        bytes[hole..hole + SECTOR].fill(0);
        let loaded = load_from_bytes(Some(&snapshot()), Some(&bytes)).unwrap();
        assert!(loaded.torn_tail);
        assert!(loaded.journal_valid_len <= hole);
        // The sector holding the start of the append, never rewritten: the old bytes, then zeros.
        let mut bytes = base.clone();
        bytes.extend(journal(&long_journal(8)));
        let end = base.len().next_multiple_of(SECTOR);
        bytes[base.len()..end].fill(0);
        let loaded = load_from_bytes(Some(&snapshot()), Some(&bytes)).unwrap();
        assert_eq!(loaded.state.connection_id.as_deref(), Some("a"));
        assert_eq!((loaded.records, loaded.journal_valid_len), (1, base.len()));
    }

    #[test]
    fn a_changed_byte_with_no_zeroed_sector_is_damage_wherever_it_is() {
        let records = long_journal(8);
        let whole = journal(&records);
        let first = journal(&records[..1]).len();
        for at in [first, first + 2, first + 7, first + RECORD_HEADER_LEN + 40] {
            let mut bytes = whole.clone();
            bytes[at] ^= 0x40;
            assert!(
                matches!(
                    load_from_bytes(Some(&snapshot()), Some(&bytes)),
                    Err(LoadError::CorruptJournal { offset, .. }) if offset == first
                ),
                "byte {at}"
            );
        }
    }

    #[test]
    fn damage_followed_by_more_records_is_refused() {
        let mut bytes = journal(&[connection("a"), connection("b"), connection("c")]);
        let first = journal(&[connection("a")]).len();
        bytes[first + RECORD_HEADER_LEN + 3] ^= 0x20;
        assert!(matches!(
            load_from_bytes(Some(&snapshot()), Some(&bytes)),
            Err(LoadError::CorruptJournal { offset, .. }) if offset == first
        ));
        let mut bytes = journal(&[connection("a"), connection("b")]);
        bytes[first] ^= 0x01;
        assert!(matches!(
            load_from_bytes(Some(&snapshot()), Some(&bytes)),
            Err(LoadError::CorruptJournal { .. })
        ));
    }

    /// `payload` framed as a record whose checksums hold.
    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        frame_record(payload, &mut out);
        out
    }

    #[test]
    fn a_whole_record_with_a_variant_or_field_this_release_does_not_know_is_from_a_newer_one() {
        let mut bytes = journal(&[connection("a")]);
        let offset = bytes.len();
        bytes.extend(framed(br#"{"changes":[{"op":"put_ledger","entry":1}]}"#));
        match load_from_bytes(Some(&snapshot()), Some(&bytes)) {
            Err(LoadError::Newer {
                version: 2,
                in_journal: true,
                reason,
            }) => assert!(reason.contains("unknown variant `put_ledger`"), "{reason}"),
            other => panic!("{other:?}"),
        }
        let mut bytes = journal(&[connection("a")]);
        bytes.extend(framed(
            br#"{"changes":[{"op":"connection_id","connection_id":"b","epoch":2}]}"#,
        ));
        assert!(matches!(
            load_from_bytes(Some(&snapshot()), Some(&bytes)),
            Err(LoadError::Newer { in_journal: true, reason, .. }) if reason.contains("unknown field `epoch`")
        ));
        // Whole but not JSON, or JSON of the wrong type: damage, as before.
        for payload in [
            &b"{\"changes\": [tru"[..],
            br#"{"changes":[{"op":"connection_id","connection_id":5}]}"#,
        ] {
            let mut bytes = journal(&[connection("a")]);
            bytes.extend(framed(payload));
            assert!(matches!(
                load_from_bytes(Some(&snapshot()), Some(&bytes)),
                Err(LoadError::CorruptJournal { offset: at, ref reason }) if at == offset && reason.starts_with("record with a valid checksum is invalid")
            ));
        }
        // In the snapshot: a stage this release does not know, under a version it knows.
        let snapshot = br#"{"version":2,"connection_id":null,"payments":{},"sales":{"m":{"amount_minor":1,"currency_id":1,"since":"2026-12-01T10:00:00.000Z","stage":{"status":"settling"}}}}"#;
        assert!(matches!(
            load_from_bytes(Some(snapshot), None),
            Err(LoadError::Newer { version: 2, in_journal: false, reason }) if reason.contains("unknown variant `settling`")
        ));
    }

    #[test]
    fn legacy_snapshot_is_read_for_migration_and_unknown_versions_are_refused() {
        let legacy = br#"{"version":1,"connection_id":"c","payments":{},"sales":{}}"#;
        let loaded = load_from_bytes(Some(legacy), None).unwrap();
        assert!(loaded.migrate);
        assert_eq!(loaded.state.version, FORMAT_VERSION);
        assert!(matches!(
            load_from_bytes(Some(br#"{"version":9}"#), None),
            Err(LoadError::Newer {
                version: 9,
                in_journal: false,
                ..
            })
        ));
        assert!(matches!(
            load_from_bytes(None, Some(&journal(&[connection("a")]))),
            Err(LoadError::JournalWithoutSnapshot)
        ));
        assert!(load_from_bytes(None, Some(b"")).is_ok());
    }
}
