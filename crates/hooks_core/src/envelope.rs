//! Payload envelopes: the shape of the body a webhook's receiver gets.
//!
//! An event is stored once, as the `beema` body `hooks.publish` writes (`{"id", "event", "data",
//! "user", "timestamp", ...}`, see [`crate::event`]). A webhook may ask for another envelope; the
//! delivery records which at publish time, and `hooks.claim` renders the body from the stored
//! one with [`render`]: the same stored body and envelope always give the same bytes, so every
//! retry sends (and signs) exactly what the first attempt did.

use serde_json::{Map, Value};

use crate::Error;

/// The envelopes a webhook may choose (`hooks.webhooks.envelope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Envelope {
    /// The event as published (the default; the body is the stored text, untouched).
    #[default]
    Beema,
    /// Standard Webhooks' recommended payload: `{"type", "timestamp", "data"}`.
    Standard,
    /// `{"id", "timestamp", "event_type", "data"}`.
    Flat,
    /// Supabase database webhooks: `{"type", "table", "schema", "record", "old_record"}`, taken
    /// from the event's `data` (as table-change events carry them).
    Supabase,
}

impl Envelope {
    /// The names `hooks.webhooks.envelope` accepts, in this order.
    pub const NAMES: [&'static str; 4] = ["beema", "standard", "flat", "supabase"];

    /// The envelope a name stands for.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "beema" => Some(Self::Beema),
            "standard" => Some(Self::Standard),
            "flat" => Some(Self::Flat),
            "supabase" => Some(Self::Supabase),
            _ => None,
        }
    }

    /// Parses an envelope name, or explains which names there are (22023).
    pub fn parse(field: &str, name: &str) -> Result<Self, Error> {
        Self::from_name(name)
            .ok_or_else(|| Error::invalid(field, format!("{field} must be one of {}, got {name:?}", Self::NAMES.join(", "))))
    }
}

/// The body a receiver of `envelope` gets for the stored event body `stored` (the `beema` body).
/// Keys come in the envelope's documented order; values (numbers included) keep their exact
/// text, as stored. A field the event lacks is `null` (the Supabase fields outside table-change
/// events, say). Errors only when `stored` is not a JSON object, which `hooks.publish` never
/// writes.
pub fn render(envelope: Envelope, stored: &str) -> Result<String, Error> {
    if envelope == Envelope::Beema {
        return Ok(stored.to_owned());
    }
    let Value::Object(mut event) = serde_json::from_str::<Value>(stored)
        .map_err(|e| Error::invalid("body", format!("the stored event body is not JSON: {e}")))?
    else {
        return Err(Error::invalid("body", "the stored event body is not a JSON object"));
    };
    let mut take = |key: &str| event.remove(key).unwrap_or(Value::Null);
    let mut out = Map::with_capacity(5);
    match envelope {
        Envelope::Beema => unreachable!("returned above"),
        Envelope::Standard => {
            out.insert("type".into(), take("event"));
            out.insert("timestamp".into(), take("timestamp"));
            out.insert("data".into(), take("data"));
        }
        Envelope::Flat => {
            out.insert("id".into(), take("id"));
            out.insert("timestamp".into(), take("timestamp"));
            out.insert("event_type".into(), take("event"));
            out.insert("data".into(), take("data"));
        }
        Envelope::Supabase => {
            let mut data = match take("data") {
                Value::Object(m) => m,
                _ => Map::new(),
            };
            for key in ["type", "table", "schema", "record", "old_record"] {
                out.insert(key.into(), data.remove(key).unwrap_or(Value::Null));
            }
        }
    }
    serde_json::to_string(&Value::Object(out)).map_err(|e| Error::invalid("body", format!("the body cannot be serialized: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STORED: &str = r#"{"id":"evt-1","event":"policy/bound","data":{"tenantId":"acme","premium":1234.5000,"name":"Zoë"},"user":{"id":"u1"},"timestamp":"2026-12-01T10:00:00.000Z","source":"crm"}"#;

    #[test]
    fn beema_is_the_stored_text_untouched() {
        assert_eq!(render(Envelope::Beema, STORED).unwrap(), STORED);
        assert_eq!(render(Envelope::Beema, "not even json").unwrap(), "not even json");
    }

    #[test]
    fn standard_and_flat_shapes_keep_exact_values() {
        assert_eq!(
            render(Envelope::Standard, STORED).unwrap(),
            r#"{"type":"policy/bound","timestamp":"2026-12-01T10:00:00.000Z","data":{"tenantId":"acme","premium":1234.5000,"name":"Zoë"}}"#
        );
        assert_eq!(
            render(Envelope::Flat, STORED).unwrap(),
            r#"{"id":"evt-1","timestamp":"2026-12-01T10:00:00.000Z","event_type":"policy/bound","data":{"tenantId":"acme","premium":1234.5000,"name":"Zoë"}}"#
        );
    }

    #[test]
    fn supabase_takes_its_fields_from_data_and_nulls_the_missing() {
        let stored = r#"{"id":"e","event":"claims/update","data":{"tenantId":"acme","type":"UPDATE","table":"claims","schema":"public","record":{"id":7,"status":"open"},"old_record":{"id":7,"status":"new"}},"user":{},"timestamp":1}"#;
        assert_eq!(
            render(Envelope::Supabase, stored).unwrap(),
            r#"{"type":"UPDATE","table":"claims","schema":"public","record":{"id":7,"status":"open"},"old_record":{"id":7,"status":"new"}}"#
        );
        assert_eq!(
            render(Envelope::Supabase, STORED).unwrap(),
            r#"{"type":null,"table":null,"schema":null,"record":null,"old_record":null}"#
        );
    }

    #[test]
    fn rendering_is_deterministic() {
        for env in [Envelope::Standard, Envelope::Flat, Envelope::Supabase] {
            assert_eq!(render(env, STORED).unwrap(), render(env, STORED).unwrap());
        }
    }

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for name in Envelope::NAMES {
            assert_eq!(format!("{:?}", Envelope::from_name(name).unwrap()).to_lowercase(), name);
        }
        let err = Envelope::parse("envelope", "cloudevents").unwrap_err();
        assert!(err.to_string().contains("beema, standard, flat, supabase"), "{err}");
        assert!(render(Envelope::Flat, "[1,2]").is_err());
    }
}
