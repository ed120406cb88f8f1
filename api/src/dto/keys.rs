//! API keys: what `POST /v1/keys` accepts and what the key routes return.

use chrono::{DateTime, Utc};
use cronflow_jobs::domain::{ApiKey, Scope};
use poem_openapi::{Enum, Object};

mirror_enum!(
    /// What an API key may do: `admin` everything, `read` GET everything but the audit
    /// stream, `audit` read the audit stream only.
    KeyScope => Scope { Admin, Read, Audit }
);
/// A new API key.
#[derive(Debug, Object)]
#[oai(rename = "KeyIn", deny_unknown_fields)]
pub(crate) struct KeyIn {
    /// A label, e.g. who or what uses the key (1 to 200 characters).
    #[oai(validator(min_length = 1, max_length = 200))]
    pub(crate) name: String,
    pub(crate) scope: KeyScope,
}

/// An API key (its secret is never shown again after creation).
#[derive(Debug, Object)]
#[oai(rename = "Key")]
pub(crate) struct KeyOut {
    /// `key_…`.
    id: String,
    name: String,
    scope: KeyScope,
    created_at: DateTime<Utc>,
}

impl From<&ApiKey> for KeyOut {
    fn from(k: &ApiKey) -> Self {
        KeyOut {
            id: k.id.to_string(),
            name: k.name.clone(),
            scope: k.scope.into(),
            created_at: k.created_at,
        }
    }
}

/// A key just created: the only response that contains its token.
#[derive(Debug, Object)]
#[oai(rename = "NewKey")]
pub(crate) struct NewKeyOut {
    #[oai(flatten)]
    pub(crate) key: KeyOut,
    /// The bearer token. Store it now: CronFlow keeps only its hash.
    pub(crate) token: String,
}

/// One page of API keys, in creation order.
#[derive(Debug, Object)]
#[oai(rename = "KeyList")]
pub(crate) struct KeyList {
    pub(crate) items: Vec<KeyOut>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[oai(skip_serializing_if_is_none)]
    pub(crate) next_cursor: Option<String>,
}
