#!/usr/bin/env bash
# The main job: sets everything up, then shows the product end to end on this machine: a local
# Postgres with the extension, the sender, and a receiver that verifies signatures; events
# published from inside transactions (one rolled back), delivered, and the delivery log printed.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$BEEMA_ROOT"

"$BEEMA_ROOT/scripts/setup.sh"

started_pg=0
if ! "$BEEMA_ROOT/scripts/pg.sh" status; then started_pg=1; fi
"$BEEMA_ROOT/scripts/pg.sh" start >/dev/null

RECEIVER_PORT="${DEMO_RECEIVER_PORT:-28816}"
ADMIN_ADDR="${DEMO_ADMIN_ADDR:-127.0.0.1:28817}"
DB_URL="postgres://postgres@127.0.0.1:$BEEMA_PGPORT/beema_demo"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "$started_pg" = 1 ]; then "$BEEMA_ROOT/scripts/pg.sh" stop; fi
}
trap cleanup EXIT

say "fresh database beema_demo with the extension"
psql -q "$BEEMA_ADMIN_URL" -c "DROP DATABASE IF EXISTS beema_demo WITH (FORCE)" -c "CREATE DATABASE beema_demo"
psql -q "$DB_URL" -c "CREATE EXTENSION beema_hooks"

secret() { psql -qtA "$DB_URL" -c "SELECT hooks.generate_secret()"; }
S1=$(secret) S2=$(secret) S3=$(secret) S4="a-plain-shared-secret"
say "registering webhooks for tenants acme and globex"
psql -q "$DB_URL" <<SQL
INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url, secret, retry_config) VALUES
  ('acme',   'policies',   'policy/bound',      'http://127.0.0.1:$RECEIVER_PORT/acme/policies', '$S1', '{"maxAttempts":5,"backoffMs":500}'),
  ('acme',   'claims',     'claim/*',           'http://127.0.0.1:$RECEIVER_PORT/acme/claims',   '$S2', '{"maxAttempts":5,"backoffMs":500}'),
  ('globex', 'everything', '*',                 'http://127.0.0.1:$RECEIVER_PORT/globex/all',    '$S3', '{"maxAttempts":5,"backoffMs":500}'),
  ('globex', 'agreements', 'agreement/updated', 'http://127.0.0.1:$RECEIVER_PORT/globex/agreements', '$S4', '{"maxAttempts":5,"backoffMs":500}');
SQL

say "starting the demo receiver on 127.0.0.1:$RECEIVER_PORT"
python3 "$BEEMA_ROOT/scripts/demo_receiver.py" --port "$RECEIVER_PORT" \
  --secret "/acme/policies=$S1" --secret "/acme/claims=$S2" --secret "/globex/all=$S3" --secret "/globex/agreements=$S4" &
pids+=($!)

say "starting the sender (loopback targets allowed for the demo)"
"$HOOKS_SENDER_BIN" --database-url "$DB_URL" --allow-private-targets --admin-addr "$ADMIN_ADDR" \
  --sender-id demo-sender >"$BEEMA_RUN_DIR/demo-sender.log" 2>&1 &
pids+=($!)
sleep 1

say "publishing events from inside application transactions"
psql -q "$DB_URL" <<'SQL'
\o /dev/null
CREATE TABLE policies (policy_id text PRIMARY KEY, tenant_id text, premium numeric);
CREATE TABLE claims (claim_id text PRIMARY KEY, policy_id text, status text);

BEGIN;  -- acme binds a policy
INSERT INTO policies VALUES ('P-100', 'acme', 1250.00);
SELECT hooks.publish('{"event":"policy/bound","id":"acme-P-100-bound","data":{"tenantId":"acme","policyId":"P-100","premium":1250.00},"user":{"id":"u-1","email":"uw@acme.test"}}');
COMMIT;

BEGIN;  -- acme opens a claim and settles it
INSERT INTO claims VALUES ('C-7', 'P-100', 'open');
SELECT hooks.publish('{"event":"claim/opened","data":{"tenantId":"acme","claimId":"C-7","policyId":"P-100"}}');
UPDATE claims SET status = 'settled' WHERE claim_id = 'C-7';
SELECT hooks.publish('{"event":"claim/settled","data":{"tenantId":"acme","claimId":"C-7","amount":800}}');
COMMIT;

BEGIN;  -- globex: this transaction fails and rolls back, so nothing is sent
INSERT INTO policies VALUES ('P-200', 'globex', 99.00);
SELECT hooks.publish('{"event":"policy/bound","data":{"tenantId":"globex","policyId":"P-200"}}');
ROLLBACK;

BEGIN;  -- globex updates an agreement (Inngest's "name" works too)
SELECT hooks.publish('{"name":"agreement/updated","data":{"tenantId":"globex","agreementId":"A-3","version":2}}');
COMMIT;
SQL
psql -qtA "$DB_URL" -c "SELECT format('  published %s %s for %s', event_id, event_type, tenant_id) FROM hooks.events ORDER BY event_id"

say "waiting for delivery"
for _ in $(seq 1 60); do
  left=$(psql -qtA "$DB_URL" -c "SELECT count(*) FROM hooks.deliveries WHERE status IN ('pending','in_flight','retrying')")
  [ "$left" = 0 ] && break
  sleep 0.5
done

say "the delivery log (hooks.delivery_log)"
psql "$DB_URL" -c "SELECT tenant_id, webhook_name, event_type, status, attempts, status_code, delivered_at - created_at AS latency FROM hooks.delivery_log ORDER BY delivery_id"
psql "$DB_URL" -c "SELECT count(*) AS events_rolled_back_and_sent FROM hooks.events WHERE body::jsonb->'data'->>'policyId' = 'P-200'"
[ "$left" = 0 ] || { say "some deliveries are still queued; sender log: $BEEMA_RUN_DIR/demo-sender.log"; exit 1; }
say "demo done (sender log: $BEEMA_RUN_DIR/demo-sender.log)"
