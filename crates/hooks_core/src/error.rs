//! The one error type of this crate. Each error knows which kind of SQLSTATE it maps to, so the
//! extension can raise it with a specific code instead of a generic one.

use std::fmt;

/// What went wrong, coarsely: the extension maps each kind to one documented SQLSTATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A value has the wrong type, shape or content (SQLSTATE 22023 invalid_parameter_value).
    InvalidValue,
    /// A required value is NULL or missing entirely (SQLSTATE 22004 null_value_not_allowed).
    NullValue,
    /// A value is larger or deeper than a configured limit (SQLSTATE 54000 program_limit_exceeded).
    TooLarge,
}

/// An error naming the offending field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    /// The field at fault, as the user wrote it (`event`, `data.tenantId`, `url`, ...).
    pub field: String,
    pub message: String,
}

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { kind: ErrorKind::InvalidValue, field: field.into(), message: message.into() }
    }

    pub fn missing(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { kind: ErrorKind::NullValue, field: field.into(), message: message.into() }
    }

    pub fn too_large(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { kind: ErrorKind::TooLarge, field: field.into(), message: message.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ErrorKind::InvalidValue => write!(f, "invalid {}: {}", self.field, self.message),
            ErrorKind::NullValue => write!(f, "missing {}: {}", self.field, self.message),
            ErrorKind::TooLarge => write!(f, "{} too large: {}", self.field, self.message),
        }
    }
}

impl std::error::Error for Error {}

/// Describes a JSON value's type the way users talk about it in error messages.
pub(crate) fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}
