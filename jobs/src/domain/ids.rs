//! Prefixed random ids (`wf_8x9k2m4p…`), one newtype per kind of object so a run id can
//! never be passed where a job id is expected.

use rand::Rng;

/// Characters of the random part: lowercase letters and digits, easy to read and copy.
const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
/// Length of the random part: 36^12 ≈ 4.7e18 values, so collisions need billions of ids.
const RANDOM_LEN: usize = 12;

fn random_suffix() -> String {
    let mut rng = rand::rng();
    (0..RANDOM_LEN)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
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

            /// A new random id.
            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, random_suffix()))
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
    /// A job (`wf_…`, "workflow" as on the product page).
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
        assert_eq!(id.as_str().len(), 3 + RANDOM_LEN);
        assert_eq!(JobId::parse(id.as_str()), Some(id));
    }

    #[test]
    fn ids_of_another_kind_or_with_odd_characters_are_refused() {
        assert_eq!(JobId::parse("key_abc"), None);
        assert_eq!(JobId::parse("wf_"), None);
        assert_eq!(JobId::parse("wf_ABC"), None);
        assert_eq!(JobId::parse("wf_a'b"), None);
    }
}
