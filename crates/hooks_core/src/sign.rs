//! Request signatures: the seeds' `X-Beema-Signature` and the Standard Webhooks scheme.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::Error;

type HmacSha256 = Hmac<Sha256>;

/// Prefix of secrets whose key is the base64 text after it (Standard Webhooks).
pub const WHSEC_PREFIX: &str = "whsec_";

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// `sha256=<lowercase hex>` of HMAC-SHA256(key = the secret's UTF-8 bytes, message = payload):
/// exactly Node's `crypto.createHmac('sha256', secret).update(payload).digest('hex')`, prefixed.
pub fn beema_signature(payload: &[u8], secret: &str) -> String {
    let mut m = mac(secret.as_bytes());
    m.update(payload);
    format!("sha256={}", hex::encode(m.finalize().into_bytes()))
}

/// Constant-time check of a `sha256=<hex>` signature (the prefix is optional).
pub fn verify_beema(payload: &[u8], secret: &str, signature: &str) -> bool {
    let hex_part = signature.strip_prefix("sha256=").unwrap_or(signature);
    let Ok(expected) = hex::decode(hex_part.trim()) else { return false };
    let mut m = mac(secret.as_bytes());
    m.update(payload);
    m.verify_slice(&expected).is_ok()
}

/// The HMAC key of a Standard Webhooks secret: the base64-decoded bytes after `whsec_`, or the
/// secret's UTF-8 bytes for any other form.
pub fn standard_key(secret: &str) -> Vec<u8> {
    match secret.strip_prefix(WHSEC_PREFIX) {
        Some(b64) => B64.decode(b64).unwrap_or_else(|_| secret.as_bytes().to_vec()),
        None => secret.as_bytes().to_vec(),
    }
}

/// Whether a `whsec_` secret decodes; other secrets are always usable.
pub fn secret_is_decodable(secret: &str) -> bool {
    match secret.strip_prefix(WHSEC_PREFIX) {
        Some(b64) => B64.decode(b64).map(|k| !k.is_empty()).unwrap_or(false),
        None => true,
    }
}

