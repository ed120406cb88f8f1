//! Credentials inside definitions: a command's environment, an HTTP target's headers,
//! body and URL query, a subscription's custom headers and URL query. Every key sees them
//! redacted (names kept, values [`REDACTED`]); an admin reads them on purpose through
//! the audited reveal route. A definition sent back with [`REDACTED`] where a value was
//! keeps the stored value, so reading a job, changing its schedule and writing it back
//! loses no credential.

use super::Target;
use crate::ValidationError;
use std::collections::BTreeMap;

/// What a redacted value shows as, and what stands for "keep the stored value" in a
/// change.
pub const REDACTED: &str = "[redacted]";

/// `map` with every value redacted.
pub fn redact_map(map: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    map.keys().map(|k| (k.clone(), REDACTED.to_owned())).collect()
}

/// `url` with its password and every query value redacted; an unparsable URL is
/// redacted whole.
pub fn redact_url(raw: &str) -> String {
    let Ok(mut url) = url::Url::parse(raw) else {
        return REDACTED.to_owned();
    };
    if url.password().is_some() {
        let _ = url.set_password(Some(REDACTED));
    }
    if url.query().is_some() {
        let names: Vec<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
        url.query_pairs_mut()
            .clear()
            .extend_pairs(names.iter().map(|k| (k.as_str(), REDACTED)));
    }
    url.to_string()
}

/// The stored values of a URL's password and query, by `password` and `query.<name>`
/// (the first value of a repeated name).
fn url_secrets(raw: &str) -> BTreeMap<String, String> {
    let Ok(url) = url::Url::parse(raw) else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    if let Some(p) = url.password() {
        out.insert("password".to_owned(), decode(p));
    }
    for (k, v) in url.query_pairs() {
        out.entry(format!("query.{k}")).or_insert_with(|| v.into_owned());
    }
    out
}

/// A URL's percent-encoded userinfo part, decoded.
fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// `new` with each redacted value replaced by the value of the same name in `current`.
/// `field` names the map in errors (`target.env`).
pub fn restore_map(
    new: BTreeMap<String, String>,
    current: &BTreeMap<String, String>,
    field: &str,
) -> Result<BTreeMap<String, String>, ValidationError> {
    new.into_iter()
        .map(|(k, v)| {
            if v != REDACTED {
                return Ok((k, v));
            }
            match current.get(&k) {
                Some(stored) => Ok((k, stored.clone())),
                None => Err(nothing_stored(&format!("{field}.{k}"))),
            }
        })
        .collect()
}

/// `new` with a redacted password or query value replaced by the stored one in
/// `current` (the same query name). `field` names the URL in errors.
pub fn restore_url(new: &str, current: &str, field: &str) -> Result<String, ValidationError> {
    let Ok(mut url) = url::Url::parse(new) else {
        return Ok(new.to_owned());
    };
    let stored = url_secrets(current);
    if url.password().map(decode).as_deref() == Some(REDACTED) {
        let password = stored.get("password").ok_or_else(|| nothing_stored(field))?;
        let _ = url.set_password(Some(password));
    }
    if url.query_pairs().any(|(_, v)| v == REDACTED) {
        let pairs = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if v == REDACTED {
                    stored
                        .get(&format!("query.{k}"))
                        .cloned()
                        .ok_or_else(|| nothing_stored(&format!("{field}?{k}")))?
                } else {
                    v.into_owned()
                };
                Ok((k.into_owned(), v))
            })
            .collect::<Result<Vec<_>, ValidationError>>()?;
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    Ok(url.to_string())
}

fn nothing_stored(field: &str) -> ValidationError {
    ValidationError::new(
        field.to_owned(),
        format!("`{REDACTED}` keeps a stored value, and none is stored under this name"),
    )
}

/// `raw` without what may carry a credential (user and password, query, fragment), for
/// what names an outbound URL outside the definition that holds it: errors, attempts,
/// the audit log, the DLQ page. Text that is not a URL is replaced whole.
pub fn endpoint_only(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) => {
            // Only URLs that cannot have a user (no host) refuse these; they have none.
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            url.to_string()
        }
        Err(_) => "(not a valid URL)".to_owned(),
    }
}

