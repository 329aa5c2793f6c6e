//! Validation of a published event and the exact body that will be sent and signed.

use serde_json::{Map, Value};

use crate::error::json_type;
use crate::pattern::validate_event_type;
use crate::Error;

/// Longest tenant id and event id accepted, in bytes.
pub const MAX_ID_LEN: usize = 255;

/// An event that passed validation, ready to be written to the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedEvent {
    pub tenant_id: String,
    pub event_type: String,
    /// The event's `id`: the caller's when given (publishing is then idempotent per tenant),
    /// otherwise a fresh one supplied by the caller of [`prepare`].
    pub event_key: String,
    /// Whether `event_key` came from the event itself.
    pub key_given: bool,
    /// The request body, byte for byte what receivers get and what is signed:
    /// `{"id","event","data","user","timestamp", ...other top-level fields as published}`.
    pub body: String,
}

/// Limits applied while preparing an event.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest accepted event, in bytes of JSON text.
    pub max_bytes: usize,
}

/// Validates `event_json` (the text of a JSON object) and builds the delivery body.
///
/// `fresh_id` is used as the event id when the event has none; `now` (an RFC 3339 timestamp) is
/// used when it has no `timestamp`.
pub fn prepare(event_json: &str, limits: Limits, fresh_id: &str, now: &str) -> Result<PreparedEvent, Error> {
    if event_json.len() > limits.max_bytes {
        return Err(Error::too_large(
            "event",
            format!("event is {} bytes of JSON; the limit is {} (setting hooks.max_payload_bytes)", event_json.len(), limits.max_bytes),
        ));
    }
    let value: Value = serde_json::from_str(event_json).map_err(|e| {
        if e.to_string().contains("recursion limit") {
            Error::too_large("event", "event nests deeper than 127 levels")
        } else {
            Error::invalid("event", format!("event is not valid JSON: {e}"))
        }
    })?;
    // (fields are taken out with shift_remove, never remove: serde_json's remove is a swap_remove
    // that moves the last field into the gap, and the other fields must keep their order)
    let Value::Object(mut obj) = value else {
        return Err(Error::invalid("event", format!("event must be a JSON object, got {}", json_type(&value))));
    };

    let (name_field, name) = match (obj.shift_remove("event"), obj.shift_remove("name")) {
        (Some(v), _) => ("event", v),
        (None, Some(v)) => ("name", v),
        (None, None) => return Err(Error::missing("event", "event has no \"event\" (or \"name\") field naming its type")),
    };
    let Value::String(event_type) = name else {
        return Err(Error::invalid(name_field, format!("{name_field} must be a string, got {}", json_type(&name))));
    };
    validate_event_type(name_field, &event_type)?;

    let data = match obj.shift_remove("data") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(v @ Value::Object(_)) => v,
        Some(v) => return Err(Error::invalid("data", format!("data must be an object, got {}", json_type(&v)))),
    };
    let user = match obj.shift_remove("user") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(v @ Value::Object(_)) => v,
        Some(v) => return Err(Error::invalid("user", format!("user must be an object, got {}", json_type(&v)))),
    };

    let tenant_id = match (data.get("tenantId"), obj.get("tenantId")) {
        (Some(v), _) => id_string("data.tenantId", v)?,
        (None, Some(v)) => id_string("tenantId", v)?,
        (None, None) => return Err(Error::missing("data.tenantId", "event names no tenant: set data.tenantId (or a top-level tenantId)")),
    };

    let (event_key, key_given) = match obj.shift_remove("id") {
        None | Some(Value::Null) => (fresh_id.to_owned(), false),
        Some(v) => (id_string("id", &v)?, true),
    };

    let timestamp =
        match obj.shift_remove("timestamp") {
            None | Some(Value::Null) => Value::String(now.to_owned()),
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 64 => Value::String(s),
            Some(v @ Value::Number(_)) if v.as_u64().is_some() => v,
            Some(v) => return Err(Error::invalid(
                "timestamp",
                format!(
                    "timestamp must be a non-empty string of at most 64 characters or a non-negative integer (epoch milliseconds), got {}",
                    json_type(&v)
                ),
            )),
        };

    let mut body = Map::with_capacity(5 + obj.len());
    body.insert("id".into(), Value::String(event_key.clone()));
    body.insert("event".into(), Value::String(event_type.clone()));
    body.insert("data".into(), data);
    body.insert("user".into(), user);
    body.insert("timestamp".into(), timestamp);
    for (k, v) in obj {
        body.insert(k, v);
    }
    let body =
        serde_json::to_string(&Value::Object(body)).map_err(|e| Error::invalid("event", format!("event cannot be serialized: {e}")))?;
    if body.len() > limits.max_bytes {
        return Err(Error::too_large(
            "event",
            format!("event body is {} bytes; the limit is {} (setting hooks.max_payload_bytes)", body.len(), limits.max_bytes),
        ));
    }
    Ok(PreparedEvent { tenant_id, event_type, event_key, key_given, body })
}

