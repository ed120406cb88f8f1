//! The audit trail's hash chain: each entry's `hash` covers the previous entry's hash and
//! the entry itself, so an entry edited, deleted, inserted or moved breaks the chain from
//! there on, and anyone holding an exported copy can check it with SHA-256 alone.
//!
//! # The rule, exactly
//! - An entry is the JSON object the audit stream sends (`seq`, `at`, `actor`, `action`,
//!   `object_type`, `object_id`, `source`, `detail`) without `prev_hash` and `hash`.
//! - Its **canonical form** is that object serialised with no whitespace, object keys
//!   sorted by their UTF-8 bytes at every depth, strings escaped as JSON requires (`"`,
//!   `\`, and control characters; nothing else: other characters are written as UTF-8),
//!   integers in decimal. Python's `json.dumps(entry, sort_keys=True,
//!   separators=(",", ":"), ensure_ascii=False)` writes the same bytes.
//! - `hash = hex(SHA-256(prev_hash + "\n" + canonical form))`, lower-case hex, where
//!   `prev_hash` is the previous entry's `hash`, and for the first entry ever
//!   [`GENESIS`] (64 zeros).
//! - When retention removes the oldest entries, the first kept entry's `prev_hash` is
//!   the hash of the last removed one; the store keeps that hash and its `seq` as the
//!   chain's anchor, so the kept chain still verifies from its first entry.
//!
//! What it proves: an exported copy (a SIEM's) pins every entry before the last hash it
//! holds. Someone able to write the database could recompute the whole chain after an
//! edit; the copies outside it, compared with `cronflow audit verify`, then disagree.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first entry ever written.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The fields of an entry that are not hashed (the chain itself).
const CHAIN_FIELDS: [&str; 2] = ["prev_hash", "hash"];

/// The canonical serialisation of `value` (see the module documentation).
pub fn canonical(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        // serde_json writes scalars compactly, escaping only what JSON requires.
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The hash of `entry` (its stream form; `prev_hash` and `hash` are left out) following
/// the entry whose hash is `prev_hash`.
pub fn entry_hash(prev_hash: &str, entry: &Value) -> String {
    let mut hashed = entry.clone();
    if let Value::Object(map) = &mut hashed {
        for f in CHAIN_FIELDS {
            map.remove(f);
        }
    }
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(canonical(&hashed).as_bytes());
    hex::encode(h.finalize())
}

/// Where a chain starts: the `seq` before its first entry and the hash that entry
/// continues from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    /// The first entry's `seq` is this plus one.
    pub seq: i64,
    /// The first entry's `prev_hash`.
    pub hash: String,
}

impl Anchor {
    /// The start of a chain nothing was removed from.
    pub fn genesis() -> Self {
        Anchor {
            seq: 0,
            hash: GENESIS.to_owned(),
        }
    }
}

/// What checking a chain found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every entry follows its predecessor: `count` entries, the last with `last_hash`.
    Intact {
        /// Entries checked.
        count: u64,
        /// The last entry's `seq` (the anchor's if none).
        last_seq: i64,
        /// The last entry's hash (the anchor's if none).
        last_hash: String,
    },
    /// The first entry that does not follow: its `seq` (or where one was expected), and why.
    Broken {
        /// The `seq` at which the chain breaks.
        seq: i64,
        /// What is wrong there.
        reason: String,
    },
}

/// Checks entries one at a time, in the order given.
#[derive(Debug, Clone)]
pub struct Verifier {
    next_seq: i64,
    prev_hash: String,
    count: u64,
    broken: Option<(i64, String)>,
}

impl Verifier {
    /// A verifier of a chain that starts at `anchor`.
    pub fn new(anchor: Anchor) -> Self {
        Verifier {
            next_seq: anchor.seq + 1,
            prev_hash: anchor.hash,
            count: 0,
            broken: None,
        }
    }

    /// A verifier that takes the first entry's `seq` and `prev_hash` as given (an
    /// exported file that may start anywhere), unless it is the first entry ever.
    pub fn from_first(first: &Value) -> Self {
        let seq = first.get("seq").and_then(Value::as_i64).unwrap_or(1);
        let hash = match first.get("prev_hash").and_then(Value::as_str) {
            Some(h) if seq > 1 => h.to_owned(),
            _ => GENESIS.to_owned(),
        };
        Verifier::new(Anchor { seq: seq - 1, hash })
    }

