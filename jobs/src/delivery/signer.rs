//! Signing webhook requests, and the verifier receivers can copy.
//!
//! Two signatures travel on every request:
//! - `X-CronFlow-Signature: sha256=<hex HMAC-SHA256 of the raw body>`, keyed with the
//!   whole secret string's UTF-8 bytes (`whsec_` prefix included). During a rotation, one comma-separated entry per
//!   active secret.
//! - Standard Webhooks: `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`,
//!   keyed with the base64-decoded part of a `whsec_` secret (a secret not in that form:
//!   its UTF-8 bytes); space-separated entries during a rotation. `webhook-id` is the
//!   delivery id (stable across retries and replays), `webhook-timestamp` the send time
//!   in Unix seconds, which gives receivers replay protection.

use super::super::domain::WebhookSecret;
use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Receivers should refuse timestamps further than this from their clock (seconds).
pub const TOLERANCE_SECONDS: i64 = 300;

fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

/// The `X-CronFlow-Signature` value for `body`.
pub fn cronflow_signature(secrets: &[&WebhookSecret], body: &[u8]) -> String {
    secrets
        .iter()
        .map(|s| format!("sha256={}", hex::encode(hmac(s.hmac_key(), &[body]))))
        .collect::<Vec<_>>()
        .join(",")
}

