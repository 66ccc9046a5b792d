/*
 * twin_sqlite_sql.c — every SQL text of the SQLite twin store: the schema
 * migrations (PRAGMA user_version counts them) and the statement table
 * (twin_sqlite_int.h says how scoped statements bind their tenant).
 *
 * Schema notes: command seq and history ids are AUTOINCREMENT rowids, never
 * reused, so keyset cursors stay valid across purges and pruning; NULL, not
 * "", stands for "none" in batch and idem_key so the partial indexes skip
 * those rows; commands_pending and commands_due are partial indexes over
 * the few live rows the device queue and the timer read.
 */
#include "twin/twin_sqlite_int.h"

/* -- schema ------------------------------------------------------------------ */

/* Version 1. */
static const char schema_v1[] =
    "CREATE TABLE shadows ("
    " tenant TEXT NOT NULL, device TEXT NOT NULL, name TEXT NOT NULL,"
    " version INTEGER NOT NULL, ts_ms INTEGER NOT NULL,"
    " deleted INTEGER NOT NULL DEFAULT 0, doc TEXT,"
    " PRIMARY KEY (tenant, device, name)) WITHOUT ROWID;"
    "CREATE TABLE shadow_history ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL, device TEXT NOT NULL,"
    " name TEXT NOT NULL, version INTEGER NOT NULL, ts_ms INTEGER NOT NULL,"
    " actor TEXT NOT NULL, source TEXT NOT NULL, op TEXT NOT NULL,"
    " desired TEXT, reported TEXT);"
    "CREATE INDEX shadow_history_key ON shadow_history (tenant, device, name, id);"
    "CREATE INDEX shadow_history_ts ON shadow_history (ts_ms);"
    "CREATE TABLE commands ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL, id TEXT NOT NULL,"
    " device TEXT NOT NULL, batch TEXT, name TEXT NOT NULL, idem_key TEXT,"
    " params TEXT NOT NULL, result TEXT, error TEXT,"
    " state INTEGER NOT NULL CHECK (state BETWEEN 0 AND 7),"
    " attempts INTEGER NOT NULL, max_attempts INTEGER NOT NULL, timeout_ms INTEGER NOT NULL,"
    " created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL,"
    " sent_ms INTEGER NOT NULL, delivered_ms INTEGER NOT NULL, next_ms INTEGER NOT NULL);"
    "CREATE UNIQUE INDEX commands_id ON commands (tenant, id);"
    "CREATE UNIQUE INDEX commands_idem ON commands (tenant, device, idem_key)"
    " WHERE idem_key IS NOT NULL;"
    "CREATE INDEX commands_tenant ON commands (tenant, seq);"
    "CREATE INDEX commands_device ON commands (tenant, device, seq);"
    "CREATE INDEX commands_batch ON commands (tenant, batch, seq) WHERE batch IS NOT NULL;"
    /* state < 2: queued or sent, what a reconnecting device is sent. */
    "CREATE INDEX commands_pending ON commands (tenant, device, seq) WHERE state < 2;"
    "CREATE INDEX commands_due ON commands (next_ms) WHERE next_ms > 0;"
    "CREATE TABLE command_transitions ("
    " tenant TEXT NOT NULL, command TEXT NOT NULL, n INTEGER NOT NULL,"
    " state INTEGER NOT NULL, ts_ms INTEGER NOT NULL, detail TEXT,"
    " PRIMARY KEY (tenant, command, n)) WITHOUT ROWID;"
    "CREATE TABLE command_batches ("
    " tenant TEXT NOT NULL, id TEXT NOT NULL, group_id TEXT NOT NULL, name TEXT NOT NULL,"
    " params TEXT NOT NULL, created_ms INTEGER NOT NULL,"
    " PRIMARY KEY (tenant, id)) WITHOUT ROWID;";

const char *const tw_migrations[] = {schema_v1};
const int tw_migration_count = (int)(sizeof(tw_migrations) / sizeof(tw_migrations[0]));

