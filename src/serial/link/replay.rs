//! The replay cache of docs/serial-protocol.md §3: the answers given in one link session,
//! so a request the peer sends again (our ACK was lost) is answered with the same reply
//! instead of being handled twice, and a peer that restarted is heard anew. The bare § below
//! cite docs/serial-protocol.md.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};

use bytes::Bytes;

use super::settings::LOG_TARGET;

/// Answered request ids remembered per link session (§3).
pub const REPLAY_CACHE_SIZE: usize = 64;

/// What the replay cache knows about a received request id.
pub(super) enum Seen {
    New,
    /// New, and the peer evidently restarted: everything remembered before was emptied.
    PeerRestarted,
    InProgress,
    Answered(Bytes),
}

/// The replay cache of §3. An entry remembers a fingerprint of the request, so the same id with
/// different content (a peer that restarted and counts from 1 again) is a new request, not a
/// duplicate: a replayed `sale_started` for the wrong sale would be far worse than a second
/// delivery, which the application handles idempotently.
///
/// Only the peer's latest request can be a duplicate: its link is stop-and-wait (§2), so it
/// sends the next request only once the frame of the previous one was acknowledged (or failed).
/// An *older* id coming back therefore means the peer's counter started over (the other
/// process restarted while the line stayed open, or the counter wrapped): the cache is
/// emptied and the request is new, even if its content matches, so the restarted peer's
/// `agent_state` or `status` is heard instead of being answered from the previous process's
/// conversation.
#[derive(Default)]
pub(super) struct ReplayCache {
    in_progress: HashMap<u32, u64>,
    answered: VecDeque<(u32, u64, Bytes)>,
    /// The id of the last request received.
    latest: Option<u32>,
}

pub(super) fn fingerprint(apdu: &[u8]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    apdu.hash(&mut hasher);
    hasher.finish()
}

impl ReplayCache {
    pub(super) fn check(&mut self, id: u32, print: u64) -> Seen {
        let latest = self.latest.replace(id);
        let known =
            self.in_progress.contains_key(&id) || self.answered.iter().any(|(i, _, _)| *i == id);
        if known && latest != Some(id) {
            self.clear();
            self.latest = Some(id);
            return Seen::PeerRestarted;
        }
        if let Some(&known) = self.in_progress.get(&id) {
            if known == print {
                return Seen::InProgress;
            }
            tracing::warn!(target: LOG_TARGET,
                serial_request_id = id,
                "serial request id {id} reused with different content; treated as new"
            );
            self.in_progress.remove(&id);
        }
        if let Some(pos) = self.answered.iter().position(|(i, _, _)| *i == id) {
            if self.answered[pos].1 == print {
                return Seen::Answered(self.answered[pos].2.clone());
            }
            tracing::warn!(target: LOG_TARGET,
                serial_request_id = id,
                "serial request id {id} reused with different content; treated as new"
            );
            self.answered.remove(pos);
        }
        Seen::New
    }

    pub(super) fn start(&mut self, id: u32, print: u64) {
        self.in_progress.insert(id, print);
    }

    pub(super) fn answer(&mut self, id: u32, reply_frame: Bytes) {
        if let Some(print) = self.in_progress.remove(&id) {
            if self.answered.len() >= REPLAY_CACHE_SIZE {
                self.answered.pop_front();
            }
            self.answered.push_back((id, print, reply_frame));
        }
    }

    pub(super) fn forget(&mut self, id: u32) {
        self.in_progress.remove(&id);
    }

    pub(super) fn clear(&mut self) {
        self.in_progress.clear();
        self.answered.clear();
        self.latest = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_cache_keeps_the_last_64_answers() {
        let mut cache = ReplayCache::default();
        for id in 0..70u32 {
            assert!(matches!(cache.check(id, 1), Seen::New));
            cache.start(id, 1);
            assert!(matches!(cache.check(id, 1), Seen::InProgress));
            cache.answer(id, Bytes::from(id.to_string()));
            match cache.check(id, 1) {
                Seen::Answered(reply) => assert_eq!(reply, Bytes::from(id.to_string())),
                _ => panic!("id {id} not answered from the cache"),
            }
        }
        let kept: Vec<u32> = cache.answered.iter().map(|(id, _, _)| *id).collect();
        assert_eq!(kept, (6..70).collect::<Vec<_>>());
        assert!(matches!(cache.check(69, 2), Seen::New), "content differs");
    }

    #[test]
    fn an_older_request_id_coming_back_means_the_peer_restarted() {
        let mut cache = ReplayCache::default();
        for id in 1..=3u32 {
            assert!(matches!(cache.check(id, 7), Seen::New));
            cache.start(id, 7);
            cache.answer(id, Bytes::from(id.to_string()));
        }
        // The latest request may come again (our ACK was lost): its stored reply.
        assert!(matches!(cache.check(3, 7), Seen::Answered(_)));
        // An older one cannot (stop-and-wait): the peer counts from 1 again, same content or not.
        assert!(matches!(cache.check(1, 7), Seen::PeerRestarted));
        cache.start(1, 7);
        cache.answer(1, Bytes::from_static(b"new"));
        assert!(matches!(cache.check(1, 7), Seen::Answered(reply) if reply == "new"));
        assert!(
            matches!(cache.check(2, 7), Seen::New),
            "the previous process's answers are gone"
        );
    }
}
