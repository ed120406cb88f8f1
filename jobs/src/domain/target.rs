//! What a job runs: a command (argv in its own process group) or an HTTP request.

use super::credentials;
use crate::ValidationError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most arguments a command may have; far above any real use, low enough to bound rows.
const MAX_ARGS: usize = 1024;
/// Largest HTTP body a job may send.
const MAX_HTTP_BODY: usize = 256 * 1024;
/// Headers the HTTP client derives from the URL and the body: a replacement would send
/// the request somewhere other than its URL says (`Host`, past the address check) or
/// break its framing.
const CLIENT_HEADERS: [&str; 4] = ["host", "content-length", "transfer-encoding", "connection"];

/// A job's target. Stored as JSON (`{"type":"command",...}`), the same shape the API uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Target {
    /// Run a program.
    Command(CommandTarget),
    /// Send an HTTP request; a 2xx answer is success.
    Http(HttpTarget),
}

/// A program to run: no shell unless the argv asks for one (`["sh","-c","..."]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandTarget {
    command: Vec<String>,
    env: BTreeMap<String, String>,
    working_dir: Option<String>,
}

impl CommandTarget {
    /// Validates argv (non-empty, no NUL bytes), environment names and the directory.
    pub fn parse(
        command: Vec<String>,
        env: BTreeMap<String, String>,
        working_dir: Option<String>,
    ) -> Result<Self, ValidationError> {
        match command.first() {
            None => return Err(ValidationError::new("command", "must name a program to run")),
            Some(p) if p.trim().is_empty() => {
                return Err(ValidationError::new("command", "the program name is empty"));
            }
            _ => {}
        }
        if command.len() > MAX_ARGS {
            return Err(ValidationError::new(
                "command",
                format!("at most {MAX_ARGS} arguments"),
            ));
        }
        if command.iter().any(|a| a.contains('\0')) {
            return Err(ValidationError::new(
                "command",
                "arguments cannot contain NUL bytes",
            ));
        }
        for (k, v) in &env {
            if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
                return Err(ValidationError::new(
                    "env",
                    format!("`{k}` is not a valid environment variable (no `=`, no NUL, not empty)"),
                ));
            }
        }
        if working_dir
            .as_ref()
            .is_some_and(|d| d.is_empty() || d.contains('\0'))
        {
            return Err(ValidationError::new("working_dir", "must be a non-empty path"));
        }
        Ok(Self {
            command,
            env,
            working_dir,
        })
    }

    /// Program and arguments.
    pub fn command(&self) -> &[String] {
        &self.command
    }
    /// Extra environment variables.
    pub fn env(&self) -> &BTreeMap<String, String> {
        &self.env
    }
    /// Directory to run in (the server's working directory if `None`).
    pub fn working_dir(&self) -> Option<&str> {
        self.working_dir.as_deref()
    }
}

/// HTTP methods a job may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
#[allow(missing_docs)]
pub enum HttpMethod {
    Get,
    Post,
    Put,
    Patch,
    Delete,
    Head,
}

impl Target {
    /// This target (a change's), with each value shown as [`credentials::REDACTED`]
    /// replaced by the stored one in `current`, so a definition read and sent back
    /// keeps its credentials. A redacted value with nothing stored under its name is an
    /// error naming the field.
    pub fn keeping_stored_credentials(self, current: &Target) -> Result<Target, ValidationError> {
        use credentials::{REDACTED, restore_map, restore_url};
        Ok(match (self, current) {
            (Target::Command(mut new), Target::Command(old)) => {
                new.env = restore_map(new.env, &old.env, "target.env")?;
                Target::Command(new)
            }
            (Target::Http(mut new), Target::Http(old)) => {
                new.headers = restore_map(new.headers, &old.headers, "target.headers")?;
                new.url = restore_url(&new.url, &old.url, "target.url")?;
                if new.body.as_deref() == Some(REDACTED) {
                    new.body = old.body.clone();
                }
                Target::Http(new)
            }
            (other, _) => other,
        })
    }
}

/// An HTTP request to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpTarget {
    method: HttpMethod,
    url: String,
    headers: BTreeMap<String, String>,
    body: Option<String>,
}

/// What outbound URLs may be: the operator's `CRONFLOW_ALLOW_PRIVATE_TARGETS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UrlPolicy {
    /// Accept `http://` as well as `https://`, and literal loopback, private and other
    /// internal addresses (for local use and tests).
    pub allow_private_targets: bool,
}

impl HttpTarget {
    /// Validates the URL (as [`parse_url`] does), the headers (valid names and values,
    /// none the HTTP client sets itself, such as `Host`) and the body size. Names are
    /// checked again at every run, against the address actually connected to.
    pub fn parse(
        method: HttpMethod,
        url: &str,
        headers: BTreeMap<String, String>,
        body: Option<String>,
        policy: UrlPolicy,
    ) -> Result<Self, ValidationError> {
        let url = parse_url(url, policy).map_err(|m| ValidationError::new("url", m))?;
        check_headers(&headers, &CLIENT_HEADERS)?;
        if body.as_ref().is_some_and(|b| b.len() > MAX_HTTP_BODY) {
            return Err(ValidationError::new(
                "body",
                format!("at most {MAX_HTTP_BODY} bytes"),
            ));
        }
        Ok(Self {
            method,
            url,
            headers,
            body,
        })
    }