/// The credentials of a job's target by field path (`target.env.TOKEN`,
/// `target.headers.Authorization`, `target.body`, `target.url`), as the reveal route
/// shows them. Only fields that are redacted are listed.
pub fn target_secrets(target: &Target) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    match target {
        Target::Command(c) => {
            for (k, v) in c.env() {
                out.insert(format!("target.env.{k}"), v.clone());
            }
        }
        Target::Http(h) => {
            for (k, v) in h.headers() {
                out.insert(format!("target.headers.{k}"), v.clone());
            }
            if let Some(b) = h.body().filter(|b| !b.is_empty()) {
                out.insert("target.body".to_owned(), b.to_owned());
            }
            if redact_url(h.url()) != h.url() {
                out.insert("target.url".to_owned(), h.url().to_owned());
            }
        }
    }
    out
}

/// The credentials of a subscription (`headers.X-Token`, `url`), as [`target_secrets`].
pub fn webhook_secrets(url: &str, headers: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = headers
        .iter()
        .map(|(k, v)| (format!("headers.{k}"), v.clone()))
        .collect();
    if redact_url(url) != url {
        out.insert("url".to_owned(), url.to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_endpoint_only_drops_what_may_be_a_credential() {
        assert_eq!(
            endpoint_only("https://user:pw@hooks.example.com:8443/in/x?token=SECRET&a=b#SECRET"),
            "https://hooks.example.com:8443/in/x"
        );
        assert_eq!(endpoint_only("http://[::1]:9/x?"), "http://[::1]:9/x");
        assert_eq!(endpoint_only("https://example.com"), "https://example.com/");
        assert_eq!(endpoint_only("not a url ?token=SECRET"), "(not a valid URL)");
    }

    #[test]
    fn a_redacted_url_keeps_its_names_and_loses_its_values() {
        assert_eq!(
            redact_url("https://u:pw@example.com/hook?token=s3cret&x=1"),
            "https://u:%5Bredacted%5D@example.com/hook?token=%5Bredacted%5D&x=%5Bredacted%5D"
        );
        assert_eq!(redact_url("https://example.com/hook"), "https://example.com/hook");
        assert_eq!(redact_url("not a url"), REDACTED);
    }

    #[test]
    fn a_redacted_url_sent_back_gets_its_stored_values() {
        let stored = "https://u:p%40ss@example.com/hook?token=s3cret&x=1";
        let shown = redact_url(stored);
        assert_eq!(restore_url(&shown, stored, "url").unwrap(), stored);
        // A value changed on purpose is kept; a redacted one comes back.
        let edited = shown.replace("x=%5Bredacted%5D", "x=2");
        assert_eq!(
            restore_url(&edited, stored, "url").unwrap(),
            "https://u:p%40ss@example.com/hook?token=s3cret&x=2"
        );
        let err = restore_url("https://example.com/?other=%5Bredacted%5D", stored, "url").unwrap_err();
        assert_eq!(err.field, "url?other");
    }

    #[test]
    fn a_redacted_map_sent_back_gets_its_stored_values() {
        let stored = map(&[("TOKEN", "s3cret"), ("MODE", "fast")]);
        let shown = redact_map(&stored);
        assert_eq!(shown, map(&[("TOKEN", REDACTED), ("MODE", REDACTED)]));
        let edited = map(&[("TOKEN", REDACTED), ("MODE", "slow"), ("NEW", "1")]);
        assert_eq!(
            restore_map(edited, &stored, "target.env").unwrap(),
            map(&[("TOKEN", "s3cret"), ("MODE", "slow"), ("NEW", "1")])
        );
        let err = restore_map(map(&[("GONE", REDACTED)]), &stored, "target.env").unwrap_err();
        assert_eq!(err.field, "target.env.GONE");
    }
}
