//! `beema_hooks`: transactional webhooks from inside PostgreSQL.
//!
//! The SQL surface lives in `sql/`: `schema.sql` (tables, run first) and `api.sql` (publish,
//! match, claim, complete, release, views, run last). The Rust functions here are the parts SQL
//! is bad at: validating events and webhook settings with precise errors, matching event-type
//! patterns, signing, and the retry schedule. The rules themselves live in the `hooks_core`
//! crate, shared with the sender and tested there in plain Rust.

use pgrx::prelude::*;

mod errors;
mod gucs;
mod publish;
mod signing;
mod webhooks;

::pgrx::pg_module_magic!(name, version);

pgrx::extension_sql_file!("../../sql/schema.sql", name = "schema", bootstrap);
pgrx::extension_sql_file!("../../sql/api.sql", name = "api", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    gucs::init();
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
