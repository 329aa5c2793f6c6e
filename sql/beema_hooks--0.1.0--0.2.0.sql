-- beema_hooks 0.1.0 -> 0.2.0: run by ALTER EXTENSION beema_hooks UPDATE TO '0.2.0'.
-- Must bring a 0.1.0 database to exactly what a fresh CREATE EXTENSION of 0.2.0 gives
-- (scripts/upgrade_test.sh compares the two). Never edit it once 0.2.0 is released.

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION beema_hooks UPDATE TO '0.2.0'" to load this file. \quit
