-- Runs once when the example database is created: the extension and a login for the sender.
CREATE EXTENSION beema_hooks;
CREATE ROLE hooks_sender_login LOGIN PASSWORD 'change-me' IN ROLE hooks_sender;
