//! Cursor pagination: opaque cursors that resume exactly after the last item seen, stable
//! while rows are added (ordering is by creation time, then id).

use crate::ValidationError;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};

/// Default and largest page sizes.
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest page a client may ask for.
pub const MAX_LIMIT: u32 = 500;

/// A position in a listing: the sort key of the last item returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// Creation time of the last item, in milliseconds since the epoch.
    pub created_at_ms: i64,
    /// Id of the last item (ties on time are broken by id).
    pub id: String,
}

impl Cursor {
    /// The cursor after an item.
    pub fn after(created_at: DateTime<Utc>, id: &str) -> Self {
        Self {
            created_at_ms: created_at.timestamp_millis(),
            id: id.to_owned(),
        }
    }

    /// The opaque text form handed to clients.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}", self.created_at_ms, self.id))
    }

    /// Parses a cursor a client sent back (the `cursor` query parameter).
    pub fn decode(s: &str) -> Result<Self, ValidationError> {
        let bad = || ValidationError::new("cursor", "not a cursor returned by this API");
        let raw = URL_SAFE_NO_PAD.decode(s).map_err(|_| bad())?;
        let raw = String::from_utf8(raw).map_err(|_| bad())?;
        let (ms, id) = raw.split_once(':').ok_or_else(bad)?;
        Ok(Self {
            created_at_ms: ms.parse().map_err(|_| bad())?,
            id: id.to_owned(),
        })
    }
}

/// Which page to read.
#[derive(Debug, Clone)]
pub struct PageRequest {
    /// Items per page (1 to 500).
    pub limit: u32,
    /// Resume after this item; `None` for the first page.
    pub after: Option<Cursor>,
}

impl PageRequest {
    /// Validates the `limit` and `cursor` query parameters.
    pub fn parse(limit: Option<u32>, cursor: Option<&str>) -> Result<Self, ValidationError> {
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ValidationError::new(
                "limit",
                format!("must be between 1 and {MAX_LIMIT}"),
            ));
        }
        Ok(Self {
            limit,
            after: cursor.map(Cursor::decode).transpose()?,
        })
    }
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The items, in listing order.
    pub items: Vec<T>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<Cursor>,
}

impl<T> Page<T> {
    /// A page from up to `limit + 1` rows read in listing order: an extra row only says
    /// that another page follows, which then starts after the last item kept.
    pub fn from_rows(mut items: Vec<T>, limit: u32, cursor_of: impl Fn(&T) -> Cursor) -> Self {
        let next_cursor = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(cursor_of)
        } else {
            None
        };
        Page { items, next_cursor }
    }
}
