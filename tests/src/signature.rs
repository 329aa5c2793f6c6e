//! The receiver's own signature checks, written from the wire-format spec (DESIGN.md) with the
//! hmac/sha2/base64/hex crates directly. Deliberately independent of the project's hooks_core.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

/// `X-Beema-Signature`: `sha256=` + lowercase hex of HMAC-SHA256(key = the secret's UTF-8 bytes,
/// message = the exact body bytes).
pub fn beema(secret: &str, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(hmac_sha256(secret.as_bytes(), &[body]))
    )
}

/// Standard Webhooks key: for `whsec_<base64>` the decoded bytes, otherwise the UTF-8 bytes.
pub fn standard_key(secret: &str) -> Vec<u8> {
    match secret.strip_prefix("whsec_") {
        Some(b64) => STANDARD
            .decode(b64)
            .expect("whsec_ secret must be valid base64"),
        None => secret.as_bytes().to_vec(),
    }
}

/// `webhook-signature` entry: `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")).
pub fn standard(secret: &str, msg_id: &str, timestamp: &str, body: &[u8]) -> String {
    let mac = hmac_sha256(
        &standard_key(secret),
        &[msg_id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
    );
    format!("v1,{}", STANDARD.encode(mac))
}

/// Checks both signatures of a request against `secret`. `headers` looks a header up by name
/// (case-insensitive). Returns what is wrong, if anything.
pub fn verify(
    secret: &str,
    body: &[u8],
    header: impl Fn(&str) -> Option<String>,
) -> Result<(), String> {
    let got = header("x-beema-signature").ok_or("no X-Beema-Signature header")?;
    let want = beema(secret, body);
    if got != want {
        return Err(format!("X-Beema-Signature is {got:?}, expected {want:?}"));
    }
    let id = header("webhook-id").ok_or("no webhook-id header")?;
    let ts = header("webhook-timestamp").ok_or("no webhook-timestamp header")?;
    let sigs = header("webhook-signature").ok_or("no webhook-signature header")?;
    let want = standard(secret, &id, &ts, body);
    // During a rotation several space-separated signatures are sent; one must match.
    if !sigs.split(' ').any(|s| s == want) {
        return Err(format!(
            "webhook-signature {sigs:?} has no entry equal to {want:?}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            beema("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn standard_webhooks_reference_vector() {
        // The Standard Webhooks reference libraries' test vector.
        assert_eq!(
            standard(
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                "1614265330",
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn verify_rejects_wrong_secret_tampered_body_and_missing_headers() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"event":"a/b"}"#;
        let headers = |b: &[u8], drop: &str| {
            let mut h = vec![
                ("x-beema-signature".to_owned(), beema(secret, b)),
                ("webhook-id".to_owned(), "d-1".to_owned()),
                ("webhook-timestamp".to_owned(), "1700000000".to_owned()),
                (
                    "webhook-signature".to_owned(),
                    format!("v1,bm90IGl0 {}", standard(secret, "d-1", "1700000000", b)),
                ),
            ];
            h.retain(|(n, _)| n != drop);
            h
        };
        let lookup = |h: Vec<(String, String)>| {
            move |n: &str| h.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone())
        };
        verify(secret, body, lookup(headers(body, ""))).unwrap();
        assert!(
            verify("whsec_AAAA", body, lookup(headers(body, ""))).is_err(),
            "wrong secret"
        );
        assert!(
            verify(secret, br#"{"event":"a/c"}"#, lookup(headers(body, ""))).is_err(),
            "tampered body"
        );
        for missing in [
            "x-beema-signature",
            "webhook-id",
            "webhook-timestamp",
            "webhook-signature",
        ] {
            assert!(
                verify(secret, body, lookup(headers(body, missing))).is_err(),
                "missing {missing}"
            );
        }
    }
}
