//! Alerting as code (issue 15, item 7): every metric the Prometheus alert rules
//! (`deploy/prometheus/beema-hooks.rules.yml`) and the Grafana dashboard
//! (`deploy/grafana/beema-hooks.json`) use is one a running sender exports at /metrics, with
//! the per-webhook series the rules group by. The rules' behaviour is `promtool test rules`
//! (scripts/test.sh). README, "Alerting".

use std::collections::BTreeSet;
use std::time::Duration;

use beema_hooks_e2e::chaos_helpers::LoggedSender;
use beema_hooks_e2e::{wait_until, Receiver, Reply, TestDb, Webhook};

/// Every `beema_hooks_sender_*` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    const PREFIX: &str = "beema_hooks_sender_";
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find(PREFIX) {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

fn deploy_file(path: &str) -> String {
    let root = beema_hooks_e2e::repo_root();
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[tokio::test]
async fn every_metric_the_rules_and_the_dashboard_use_is_exported() {
    let rules = deploy_file("deploy/prometheus/beema-hooks.rules.yml");
    let dashboard = deploy_file("deploy/grafana/beema-hooks.json");
    let parsed: serde_json::Value =
        serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    assert!(
        parsed["panels"].as_array().is_some_and(|p| !p.is_empty()),
        "the dashboard has panels"
    );
    let used: BTreeSet<String> = metric_names(&rules)
        .into_iter()
        .chain(metric_names(&dashboard))
        .collect();
    assert!(used.len() >= 10, "names found: {used:?}");

    // a sender with a healthy webhook, and one whose receiver fails (its deliveries wait for a
    // retry a minute away, so hooks.sender_metrics reports it)
    let db = TestDb::new().await;
    let rx = Receiver::start().await;
    rx.always("/ok", Reply::ok());
    rx.always("/down", Reply::status(500));
    db.register(&Webhook::new("ok", "acme", "ok/*", &rx.url("/ok")))
        .await;
    db.register(&Webhook::new("down", "acme", "down/*", &rx.url("/down")).retry(5, 60_000))
        .await;
    db.publish_series("acme", "ok/x", 2).await;
    db.publish_series("acme", "down/x", 2).await;
    let sender = LoggedSender::start(db.url(), "info", &["--webhook-metrics-interval-secs", "1"]);
    wait_until("both webhooks tried", Duration::from_secs(20), || async {
        rx.requests_to("/ok").len() >= 2 && rx.requests_to("/down").len() >= 2
    })
    .await;
    // every name the rules and the dashboard use, once the sender has read the per-webhook
    // figures (a scrape may come between the gauges of one webhook being set)
    let exported = |text: &str| -> BTreeSet<String> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .map(str::to_owned)
            .collect()
    };
    let text = std::sync::Mutex::new(String::new());
    wait_until("every metric used", Duration::from_secs(20), || async {
        if let Ok((200, body)) = sender.admin_get("/metrics").await {
            *text.lock().unwrap() = body;
        }
        let t = text.lock().unwrap();
        t.contains("outcome=\"failure\"") && used.is_subset(&exported(&t))
    })
    .await;
    let text = text.into_inner().unwrap();
    let names = exported(&text);
    let missing: Vec<&String> = used.difference(&names).collect();
    assert!(
        missing.is_empty(),
        "used by the rules or the dashboard, not exported: {missing:?}\n{text}"
    );
    assert!(
        text.contains("beema_hooks_sender_webhook_due{tenant_id=\"acme\",webhook_id=")
            && text.contains("webhook_name=\"down\""),
        "the per-webhook gauges carry the labels the rules group by:\n{text}"
    );
    drop(sender);
    db.cleanup().await;
}
