//! Why a delivery attempt failed, in words a user can act on, from the attempt's error
//! kind (`dns`, `tls`, `connect`, `timeout`, `ssrf_blocked`, `redirect`, `http`,
//! `interrupted`) and
//! status code.

/// A short name and an explanation with what to do.
pub(crate) struct Cause {
    /// `HTTP 503`, `Timeout`, `DNS`, ...
    pub(crate) title: String,
    /// What it means and what to check.
    pub(crate) explanation: String,
}

/// The cause of a failure with `error_kind` and `status`; `last_error` explains
/// failures recorded without an attempt (a deleted subscription).
pub(crate) fn cause(error_kind: Option<&str>, status: Option<i32>, last_error: Option<&str>) -> Cause {
    let c = |title: String, explanation: &str| Cause {
        title,
        explanation: explanation.to_owned(),
    };
    match (error_kind.unwrap_or(""), status) {
        ("dns", _) => c(
            "DNS".into(),
            "The endpoint's host name did not resolve. Check the URL's spelling and its DNS records.",
        ),
        ("tls", _) => c(
            "TLS".into(),
            "The TLS handshake failed: the certificate is expired, self-signed or for another name. Fix the certificate.",
        ),
        ("connect", _) => c(
            "Connection refused".into(),
            "Nothing accepted the connection at that address and port. Is the receiver running and reachable?",
        ),
        ("timeout", _) => c(
            "Timeout".into(),
            "No complete answer within the webhook timeout. Answer at once and do the work in the background.",
        ),
        ("ssrf_blocked", _) => c(
            "Refused: private address".into(),
            "The URL resolves to a loopback, private, link-local or metadata address, which CronFlow refuses \
             unless the operator sets CRONFLOW_ALLOW_PRIVATE_TARGETS.",
        ),
        ("interrupted", _) => c(
            "Interrupted".into(),
            "The CronFlow process making this attempt stopped (killed, or it lost its lease) before recording it. \
             The request may have reached the receiver: the outcome is unknown. It counts as a failed attempt, \
             and the next attempt carries the same idempotency key.",
        ),
        ("redirect", s) => c(
            format!("Redirect {}", s.map(|s| s.to_string()).unwrap_or_default()),
            "The endpoint answered with a redirect, which is not followed. Register the final URL.",
        ),
        (_, Some(410)) => c(
            "HTTP 410 Gone".into(),
            "The receiver said this endpoint is gone: the delivery is not retried and the subscription is disabled.",
        ),
        (_, Some(s)) if (400..500).contains(&s) => c(
            format!("HTTP {s}"),
            "The receiver refused the request (4xx). Check its signature verification, the path and its authentication.",
        ),
        (_, Some(s)) if s >= 500 => c(
            format!("HTTP {s}"),
            "The receiver failed (5xx): its own logs say why.",
        ),
        (_, Some(s)) => c(
            format!("HTTP {s}"),
            "The receiver answered with a status that is not 2xx.",
        ),
        ("", None) => Cause {
            title: "No attempt".into(),
            explanation: last_error
                .unwrap_or("The delivery ended without an attempt.")
                .to_owned(),
        },
        (kind, None) => c(kind.to_owned(), "The attempt failed."),
    }
}

#[cfg(test)]
mod tests {
    use super::cause;

    #[test]
    fn each_failure_class_has_its_own_words() {
        assert_eq!(cause(Some("http"), Some(503), None).title, "HTTP 503");
        assert!(cause(Some("http"), Some(503), None).explanation.contains("5xx"));
        assert!(cause(Some("http"), Some(401), None).explanation.contains("4xx"));
        assert_eq!(cause(Some("http"), Some(410), None).title, "HTTP 410 Gone");
        assert_eq!(cause(Some("timeout"), None, None).title, "Timeout");
        assert_eq!(cause(Some("dns"), None, None).title, "DNS");
        assert!(cause(Some("ssrf_blocked"), None, None).title.contains("private"));
        assert_eq!(
            cause(None, None, Some("the subscription or event no longer exists")).explanation,
            "the subscription or event no longer exists"
        );
    }
}
