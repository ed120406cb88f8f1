//! Prefixed ids (`run_0mk3x9q2a7f4k8d1pz`), one newtype per kind of object so a run id
//! can never be passed where a job id is expected.
//!
//! An id's part after the prefix is the creation time in milliseconds (9 base-36
//! digits, so ids of one kind sort by creation) followed by 10 random characters. Time
//! order matters to the database: rows and index entries of new objects are appended
//! at the end of their B-trees instead of landing on a random page each, so a batch of
//! inserts dirties (and commits) a few pages rather than one per row. Ids made before this scheme (12 random
//! characters) still parse and name their objects.

use rand::Rng;

/// Characters of the id: lowercase digits and letters, easy to read and copy, and in
/// ASCII order, so that the time digits sort as numbers.
const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
/// Digits of the creation time: 36^9 ms reaches the year 5138.
const TIME_LEN: usize = 9;
/// Random characters after the time: 36^10 ≈ 3.7e15 values for ids of the same
/// millisecond.
const RANDOM_LEN: usize = 10;

/// `millis` as [`TIME_LEN`] base-36 digits, most significant first.
fn time_digits(millis: u128) -> [u8; TIME_LEN] {
    let mut digits = [b'0'; TIME_LEN];
    let mut rest = millis;
    for d in digits.iter_mut().rev() {
        *d = ALPHABET[(rest % 36) as usize];
        rest /= 36;
    }
    digits
}

fn time_ordered_suffix() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut rng = rand::rng();
    time_digits(millis)
        .iter()
        .map(|&b| b as char)
        .chain((0..RANDOM_LEN).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char))
        .collect()
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The prefix every id of this kind starts with.
            pub const PREFIX: &'static str = $prefix;

            /// A new id: its creation time, then random characters.
            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, time_ordered_suffix()))
            }

            /// Accepts `s` if it has this kind's prefix followed by 1 to 64 lowercase
            /// letters or digits; `None` otherwise (such an id names nothing).
            pub fn parse(s: &str) -> Option<Self> {
                let rest = s.strip_prefix($prefix)?;
                let ok = !rest.is_empty()
                    && rest.len() <= 64
                    && rest.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
                ok.then(|| Self(s.to_owned()))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

prefixed_id!(
    /// A job (`wf_…`, for "workflow").
    JobId, "wf_"
);
prefixed_id!(
    /// One run (execution attempt) of a job (`run_…`).
    RunId, "run_"
);
prefixed_id!(
    /// An event (`evt_…`), such as `job.completed`.
    EventId, "evt_"
);
prefixed_id!(
    /// A webhook subscription (`wh_…`).
    WebhookId, "wh_"
);
prefixed_id!(
    /// One event's delivery to one subscription (`dlv_…`); also its idempotency key.
    DeliveryId, "dlv_"
);
prefixed_id!(
    /// An API key (`key_…`). The key's secret is a separate, longer token.
    ApiKeyId, "key_"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_back_and_carry_their_prefix() {
        let id = JobId::generate();
        assert!(id.as_str().starts_with("wf_"));
        assert_eq!(id.as_str().len(), 3 + TIME_LEN + RANDOM_LEN);
        assert_eq!(JobId::parse(id.as_str()), Some(id));
        assert!(
            JobId::parse("wf_3k9x0m2p7q1z").is_some(),
            "an id of the old, random form"
        );
    }

    #[test]
    fn the_time_digits_sort_as_the_times_do() {
        let text = |ms: u128| String::from_utf8(time_digits(ms).to_vec()).unwrap();
        assert_eq!(text(0), "000000000");
        assert_eq!(text(35), "00000000z");
        assert_eq!(text(36), "000000010");
        // 2026-11-28T00:00:00Z, and one millisecond later.
        let now = 1_795_824_000_000;
        assert!(text(now) < text(now + 1));
        assert!(text(now - 1) < text(now));
        assert!(
            text(35) < text(36),
            "z sorts before 10 only by position, as digits do"
        );
        let id = RunId::generate();
        let made = u128::from_str_radix(&id.as_str()["run_".len().."run_".len() + TIME_LEN], 36).unwrap();
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        assert!(made.abs_diff(clock) < 60_000, "{id} carries the time it was made");
    }

    #[test]
    fn ids_of_another_kind_or_with_odd_characters_are_refused() {
        assert_eq!(JobId::parse("key_abc"), None);
        assert_eq!(JobId::parse("wf_"), None);
        assert_eq!(JobId::parse("wf_ABC"), None);
        assert_eq!(JobId::parse("wf_a'b"), None);
    }

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_well_formed_id_parses_back_to_itself(suffix in "[0-9a-z]{1,64}") {
            let text = format!("{}{suffix}", DeliveryId::PREFIX);
            let id = DeliveryId::parse(&text);
            prop_assert_eq!(id.as_ref().map(DeliveryId::as_str), Some(text.as_str()));
            prop_assert_eq!(id.map(|i| i.to_string()), Some(text.clone()));
            prop_assert_eq!(JobId::parse(&text), None, "an id of another kind");
        }

        #[test]
        fn any_text_parses_without_panicking_and_only_if_well_formed(
            text in any::<String>(),
            suffix in "[0-9a-z]{0,70}|[0-9a-zA-Z_' é-]{0,70}",
        ) {
            for candidate in [text.clone(), format!("wf_{suffix}"), format!("wf_{text}")] {
                let well_formed = candidate.strip_prefix("wf_").is_some_and(|rest| {
                    (1..=64).contains(&rest.len())
                        && rest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'z'))
                });
                let parsed = JobId::parse(&candidate);
                prop_assert_eq!(parsed.is_some(), well_formed, "{:?}", candidate);
                if let Some(id) = parsed {
                    prop_assert_eq!(JobId::parse(id.as_str()), Some(id.clone()));
                }
            }
        }
    }
}
