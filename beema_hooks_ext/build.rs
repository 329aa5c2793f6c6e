//! Rebuilds the extension when the SQL files that `extension_sql_file!` embeds change. They lie
//! outside this crate, and with a target directory shared between checkouts (scripts/env.sh)
//! cargo's own tracking of them points at whichever checkout built last; these paths are
//! relative to the crate, so each checkout checks its own files.
fn main() {
    for f in ["schema.sql", "api.sql", "ops.sql", "security.sql"] {
        println!("cargo:rerun-if-changed=../sql/{f}");
    }
}