/* The pending queries below spell the two states as numbers. */
_Static_assert(DRV_CMD_QUEUED == 0 && DRV_CMD_SENT == 1, "commands_pending is state < 2");
_Static_assert(DRV_CMD_STATE_COUNT == 8, "the commands CHECK is state BETWEEN 0 AND 7");

/* -- statements ---------------------------------------------------------------- */

/* Columns cmd_row (twin_sqlite_cmd.c) reads, in its order. */
#define CMD_COLS                                                                            \
    "tenant, id, device, batch, name, idem_key, params, result, error, state, attempts, "   \
    "max_attempts, timeout_ms, created_ms, updated_ms, expires_ms, sent_ms, delivered_ms, " \
    "next_ms, seq"
/* Shared filters of the three list statements: ?2 seq bound, ?3 limit, ?4
 * state (-1 any), ?5 device, ?6 batch (NULL any). */
#define CMD_LIST_REST                                                          \
    " AND seq < ?2 AND (?4 < 0 OR state = ?4) AND (?5 IS NULL OR device = ?5)" \
    " AND (?6 IS NULL OR batch = ?6) ORDER BY seq DESC LIMIT ?3"

const drv_sq_def tw_queries[TQ_COUNT] = {
    [TQ_BEGIN] = {"BEGIN IMMEDIATE", false},
    [TQ_COMMIT] = {"COMMIT", false},
    [TQ_ROLLBACK] = {"ROLLBACK", false},
    [TQ_SAVEPOINT] = {"SAVEPOINT tw_op", false},
    [TQ_RELEASE] = {"RELEASE tw_op", false},
    [TQ_ROLLBACK_TO] = {"ROLLBACK TO tw_op", false},
    [TQ_USER_VERSION] = {"PRAGMA user_version", false},
    [TQ_SHADOW_GET] = {"SELECT version, ts_ms, deleted, doc FROM shadows"
                       " WHERE tenant = ?1 AND device = ?2 AND name = ?3",
                       true},
    [TQ_SHADOW_VERSION] = {"SELECT version FROM shadows"
                           " WHERE tenant = ?1 AND device = ?2 AND name = ?3",
                           true},
    [TQ_SHADOW_UPSERT] = {"INSERT INTO shadows (tenant, device, name, version, ts_ms, deleted, doc)"
                          " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                          " ON CONFLICT (tenant, device, name) DO UPDATE SET"
                          " version = excluded.version, ts_ms = excluded.ts_ms,"
                          " deleted = excluded.deleted, doc = excluded.doc",
                          true},
    [TQ_SHADOW_LIST] = {"SELECT name, version, ts_ms FROM shadows"
                        " WHERE tenant = ?1 AND device = ?2 AND deleted = 0 ORDER BY name",
                        true},
    [TQ_SHADOW_COUNT] = {"SELECT COUNT(*) FROM shadows"
                         " WHERE tenant = ?1 AND device = ?2 AND deleted = 0",
                         true},
    [TQ_HISTORY_INSERT] = {"INSERT INTO shadow_history (tenant, device, name, version, ts_ms,"
                           " actor, source, op, desired, reported)"
                           " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                           true},
    [TQ_HISTORY_PAGE] = {"SELECT id, version, ts_ms, actor, source, op, desired, reported"
                         " FROM shadow_history WHERE tenant = ?1 AND device = ?2 AND name = ?3"
                         " AND ts_ms >= ?4 AND ts_ms < ?5 AND id < ?6 ORDER BY id DESC LIMIT ?7",
                         true},
    [TQ_HISTORY_PRUNE] = {"DELETE FROM shadow_history WHERE id IN (SELECT id FROM shadow_history"
                          " WHERE ts_ms < ?1 ORDER BY ts_ms LIMIT ?2)",
                          false},
    [TQ_CMD_INSERT] = {"INSERT INTO commands (tenant, id, device, batch, name, idem_key, params,"
                       " result, error, state, attempts, max_attempts, timeout_ms, created_ms,"
                       " updated_ms, expires_ms, sent_ms, delivered_ms, next_ms) VALUES (?1, ?2,"
                       " ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,"
                       " ?19)",
                       true},
    [TQ_CMD_BY_IDEM] = {"SELECT " CMD_COLS " FROM commands"
                        " WHERE tenant = ?1 AND device = ?2 AND idem_key = ?3",
                        true},
    [TQ_CMD_GET] = {"SELECT " CMD_COLS " FROM commands WHERE tenant = ?1 AND id = ?2", true},
    [TQ_CMD_STATE] = {"SELECT state FROM commands WHERE tenant = ?1 AND id = ?2", true},
    [TQ_CMD_UPDATE] = {"UPDATE commands SET state = ?3, attempts = ?4, sent_ms = ?5,"
                       " delivered_ms = ?6, next_ms = ?7, result = ?8, error = ?9,"
                       " updated_ms = ?10 WHERE tenant = ?1 AND id = ?2 AND state = ?11",
                       true},
    [TQ_CMD_LIST] = {"SELECT " CMD_COLS " FROM commands WHERE tenant = ?1" CMD_LIST_REST, true},
    [TQ_CMD_LIST_DEVICE] = {"SELECT " CMD_COLS " FROM commands WHERE tenant = ?1"
                            " AND device = ?5" CMD_LIST_REST,
                            true},
    [TQ_CMD_LIST_BATCH] = {"SELECT " CMD_COLS " FROM commands WHERE tenant = ?1"
                           " AND batch = ?6" CMD_LIST_REST,
                           true},
    [TQ_CMD_PENDING] = {"SELECT " CMD_COLS " FROM commands"
                        " WHERE tenant = ?1 AND device = ?2 AND state < 2 ORDER BY seq LIMIT ?3",
                        true},
    [TQ_CMD_WAITING] = {"SELECT count(*) FROM commands"
                        " WHERE tenant = ?1 AND device = ?2 AND state < 2",
                        true},
    [TQ_CMD_DUE] = {"SELECT " CMD_COLS " FROM commands"
                    " WHERE next_ms > 0 AND next_ms <= ?1 ORDER BY next_ms, seq LIMIT ?2",
                    false},
    [TQ_CMD_DUE_NEXT] = {"SELECT MIN(next_ms) FROM commands WHERE next_ms > 0", false},
    [TQ_TRANSITION_INSERT] = {"INSERT INTO command_transitions (tenant, command, n, state, ts_ms,"
                              " detail) SELECT ?1, ?2, COALESCE(MAX(n), 0) + 1, ?3, ?4, ?5"
                              " FROM command_transitions WHERE tenant = ?1 AND command = ?2",
                              true},
    [TQ_TRANSITION_LIST] = {"SELECT state, ts_ms, detail FROM command_transitions"
                            " WHERE tenant = ?1 AND command = ?2 ORDER BY n",
                            true},
    [TQ_BATCH_INSERT] = {"INSERT INTO command_batches (tenant, id, group_id, name, params,"
                         " created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                         true},
    [TQ_BATCH_GET] = {"SELECT id, group_id, name, params, created_ms FROM command_batches"
                      " WHERE tenant = ?1 AND id = ?2",
                      true},
    [TQ_BATCH_COUNTS] = {"SELECT state, COUNT(*) FROM commands"
                         " WHERE tenant = ?1 AND batch = ?2 GROUP BY state",
                         true},
    [TQ_PURGE_SHADOWS] = {"DELETE FROM shadows WHERE tenant = ?1 AND device = ?2", true},
    [TQ_PURGE_HISTORY] = {"DELETE FROM shadow_history WHERE tenant = ?1 AND device = ?2", true},
    [TQ_PURGE_TRANSITIONS] = {"DELETE FROM command_transitions WHERE tenant = ?1 AND command IN"
                              " (SELECT id FROM commands WHERE tenant = ?1 AND device = ?2)",
                              true},
    [TQ_PURGE_COMMANDS] = {"DELETE FROM commands WHERE tenant = ?1 AND device = ?2", true},
};