    /// The method.
    pub fn method(&self) -> HttpMethod {
        self.method
    }
    /// The absolute URL.
    pub fn url(&self) -> &str {
        &self.url
    }
    /// Extra request headers.
    pub fn headers(&self) -> &BTreeMap<String, String> {
        &self.headers
    }
    /// The request body, if any.
    pub fn body(&self) -> Option<&str> {
        self.body.as_deref()
    }
}

/// Checks custom request headers (field `headers`): valid names, values without line
/// breaks, none of `reserved` (lowercase names; one ending in `-` reserves the prefix).
pub(crate) fn check_headers(
    headers: &BTreeMap<String, String>,
    reserved: &[&str],
) -> Result<(), ValidationError> {
    for (k, v) in headers {
        let lower = k.to_ascii_lowercase();
        let name_ok = !k.is_empty()
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !name_ok {
            return Err(ValidationError::new(
                "headers",
                format!("`{k}` is not a valid header name"),
            ));
        }
        let is_reserved = |r: &&str| {
            if r.ends_with('-') {
                lower.starts_with(r)
            } else {
                lower == *r
            }
        };
        if reserved.iter().any(is_reserved) {
            return Err(ValidationError::new(
                "headers",
                format!("`{k}` is set by CronFlow and cannot be replaced"),
            ));
        }
        if v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(ValidationError::new(
                "headers",
                format!("the value of `{k}` contains a line break"),
            ));
        }
    }
    Ok(())
}

/// Checks an outbound URL: absolute, with a host, `https` (or `http` when allowed), no
/// credentials in it, and not a literal loopback, private or otherwise internal address
/// (unless allowed). Returns the normalised form.
pub fn parse_url(raw: &str, policy: UrlPolicy) -> Result<String, String> {
    let url = url::Url::parse(raw.trim()).map_err(|e| format!("`{raw}` is not a valid absolute URL: {e}"))?;
    match url.scheme() {
        "https" => {}
        "http" if policy.allow_private_targets => {}
        "http" => {
            return Err(
                "plain http is refused: use https (or start CronFlow with CRONFLOW_ALLOW_PRIVATE_TARGETS=true)"
                    .into(),
            );
        }
        other => return Err(format!("scheme `{other}` is not supported: use https")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials in the URL are not allowed: send them in a header".into());
    }
    crate::outbound::check_literal_host(&url, policy.allow_private_targets).map_err(|e| e.to_string())?;
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_needs_the_operators_permission() {
        let strict = UrlPolicy::default();
        let open = UrlPolicy {
            allow_private_targets: true,
        };
        assert!(parse_url("http://example.com/x", strict).is_err());
        assert!(parse_url("http://example.com/x", open).is_ok());
        assert!(parse_url("https://example.com/x", strict).is_ok());
        assert!(parse_url("ftp://example.com/x", open).is_err());
        assert!(parse_url("/relative", open).is_err());
        assert!(parse_url("https://u:p@example.com/", open).is_err());
    }

    #[test]
    fn http_targets_refuse_internal_literals_and_a_host_header_as_webhooks_do() {
        let strict = UrlPolicy::default();
        let open = UrlPolicy {
            allow_private_targets: true,
        };
        let target = |url: &str, headers: &[(&str, &str)], policy| {
            let headers = headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            HttpTarget::parse(HttpMethod::Get, url, headers, None, policy)
        };
        for url in [
            "https://127.0.0.1/x",
            "https://10.0.0.1/x",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]/x",
            "https://[::ffff:127.0.0.1]/x",
            "https://[::127.0.0.1]/x",
        ] {
            assert_eq!(target(url, &[], strict).unwrap_err().field, "url", "{url}");
            assert!(
                target(url, &[], open).is_ok(),
                "{url} with private targets allowed"
            );
        }
        assert!(target("https://93.184.216.34/x", &[], strict).is_ok());
        for name in [
            "Host",
            "host",
            "Content-Length",
            "Transfer-Encoding",
            "Connection",
        ] {
            let e = target("https://example.com/", &[(name, "internal.example")], open).unwrap_err();
            assert_eq!(e.field, "headers", "{name}");
        }
        assert!(
            target(
                "https://example.com/",
                &[("Content-Type", "application/json")],
                strict
            )
            .is_ok()
        );
    }

    #[test]
    fn empty_argv_and_bad_env_names_are_refused() {
        assert_eq!(
            CommandTarget::parse(vec![], Default::default(), None)
                .unwrap_err()
                .field,
            "command"
        );
        let env = BTreeMap::from([("A=B".to_owned(), "x".to_owned())]);
        assert_eq!(
            CommandTarget::parse(vec!["true".into()], env, None)
                .unwrap_err()
                .field,
            "env"
        );
    }
}
