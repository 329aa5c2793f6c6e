//! Every setting of the extension. SQL reads the breaker settings with `hooks._setting_int`, which
//! falls back to the same defaults when the library is not loaded yet in a session.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};

/// `hooks.max_payload_bytes`: a session's own limit on the events `hooks.publish` accepts, in
/// bytes of JSON (1 KiB to 64 MiB; default 64 MiB, i.e. none of its own). It can only lower the
/// limit an admin sets in `hooks.settings` (default 1 MiB), which `hooks.publish` applies in SQL
/// (`hooks._check_payload`). Larger events raise SQLSTATE 54000.
pub static MAX_PAYLOAD_BYTES: GucSetting<i32> = GucSetting::<i32>::new(64 << 20);
/// `hooks.breaker_failure_threshold`: consecutive failures that pause a webhook (0 = never).
pub static BREAKER_FAILURE_THRESHOLD: GucSetting<i32> = GucSetting::<i32>::new(5);
/// `hooks.breaker_cooldown_ms`: the first pause; it doubles with each further failure.
pub static BREAKER_COOLDOWN_MS: GucSetting<i32> = GucSetting::<i32>::new(30_000);
/// `hooks.breaker_max_cooldown_ms`: the longest pause.
pub static BREAKER_MAX_COOLDOWN_MS: GucSetting<i32> = GucSetting::<i32>::new(3_600_000);
/// `hooks.max_in_flight_per_webhook`: requests one webhook may have in flight across all
/// senders (default 32; 0 = no limit), so that a slow endpoint cannot take every sender slot.
pub static MAX_IN_FLIGHT_PER_WEBHOOK: GucSetting<i32> = GucSetting::<i32>::new(32);
/// `hooks.disable_after_failing_hours`: a webhook failing without a success for this long is
/// disabled, with the reason recorded (0 = never).
pub static DISABLE_AFTER_FAILING_HOURS: GucSetting<i32> = GucSetting::<i32>::new(72);

pub fn init() {
    GucRegistry::define_int_guc(
        c"hooks.max_payload_bytes",
        c"This session's own limit on the events hooks.publish accepts, in bytes of JSON.",
        c"It can only lower the limit in hooks.settings (default 1 MiB); larger events raise SQLSTATE 54000 (program_limit_exceeded) and write nothing.",
        &MAX_PAYLOAD_BYTES,
        1024,
        64 << 20,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"hooks.breaker_failure_threshold",
        c"Consecutive failed attempts that pause a webhook (0 disables the circuit breaker).",
        c"While paused, a webhook's deliveries wait instead of spending their attempts.",
        &BREAKER_FAILURE_THRESHOLD,
        0,
        1000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"hooks.breaker_cooldown_ms",
        c"First pause of a webhook whose circuit breaker opens, in milliseconds.",
        c"Each further failure doubles the pause, up to hooks.breaker_max_cooldown_ms.",
        &BREAKER_COOLDOWN_MS,
        100,
        86_400_000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"hooks.breaker_max_cooldown_ms",
        c"Longest pause of a webhook whose circuit breaker is open, in milliseconds.",
        c"",
        &BREAKER_MAX_COOLDOWN_MS,
        100,
        604_800_000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"hooks.max_in_flight_per_webhook",
        c"Requests one webhook may have in flight across all senders (0 = no limit).",
        c"Claims pass over that webhook's further due deliveries until a request finishes, so a slow endpoint cannot take every sender slot.",
        &MAX_IN_FLIGHT_PER_WEBHOOK,
        0,
        100_000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"hooks.disable_after_failing_hours",
        c"Hours of failures without a success after which a webhook is disabled (0 = never).",
        c"The reason is recorded in hooks.webhooks.disabled_reason.",
        &DISABLE_AFTER_FAILING_HOURS,
        0,
        8760,
        GucContext::Userset,
        GucFlags::default(),
    );
}