/// A tenant id or event id: a non-empty string without control characters.
fn id_string(field: &str, v: &Value) -> Result<String, Error> {
    let Value::String(s) = v else {
        return Err(Error::invalid(field, format!("{field} must be a string, got {}", json_type(v))));
    };
    if s.is_empty() {
        return Err(Error::invalid(field, format!("{field} must not be empty")));
    }
    if s.len() > MAX_ID_LEN {
        return Err(Error::invalid(field, format!("{field} is {} bytes long; the limit is {MAX_ID_LEN}", s.len())));
    }
    if s.chars().any(char::is_control) {
        return Err(Error::invalid(field, format!("{field} contains control characters")));
    }
    Ok(s.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use proptest::prelude::*;

    const LIMITS: Limits = Limits { max_bytes: 1 << 20 };

    fn prep(s: &str) -> Result<PreparedEvent, Error> {
        prepare(s, LIMITS, "fresh-1", "2026-11-23T00:00:00.000Z")
    }

    #[test]
    fn builds_body_in_a_fixed_order() {
        let p = prep(
            r#"{"timestamp":"t1","data":{"tenantId":"acme","policyId":7},"event":"policy/bound","id":"e-1","user":{"id":"u"},"v":"1"}"#,
        )
        .unwrap();
        assert_eq!(p.tenant_id, "acme");
        assert_eq!(p.event_type, "policy/bound");
        assert_eq!(p.event_key, "e-1");
        assert!(p.key_given);
        assert_eq!(
            p.body,
            r#"{"id":"e-1","event":"policy/bound","data":{"tenantId":"acme","policyId":7},"user":{"id":"u"},"timestamp":"t1","v":"1"}"#
        );
    }

    #[test]
    fn other_fields_keep_their_order() {
        let p = prep(r#"{"id":"k","a":1,"data":{"tenantId":"t"},"b":2,"event":"x/y","c":3}"#).unwrap();
        assert_eq!(
            p.body,
            r#"{"id":"k","event":"x/y","data":{"tenantId":"t"},"user":{},"timestamp":"2026-11-23T00:00:00.000Z","a":1,"b":2,"c":3}"#
        );
    }

    #[test]
    fn inngest_name_and_top_level_tenant() {
        let p = prep(r#"{"name":"claim/opened","tenantId":"t9"}"#).unwrap();
        assert_eq!(p.event_type, "claim/opened");
        assert_eq!(p.tenant_id, "t9");
        assert_eq!(p.event_key, "fresh-1");
        assert!(!p.key_given);
        assert_eq!(
            p.body,
            r#"{"id":"fresh-1","event":"claim/opened","data":{},"user":{},"timestamp":"2026-11-23T00:00:00.000Z","tenantId":"t9"}"#
        );
    }

    #[test]
    fn unicode_survives() {
        let p = prep(r#"{"event":"policy/bound","data":{"tenantId":"ünï","name":"Zoë 🚀 \u0000x"}}"#).unwrap();
        assert_eq!(p.tenant_id, "ünï");
        assert!(p.body.contains("Zoë 🚀"));
    }

    #[test]
    fn rejects_bad_shapes_naming_the_field() {
        let cases: &[(&str, &str, ErrorKind)] = &[
            ("[]", "event", ErrorKind::InvalidValue),
            ("3", "event", ErrorKind::InvalidValue),
            ("\"x\"", "event", ErrorKind::InvalidValue),
            ("null", "event", ErrorKind::InvalidValue),
            ("{}", "event", ErrorKind::NullValue),
            (r#"{"event":"","data":{"tenantId":"a"}}"#, "event", ErrorKind::InvalidValue),
            (r#"{"event":5,"data":{"tenantId":"a"}}"#, "event", ErrorKind::InvalidValue),
            (r#"{"name":["x"],"data":{"tenantId":"a"}}"#, "name", ErrorKind::InvalidValue),
            (r#"{"event":"a/b"}"#, "data.tenantId", ErrorKind::NullValue),
            (r#"{"event":"a/b","data":{"tenantId":5}}"#, "data.tenantId", ErrorKind::InvalidValue),
            (r#"{"event":"a/b","data":{"tenantId":""}}"#, "data.tenantId", ErrorKind::InvalidValue),
            (r#"{"event":"a/b","tenantId":{}}"#, "tenantId", ErrorKind::InvalidValue),
            (r#"{"event":"a/b","data":[1]}"#, "data", ErrorKind::InvalidValue),
            (r#"{"event":"a/b","data":{"tenantId":"a"},"user":"bob"}"#, "user", ErrorKind::InvalidValue),
            (r#"{"event":"a/b","data":{"tenantId":"a"},"id":7}"#, "id", ErrorKind::InvalidValue),
            (r#"{"event":"a/b","data":{"tenantId":"a"},"id":""}"#, "id", ErrorKind::InvalidValue),
            (r#"{"event":"a/b","data":{"tenantId":"a"},"timestamp":true}"#, "timestamp", ErrorKind::InvalidValue),
            (r#"{"event":"a/b","data":{"tenantId":"a"},"timestamp":-1}"#, "timestamp", ErrorKind::InvalidValue),
            (r#"{"event":"a/*","data":{"tenantId":"a"}}"#, "event", ErrorKind::InvalidValue),
        ];
        for (input, field, kind) in cases {
            let err = prep(input).unwrap_err();
            assert_eq!((&err.field[..], err.kind), (*field, *kind), "{input}: {err}");
        }
    }

    #[test]
    fn limits_size_and_depth() {
        let big = format!(r#"{{"event":"a/b","data":{{"tenantId":"a","x":"{}"}}}}"#, "y".repeat(2 << 20));
        assert_eq!(prep(&big).unwrap_err().kind, ErrorKind::TooLarge);
        let deep = format!(r#"{{"event":"a/b","data":{{"tenantId":"a","x":{}{}}}}}"#, "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(prep(&deep).unwrap_err().kind, ErrorKind::TooLarge);
    }

    proptest! {
        #[test]
        fn never_panics_on_any_text(s in "\\PC{0,200}") {
            let _ = prep(&s);
        }

        #[test]
        fn valid_events_round_trip(tenant in "[a-z]{1,10}", key in "[a-z0-9-]{1,20}", n in any::<i64>()) {
            let ev = serde_json::json!({"event": "policy/bound", "id": key, "data": {"tenantId": tenant, "n": n}});
            let p = prep(&ev.to_string()).unwrap();
            let body: Value = serde_json::from_str(&p.body).unwrap();
            prop_assert_eq!(&body["data"]["n"], &Value::from(n));
            prop_assert_eq!(body["id"].as_str(), Some(key.as_str()));
            prop_assert_eq!(p.tenant_id, tenant);
        }
    }
}