    /// Checks the next entry; after the first break, nothing more is checked.
    pub fn push(&mut self, entry: &Value) {
        if self.broken.is_some() {
            return;
        }
        let expected = self.next_seq;
        let fail = |reason: String| Some((expected, reason));
        let seq = entry.get("seq").and_then(Value::as_i64);
        let prev = entry.get("prev_hash").and_then(Value::as_str);
        let hash = entry.get("hash").and_then(Value::as_str);
        self.broken = match (seq, prev, hash) {
            (None, _, _) => fail("an entry has no seq".to_owned()),
            (Some(s), _, _) if s > expected => fail(if s == expected + 1 {
                format!("entry {expected} is missing or out of place: entry {s} comes next")
            } else {
                format!(
                    "entries {expected} to {} are missing or out of place: entry {s} comes next",
                    s - 1
                )
            }),
            (Some(s), _, _) if s < expected => {
                fail(format!("entry {s} is out of place: entry {expected} was due"))
            }
            (_, None, _) | (_, _, None) => fail(format!("entry {expected} has no prev_hash or hash")),
            (_, Some(p), _) if p != self.prev_hash => fail(format!(
                "entry {expected} does not follow entry {}: its prev_hash is not that entry's hash",
                expected - 1
            )),
            (_, Some(p), Some(h)) if entry_hash(p, entry) != h => fail(format!(
                "entry {expected} was changed: its content does not match its hash"
            )),
            (_, _, Some(h)) => {
                self.prev_hash = h.to_owned();
                self.next_seq += 1;
                self.count += 1;
                None
            }
        };
    }

    /// The verdict so far.
    pub fn verdict(&self) -> Verdict {
        match &self.broken {
            Some((seq, reason)) => Verdict::Broken {
                seq: *seq,
                reason: reason.clone(),
            },
            None => Verdict::Intact {
                count: self.count,
                last_seq: self.next_seq - 1,
                last_hash: self.prev_hash.clone(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chain(n: i64) -> Vec<Value> {
        let mut prev = GENESIS.to_owned();
        (1..=n)
            .map(|seq| {
                let mut e = json!({
                    "seq": seq, "at": "2026-12-07T10:00:00Z", "actor": "system",
                    "action": "delivery.attempt", "object_type": "delivery",
                    "object_id": format!("dlv_{seq}"), "source": null,
                    "detail": {"z": 1, "a": ["é", "\"q\"\n"], "m": {"y": true, "b": null}},
                });
                let h = entry_hash(&prev, &e);
                e["prev_hash"] = json!(prev);
                e["hash"] = json!(h);
                prev = h;
                e
            })
            .collect()
    }

    fn verify(entries: &[Value]) -> Verdict {
        let mut v = Verifier::new(Anchor::genesis());
        entries.iter().for_each(|e| v.push(e));
        v.verdict()
    }

    #[test]
    fn canonical_form_sorts_keys_at_every_depth_and_has_no_whitespace() {
        let v = json!({"b": {"d": 1, "c": [2, {"f": "é\n", "e": null}]}, "a": -3});
        assert_eq!(
            canonical(&v),
            r#"{"a":-3,"b":{"c":[2,{"e":null,"f":"é\n"}],"d":1}}"#
        );
    }

    #[test]
    fn a_known_entry_has_a_known_hash() {
        // Pinned so the rule cannot change silently: receivers verify with it.
        let e = json!({"seq": 1, "at": "2026-12-07T10:00:00Z", "actor": "system", "action": "x",
                       "object_type": "job", "object_id": null, "source": null, "detail": {}});
        let expected = {
            let mut h = Sha256::new();
            h.update(format!(
                "{GENESIS}\n{}",
                r#"{"action":"x","actor":"system","at":"2026-12-07T10:00:00Z","detail":{},"object_id":null,"object_type":"job","seq":1,"source":null}"#
            ));
            hex::encode(h.finalize())
        };
        assert_eq!(entry_hash(GENESIS, &e), expected);
    }

    #[test]
    fn an_intact_chain_verifies() {
        let entries = chain(5);
        assert_eq!(
            verify(&entries),
            Verdict::Intact {
                count: 5,
                last_seq: 5,
                last_hash: entries[4]["hash"].as_str().unwrap().to_owned()
            }
        );
    }

    #[test]
    fn an_edit_a_deletion_and_a_reordering_are_each_caught_where_they_are() {
        let mut edited = chain(5);
        edited[2]["detail"]["z"] = json!(2);
        assert!(
            matches!(verify(&edited), Verdict::Broken { seq: 3, ref reason } if reason.contains("changed"))
        );

        let mut deleted = chain(5);
        deleted.remove(3);
        assert!(
            matches!(verify(&deleted), Verdict::Broken { seq: 4, ref reason } if reason.contains("missing"))
        );

        let mut reordered = chain(5);
        reordered.swap(1, 2);
        assert!(
            matches!(verify(&reordered), Verdict::Broken { seq: 2, ref reason } if reason.contains("out of place"))
        );

        // Renumbered to hide the swap: the links give it away.
        let mut renumbered = chain(5);
        renumbered.swap(1, 2);
        renumbered[1]["seq"] = json!(2);
        renumbered[2]["seq"] = json!(3);
        assert!(matches!(verify(&renumbered), Verdict::Broken { seq: 2, .. }));
    }

    #[test]
    fn a_file_starting_mid_chain_verifies_from_its_first_entry() {
        let entries = chain(6);
        let mut v = Verifier::from_first(&entries[3]);
        entries[3..].iter().for_each(|e| v.push(e));
        assert!(matches!(
            v.verdict(),
            Verdict::Intact {
                count: 3,
                last_seq: 6,
                ..
            }
        ));
    }
}
