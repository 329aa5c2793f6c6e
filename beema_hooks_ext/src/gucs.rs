//! Every setting of the extension.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};

/// `hooks.max_payload_bytes`: the largest event `hooks.publish` accepts, in bytes of JSON
/// (default 1 MiB, 1 KiB to 64 MiB). Larger events raise SQLSTATE 54000.
pub static MAX_PAYLOAD_BYTES: GucSetting<i32> = GucSetting::<i32>::new(1 << 20);

pub fn init() {
    GucRegistry::define_int_guc(
        c"hooks.max_payload_bytes",
        c"Largest event hooks.publish accepts, in bytes of JSON.",
        c"Events larger than this raise SQLSTATE 54000 (program_limit_exceeded) and write nothing.",
        &MAX_PAYLOAD_BYTES,
        1024,
        64 << 20,
        GucContext::Userset,
        GucFlags::default(),
    );
}