/// The `webhook-signature` value for message `id` sent at `timestamp` with `body`.
pub fn standard_signature(secrets: &[&WebhookSecret], id: &str, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    secrets
        .iter()
        .map(|s| {
            let sig = hmac(
                &s.standard_key(),
                &[id.as_bytes(), b".", ts.as_bytes(), b".", body],
            );
            format!("v1,{}", STANDARD.encode(sig))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why a request did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A header is missing or malformed.
    #[error("missing or malformed header {0}")]
    BadHeader(&'static str),
    /// The timestamp is outside the tolerance: possibly a replay.
    #[error("timestamp outside the allowed window")]
    Stale,
    /// No signature matches.
    #[error("no signature matches")]
    Mismatch,
}

/// Verifies a request by its `X-CronFlow-Signature` header: any entry matching the
/// HMAC of the raw body with `secret` passes. Constant-time comparison.
pub fn verify_cronflow(secret: &str, header: &str, body: &[u8]) -> Result<(), VerifyError> {
    let expected = hmac(secret.as_bytes(), &[body]);
    let matched = header
        .split(',')
        .filter_map(|e| e.trim().strip_prefix("sha256="))
        .filter_map(|h| hex::decode(h).ok())
        .any(|sig| bool::from(sig.ct_eq(&expected)));
    matched.then_some(()).ok_or(VerifyError::Mismatch)
}

/// Verifies a request by its Standard Webhooks headers, as the official libraries do:
/// the timestamp within ±[`TOLERANCE_SECONDS`] of `now` (Unix seconds) and any `v1`
/// entry matching. Constant-time comparison.
pub fn verify_standard(
    secret: &str,
    id: &str,
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now: i64,
) -> Result<(), VerifyError> {
    let ts: i64 = timestamp
        .parse()
        .map_err(|_| VerifyError::BadHeader("webhook-timestamp"))?;
    if (now - ts).abs() > TOLERANCE_SECONDS {
        return Err(VerifyError::Stale);
    }
    if id.is_empty() {
        return Err(VerifyError::BadHeader("webhook-id"));
    }
    let key = WebhookSecret::parse(secret)
        .map(|s| s.standard_key())
        .unwrap_or_else(|_| secret.as_bytes().to_vec());
    let expected = hmac(&key, &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body]);
    let matched = signature
        .split(' ')
        .filter_map(|e| e.strip_prefix("v1,"))
        .filter_map(|b| STANDARD.decode(b).ok())
        .any(|sig| bool::from(sig.ct_eq(&expected)));
    matched.then_some(()).ok_or(VerifyError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_webhooks_test_vector_reproduces() {
        let secret = WebhookSecret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let body = br#"{"email":"test@example.com","username":"test_user"}"#;
        let sig = standard_signature(&[&secret], "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367553, body);
        assert_eq!(sig, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
        assert_eq!(
            verify_standard(
                secret.expose(),
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                "1649367553",
                &sig,
                body,
                1649367553 + 10
            ),
            Ok(())
        );
        assert_eq!(
            verify_standard(
                secret.expose(),
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                "1649367553",
                &sig,
                body,
                1649367553 + 301
            ),
            Err(VerifyError::Stale)
        );
    }

    #[test]
    fn signatures_round_trip_and_every_rotation_entry_verifies() {
        let old = WebhookSecret::generate();
        let new = WebhookSecret::generate();
        let body = b"{\"event\":\"job.failed\"}";
        let header = cronflow_signature(&[&new, &old], body);
        assert_eq!(header.split(',').count(), 2);
        assert_eq!(verify_cronflow(new.expose(), &header, body), Ok(()));
        assert_eq!(verify_cronflow(old.expose(), &header, body), Ok(()));
        assert_eq!(
            verify_cronflow(new.expose(), &header, b"tampered"),
            Err(VerifyError::Mismatch)
        );
        let std = standard_signature(&[&new, &old], "dlv_1", 1_700_000_000, body);
        assert_eq!(
            verify_standard(old.expose(), "dlv_1", "1700000000", &std, body, 1_700_000_000),
            Ok(())
        );
        assert_eq!(
            verify_standard(old.expose(), "dlv_2", "1700000000", &std, body, 1_700_000_000),
            Err(VerifyError::Mismatch)
        );
    }

    use proptest::prelude::*;

    /// A generated secret, or one a user chose (any printable ASCII, sometimes with the
    /// `whsec_` prefix and a part that is not base64).
    fn secret() -> impl Strategy<Value = WebhookSecret> {
        prop_oneof![
            Just(()).prop_map(|()| WebhookSecret::generate()),
            "(whsec_)?[!-~]{16,80}".prop_map(|s| WebhookSecret::parse(&s).unwrap()),
        ]
    }

    /// `bytes` with the byte at `at` (modulo the length) changed by `flip` (never 0).
    fn flipped(bytes: &[u8], at: usize, flip: u8) -> Vec<u8> {
        let mut v = bytes.to_vec();
        let i = at % v.len();
        v[i] ^= flip;
        v
    }

    proptest! {
        #[test]
        fn the_cronflow_signature_verifies_and_any_flipped_byte_fails(
            key in secret(),
            body in proptest::collection::vec(any::<u8>(), 1..512),
            at in any::<usize>(),
            flip in 1..=u8::MAX,
        ) {
            let header = cronflow_signature(&[&key], &body);
            prop_assert_eq!(verify_cronflow(key.expose(), &header, &body), Ok(()));
            prop_assert_eq!(
                verify_cronflow(key.expose(), &header, &flipped(&body, at, flip)),
                Err(VerifyError::Mismatch)
            );
            let mac = hex::decode(header.strip_prefix("sha256=").unwrap()).unwrap();
            let forged = format!("sha256={}", hex::encode(flipped(&mac, at, flip)));
            prop_assert_eq!(verify_cronflow(key.expose(), &forged, &body), Err(VerifyError::Mismatch));
            let other = WebhookSecret::generate();
            prop_assert_eq!(verify_cronflow(other.expose(), &header, &body), Err(VerifyError::Mismatch));
        }

        #[test]
        fn the_standard_signature_verifies_and_any_flipped_byte_fails(
            key in secret(),
            id in "[a-z0-9_]{1,40}",
            timestamp in 0_i64..4_000_000_000,
            body in proptest::collection::vec(any::<u8>(), 0..512),
            at in any::<usize>(),
            flip in 1..=u8::MAX,
        ) {
            let ts = timestamp.to_string();
            let header = standard_signature(&[&key], &id, timestamp, &body);
            let verify = |id: &str, ts: &str, header: &str, body: &[u8]| {
                verify_standard(key.expose(), id, ts, header, body, timestamp)
            };
            prop_assert_eq!(verify(&id, &ts, &header, &body), Ok(()));
            if !body.is_empty() {
                let tampered = flipped(&body, at, flip);
                prop_assert_eq!(verify(&id, &ts, &header, &tampered), Err(VerifyError::Mismatch));
            }
            let other_id = String::from_utf8_lossy(&flipped(id.as_bytes(), at, flip)).into_owned();
            if !other_id.is_empty() {
                prop_assert_eq!(verify(&other_id, &ts, &header, &body), Err(VerifyError::Mismatch));
            }
            let later = (timestamp + 1 + (at % 300) as i64).to_string();
            prop_assert_eq!(
                verify_standard(key.expose(), &id, &later, &header, &body, timestamp),
                Err(VerifyError::Mismatch),
                "the timestamp is signed"
            );
            let text_flipped = String::from_utf8_lossy(&flipped(header.as_bytes(), at, flip)).into_owned();
            prop_assert_eq!(verify(&id, &ts, &text_flipped, &body), Err(VerifyError::Mismatch));
            let mac = STANDARD.decode(header.strip_prefix("v1,").unwrap()).unwrap();
            let forged = format!("v1,{}", STANDARD.encode(flipped(&mac, at, flip)));
            prop_assert_eq!(verify(&id, &ts, &forged, &body), Err(VerifyError::Mismatch));
        }

        #[test]
        fn during_a_rotation_each_secret_verifies_both_signatures(
            old in secret(),
            new in secret(),
            body in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let cronflow = cronflow_signature(&[&new, &old], &body);
            let standard = standard_signature(&[&new, &old], "dlv_x", 1_700_000_000, &body);
            for key in [&new, &old] {
                prop_assert_eq!(verify_cronflow(key.expose(), &cronflow, &body), Ok(()));
                prop_assert_eq!(
                    verify_standard(key.expose(), "dlv_x", "1700000000", &standard, &body, 1_700_000_000),
                    Ok(())
                );
            }
        }
    }
}