fn standard_mac(msg_id: &str, timestamp: i64, body: &[u8], secret: &str) -> HmacSha256 {
    let mut m = mac(&standard_key(secret));
    m.update(msg_id.as_bytes());
    m.update(b".");
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// One `v1,<base64>` entry per secret, space-separated: the `webhook-signature` header.
pub fn standard_signature<'a>(msg_id: &str, timestamp: i64, body: &[u8], secrets: impl IntoIterator<Item = &'a str>) -> String {
    secrets
        .into_iter()
        .map(|s| format!("v1,{}", B64.encode(standard_mac(msg_id, timestamp, body, s).finalize().into_bytes())))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Constant-time check of a `webhook-signature` header: true when any `v1,` entry is valid.
pub fn verify_standard(msg_id: &str, timestamp: i64, body: &[u8], secret: &str, header: &str) -> bool {
    header.split(' ').filter_map(|e| e.strip_prefix("v1,")).any(|sig| match B64.decode(sig) {
        Ok(bytes) => standard_mac(msg_id, timestamp, body, secret).verify_slice(&bytes).is_ok(),
        Err(_) => false,
    })
}

/// A new secret: `whsec_` followed by the base64 of 32 random bytes.
pub fn format_secret(random: &[u8; 32]) -> String {
    format!("{WHSEC_PREFIX}{}", B64.encode(random))
}

/// Prefix of an ed25519 signing key of Standard Webhooks' asymmetric scheme (`v1a`).
pub const WHSK_PREFIX: &str = "whsk_";
/// Prefix of its public key.
pub const WHPK_PREFIX: &str = "whpk_";

/// The ed25519 key of a `whsk_` signing key: the base64 of its 32-byte seed, or of seed and
/// public key (64 bytes, libsodium's form, whose second half must be that seed's public key).
pub fn signing_key(key: &str) -> Result<ed25519_dalek::SigningKey, Error> {
    let bad = |why: &str| Error::invalid("signing_key", format!("not a whsk_ ed25519 signing key: {why}"));
    let b64 = key.strip_prefix(WHSK_PREFIX).ok_or_else(|| bad("it must start with whsk_"))?;
    let bytes = B64.decode(b64).map_err(|_| bad("its key is not base64"))?;
    let seed: [u8; 32] = bytes.get(..32).and_then(|s| s.try_into().ok()).ok_or_else(|| bad("its key is not 32 or 64 bytes"))?;
    let sk = ed25519_dalek::SigningKey::from_bytes(&seed);
    match bytes.len() {
        32 => Ok(sk),
        64 if bytes[32..] == sk.verifying_key().to_bytes() => Ok(sk),
        64 => Err(bad("its second half is not the public key of its first")),
        _ => Err(bad("its key is not 32 or 64 bytes")),
    }
}

/// A new signing key: `whsk_` followed by the base64 of a 32-byte random seed.
pub fn format_signing_key(seed: &[u8; 32]) -> String {
    format!("{WHSK_PREFIX}{}", B64.encode(seed))
}

/// The public key of a `whsk_` signing key: `whpk_` followed by the base64 of its 32 bytes; the
/// receiver verifies `v1a` signatures with it.
pub fn public_key(key: &str) -> Result<String, Error> {
    Ok(format!("{WHPK_PREFIX}{}", B64.encode(signing_key(key)?.verifying_key().to_bytes())))
}

/// The `v1a,<base64 ed25519 signature of "msg_id.timestamp.body">` entry of the
/// `webhook-signature` header.
pub fn standard_signature_v1a(msg_id: &str, timestamp: i64, body: &[u8], key: &str) -> Result<String, Error> {
    use ed25519_dalek::Signer;
    let sk = signing_key(key)?;
    let mut msg = Vec::with_capacity(msg_id.len() + 24 + body.len());
    msg.extend_from_slice(msg_id.as_bytes());
    msg.push(b'.');
    msg.extend_from_slice(timestamp.to_string().as_bytes());
    msg.push(b'.');
    msg.extend_from_slice(body);
    Ok(format!("v1a,{}", B64.encode(sk.sign(&msg).to_bytes())))
}

/// Check of a `webhook-signature` header: true when any `v1a,` entry verifies (strictly) with
/// the `whpk_` public key.
pub fn verify_standard_v1a(msg_id: &str, timestamp: i64, body: &[u8], public_key: &str, header: &str) -> bool {
    let Some(pk) = public_key
        .strip_prefix(WHPK_PREFIX)
        .and_then(|b| B64.decode(b).ok())
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
        .and_then(|b| ed25519_dalek::VerifyingKey::from_bytes(&b).ok())
    else {
        return false;
    };
    let msg = [msg_id.as_bytes(), b".", timestamp.to_string().as_bytes(), b".", body].concat();
    header.split(' ').filter_map(|e| e.strip_prefix("v1a,")).any(|sig| {
        B64.decode(sig).ok().and_then(|b| ed25519_dalek::Signature::from_slice(&b).ok()).is_some_and(|s| pk.verify_strict(&msg, &s).is_ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex_mac(key: &[u8], data: &[u8]) -> String {
        let mut m = mac(key);
        m.update(data);
        hex::encode(m.finalize().into_bytes())
    }

    /// RFC 4231 test cases 1, 2, 3, 4, 6 and 7 (case 5 is truncated output).
    #[test]
    fn rfc4231_vectors() {
        assert_eq!(hex_mac(&[0x0b; 20], b"Hi There"), "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
        assert_eq!(hex_mac(b"Jefe", b"what do ya want for nothing?"), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        assert_eq!(hex_mac(&[0xaa; 20], &[0xdd; 50]), "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe");
        let key4: Vec<u8> = (1..=25).collect();
        assert_eq!(hex_mac(&key4, &[0xcd; 50]), "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b");
        assert_eq!(
            hex_mac(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First"),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
        assert_eq!(
            hex_mac(&[0xaa; 131], b"This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm."),
            "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"
        );
        assert_eq!(
            beema_signature(b"what do ya want for nothing?", "Jefe"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn beema_verify_round_trip() {
        let sig = beema_signature("Zoë 🚀".as_bytes(), "s3cret");
        assert!(verify_beema("Zoë 🚀".as_bytes(), "s3cret", &sig));
        assert!(!verify_beema("Zoe 🚀".as_bytes(), "s3cret", &sig));
        assert!(!verify_beema("Zoë 🚀".as_bytes(), "other", &sig));
        assert!(!verify_beema(b"x", "s3cret", "sha256=zz"));
    }

    /// The example from the Standard Webhooks reference libraries.
    #[test]
    fn standard_webhooks_reference_vector() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        let sig = standard_signature("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body, [secret]);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(verify_standard("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body, secret, &format!("v1,bogus {sig}")));
        assert!(!verify_standard("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265331, body, secret, &sig));
    }

    #[test]
    fn several_secrets_sign_space_separated() {
        let sig = standard_signature("id", 1, b"{}", ["whsec_AAAA", "plain"]);
        let parts: Vec<&str> = sig.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert!(verify_standard("id", 1, b"{}", "whsec_AAAA", &sig));
        assert!(verify_standard("id", 1, b"{}", "plain", &sig));
        assert!(!verify_standard("id", 1, b"{}", "nope", &sig));
    }

    #[test]
    fn generated_secret_form() {
        let s = format_secret(&[7u8; 32]);
        assert!(s.starts_with("whsec_"));
        assert_eq!(standard_key(&s), vec![7u8; 32]);
        assert!(secret_is_decodable(&s));
        assert!(!secret_is_decodable("whsec_***"));
    }
    #[test]
    fn v1a_signatures_verify_with_the_public_key_and_nothing_else() {
        // RFC 8032 test 1: the seed's public key
        let seed = hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60").unwrap();
        let key = format_signing_key(&seed.clone().try_into().unwrap());
        let pk = public_key(&key).unwrap();
        assert_eq!(
            B64.decode(pk.strip_prefix("whpk_").unwrap()).unwrap(),
            hex::decode("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a").unwrap()
        );
        let header = standard_signature_v1a("msg_1", 1_700_000_000, b"{\"a\":1}", &key).unwrap();
        assert!(header.starts_with("v1a,"));
        assert!(verify_standard_v1a("msg_1", 1_700_000_000, b"{\"a\":1}", &pk, &format!("v1,x {header}")));
        assert!(!verify_standard_v1a("msg_1", 1_700_000_001, b"{\"a\":1}", &pk, &header));
        assert!(!verify_standard_v1a("msg_1", 1_700_000_000, b"{\"a\":2}", &pk, &header));
        let other = public_key(&format_signing_key(&[7; 32])).unwrap();
        assert!(!verify_standard_v1a("msg_1", 1_700_000_000, b"{\"a\":1}", &other, &header));
        // the 64-byte (libsodium) form of the same key signs the same
        let mut long = seed.clone();
        long.extend(B64.decode(pk.strip_prefix("whpk_").unwrap()).unwrap());
        let long_key = format!("whsk_{}", B64.encode(&long));
        assert_eq!(standard_signature_v1a("m", 1, b"x", &long_key).unwrap(), standard_signature_v1a("m", 1, b"x", &key).unwrap());
        for bad in ["whsec_abc", "whsk_!!", "whsk_AAAA", &format!("whsk_{}", B64.encode([1u8; 64]))] {
            assert!(signing_key(bad).is_err(), "{bad}");
        }
    }
}
