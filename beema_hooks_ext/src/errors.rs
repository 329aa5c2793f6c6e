//! Raising `hooks_core` errors as Postgres errors with documented SQLSTATEs.

use hooks_core::{Error, ErrorKind};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::pg_sys::elog::PgLogLevel;
use pgrx::PgSqlErrorCode;

/// The SQLSTATE each kind of error is raised with (documented in the README).
pub fn sqlstate(kind: ErrorKind) -> PgSqlErrorCode {
    match kind {
        ErrorKind::InvalidValue => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, // 22023
        ErrorKind::NullValue => PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,    // 22004
        ErrorKind::TooLarge => PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,     // 54000
    }
}

/// Raises `err` as an ERROR naming its field; never returns.
pub fn raise(context: &str, err: Error) -> ! {
    ErrorReport::new(sqlstate(err.kind), format!("{context}: {err}"), "beema_hooks")
        .set_detail(format!("field: {}", err.field))
        .report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}

/// Unwraps a `hooks_core` result, raising its error.
pub trait OrRaise<T> {
    fn or_raise(self, context: &str) -> T;
}

impl<T> OrRaise<T> for Result<T, Error> {
    fn or_raise(self, context: &str) -> T {
        self.unwrap_or_else(|e| raise(context, e))
    }
}
