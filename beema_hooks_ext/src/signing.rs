//! Signing and verification, callable from SQL.

use hooks_core::sign;
use pgrx::prelude::*;

use crate::errors::OrRaise;

/// `sha256=<lowercase hex HMAC-SHA256>` of `payload`'s UTF-8 bytes, keyed by `secret`'s UTF-8
/// bytes: the `X-Beema-Signature` header, identical to Node's
/// `crypto.createHmac('sha256', secret).update(payload).digest('hex')` with the prefix.
/// NULL in, NULL out.
#[pg_extern(immutable, strict, parallel_safe)]
fn sign(payload: &str, secret: &str) -> String {
    sign::beema_signature(payload.as_bytes(), secret)
}

/// Constant-time check of an `X-Beema-Signature` value (`sha256=<hex>`). NULL in, NULL out.
#[pg_extern(immutable, strict, parallel_safe)]
fn verify(payload: &str, secret: &str, signature: &str) -> bool {
    sign::verify_beema(payload.as_bytes(), secret, signature)
}

/// The Standard Webhooks `webhook-signature` header: `v1,<base64 HMAC-SHA256 of
/// "msg_id.timestamp.body">` for each secret, space-separated. A `whsec_<base64>` secret's key is
/// its decoded bytes; any other secret's key is its UTF-8 bytes. NULL secrets in the array are
/// skipped; other NULL arguments give NULL.
#[pg_extern(immutable, strict, parallel_safe)]
fn sign_standard(msg_id: &str, timestamp: i64, body: &str, secrets: Array<&str>) -> String {
    sign::standard_signature(msg_id, timestamp, body.as_bytes(), secrets.iter().flatten())
}

/// Constant-time check of a Standard Webhooks `webhook-signature` header (which may hold several
/// space-separated `v1,` signatures) against one secret. NULL in, NULL out.
#[pg_extern(immutable, strict, parallel_safe)]
fn verify_standard(msg_id: &str, timestamp: i64, body: &str, secret: &str, signature: &str) -> bool {
    sign::verify_standard(msg_id, timestamp, body.as_bytes(), secret, signature)
}

/// A new secret: `whsec_` followed by the base64 of 32 random bytes from Postgres' strong random
/// source.
#[pg_extern(volatile, parallel_safe)]
fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    crate::publish::strong_random(&mut bytes);
    sign::format_secret(&bytes)
}

/// A new ed25519 signing key for Standard Webhooks `v1a` signatures: `whsk_` followed by the
/// base64 of a 32-byte seed from Postgres' strong random source.
#[pg_extern(volatile, parallel_safe)]
fn generate_signing_key() -> String {
    let mut seed = [0u8; 32];
    crate::publish::strong_random(&mut seed);
    sign::format_signing_key(&seed)
}

/// The `whpk_` public key of a `whsk_` signing key, for the receiver to verify `v1a`
/// signatures with. 22023 when `signing_key` is not a whsk_ key. NULL in, NULL out.
#[pg_extern(immutable, strict, parallel_safe)]
fn public_key(signing_key: &str) -> String {
    sign::public_key(signing_key).or_raise("hooks.public_key")
}

/// The `v1a,<base64 ed25519 signature of "msg_id.timestamp.body">` entry of the
/// `webhook-signature` header, signed with a `whsk_` key (22023 otherwise). NULL in, NULL out.
#[pg_extern(immutable, strict, parallel_safe)]
fn sign_standard_v1a(msg_id: &str, timestamp: i64, body: &str, signing_key: &str) -> String {
    sign::standard_signature_v1a(msg_id, timestamp, body.as_bytes(), signing_key).or_raise("hooks.sign_standard_v1a")
}

/// Whether a `webhook-signature` header holds a `v1a` signature that the `whpk_` public key
/// verifies. NULL in, NULL out.
#[pg_extern(immutable, strict, parallel_safe)]
fn verify_standard_v1a(msg_id: &str, timestamp: i64, body: &str, public_key: &str, signature: &str) -> bool {
    sign::verify_standard_v1a(msg_id, timestamp, body.as_bytes(), public_key, signature)
}
