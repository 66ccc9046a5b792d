/*
 * store_sqlite_sql.c — all SQL of the SQLite registry store: the schema
 * migrations and the statement table.
 *
 * Keeping every statement in one table makes tenant isolation reviewable in
 * one screen: a scoped entry filters on "tenant_id = ?1" (or inserts ?1 as
 * tenant_id), and only sq_scoped() binds ?1 of a scoped entry (store_int.h).
 * Unscoped entries are the platform's (tenants, platform tokens, platform
 * audit), authentication lookups and housekeeping.
 *
 * Schema invariants:
 *   - Tenant tables lead their primary keys and indexes with tenant_id, so a
 *     scoped query is always an index range inside one tenant.  The
 *     exceptions are deliberate: api_tokens and device_events have a global
 *     key (a random token id; a row id that orders events) with a
 *     tenant-first index beside it, audit_log is keyed by a global sequence
 *     with a tenant-first index, and credentials_fingerprint is looked up
 *     across tenants by mutual TLS, before a tenant is known.
 *   - Every document id is in reserved_ids before it is in docs (a foreign
 *     key), and reserved_ids rows are never deleted: ids are not reused.
 *   - Credentials and events belong to a device document and go with it
 *     (ON DELETE CASCADE); device_kind exists only to make that key.
 *   - Times are integer milliseconds since the epoch in columns; documents
 *     carry them as RFC 3339 strings too.
 *
 * Migrations: append a script, never edit one that has shipped.  Each runs
 * in its own transaction.  PRAGMA foreign_keys is on and cannot change
 * inside a transaction, so a migration that rebuilds a table must keep
 * referential integrity itself.
 */
#include "registry/store_int.h"

const char sq_schema_bootstrap[] = "CREATE TABLE IF NOT EXISTS schema_migrations ("
                                   " version INTEGER PRIMARY KEY,"
                                   " applied_at INTEGER NOT NULL)";

const char *const sq_migrations[] = {
    /* 1: the first schema. */
    "CREATE TABLE tenants ("
    " id TEXT PRIMARY KEY,"
    " status TEXT NOT NULL,"
    " version INTEGER NOT NULL,"
    " doc TEXT NOT NULL CHECK (json_valid(doc)),"
    " created_at INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL);"

    /* tenant_id NULL: a platform token. */
    "CREATE TABLE api_tokens ("
    " id TEXT PRIMARY KEY,"
    " tenant_id TEXT REFERENCES tenants (id),"
    " name TEXT NOT NULL,"
    " role TEXT NOT NULL,"
    " scopes TEXT NOT NULL,"
    " user_id TEXT,"
    " sha256 BLOB NOT NULL UNIQUE CHECK (length(sha256) = 32),"
    " created_at INTEGER NOT NULL,"
    " expires_at INTEGER,"
    " revoked_at INTEGER,"
    " last_used_at INTEGER);"
    "CREATE INDEX api_tokens_tenant ON api_tokens (tenant_id, id);"

    "CREATE TABLE reserved_ids ("
    " tenant_id TEXT NOT NULL REFERENCES tenants (id),"
    " kind TEXT NOT NULL,"
    " id TEXT NOT NULL,"
    " PRIMARY KEY (tenant_id, kind, id)) WITHOUT ROWID;"

    /* The primary key is also the keyset-pagination index (ORDER BY id
     * within one tenant and kind). */
    "CREATE TABLE docs ("
    " tenant_id TEXT NOT NULL,"
    " kind TEXT NOT NULL,"
    " id TEXT NOT NULL,"
    " version INTEGER NOT NULL,"
    " doc TEXT NOT NULL CHECK (json_valid(doc)),"
    " created_at INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL,"
    " PRIMARY KEY (tenant_id, kind, id),"
    " FOREIGN KEY (tenant_id, kind, id) REFERENCES reserved_ids (tenant_id, kind, id));"

    "CREATE TABLE credentials ("
    " tenant_id TEXT NOT NULL,"
    " id TEXT NOT NULL,"
    " device_kind TEXT NOT NULL DEFAULT 'device' CHECK (device_kind = 'device'),"
    " device_id TEXT NOT NULL,"
    " kind TEXT NOT NULL CHECK (kind IN ('secret', 'x509', 'jwt_key')),"
    " secret_hash TEXT,"
    " fingerprint TEXT,"
    " public_key_pem TEXT,"
    " not_after INTEGER,"
    " created_at INTEGER NOT NULL,"
    " revoked_at INTEGER,"
    " PRIMARY KEY (tenant_id, id),"
    " FOREIGN KEY (tenant_id, device_kind, device_id)"
    "  REFERENCES docs (tenant_id, kind, id) ON DELETE CASCADE);"
    "CREATE INDEX credentials_device ON credentials (tenant_id, device_id);"
    /* One live credential per certificate, across tenants. */
    "CREATE UNIQUE INDEX credentials_fingerprint ON credentials (fingerprint)"
    " WHERE revoked_at IS NULL AND fingerprint IS NOT NULL;"

    "CREATE TABLE device_events ("
    " id INTEGER PRIMARY KEY,"
    " tenant_id TEXT NOT NULL,"
    " device_kind TEXT NOT NULL DEFAULT 'device' CHECK (device_kind = 'device'),"
    " device_id TEXT NOT NULL,"
    " ts INTEGER NOT NULL,"
    " kind TEXT NOT NULL,"
    " detail TEXT CHECK (detail IS NULL OR json_valid(detail)),"
    " FOREIGN KEY (tenant_id, device_kind, device_id)"
    "  REFERENCES docs (tenant_id, kind, id) ON DELETE CASCADE);"
    "CREATE INDEX device_events_device ON device_events (tenant_id, device_id, ts, id);"

    /* tenant_id NULL: a platform action.  No foreign key: the audit log
     * outlives what it describes. */
    "CREATE TABLE audit_log ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " tenant_id TEXT,"
    " ts INTEGER NOT NULL,"
    " actor TEXT NOT NULL,"
    " action TEXT NOT NULL,"
    " target TEXT,"
    " source TEXT,"
    " detail TEXT CHECK (detail IS NULL OR json_valid(detail)));"
    "CREATE INDEX audit_log_tenant ON audit_log (tenant_id, ts, id);",

    /* 2: OAuth 2.0 clients and the keys that sign the API's access tokens
     * (ADR-0010).  oauth_clients is keyed by its random client_id, which the
     * token endpoint looks up before a tenant is known, with a tenant-first
     * index beside it (like api_tokens).  A signing key's private half is
     * erased (NULL) when it is retired; at most one key is active. */
    "CREATE TABLE oauth_clients ("
    " id TEXT PRIMARY KEY,"
    " tenant_id TEXT NOT NULL REFERENCES tenants (id),"
    " name TEXT NOT NULL,"
    " role TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'tenant_admin')),"
    " scopes TEXT NOT NULL,"
    " secret_sha256 BLOB NOT NULL CHECK (length(secret_sha256) = 32),"
    " created_at INTEGER NOT NULL,"
    " revoked_at INTEGER);"
    "CREATE INDEX oauth_clients_tenant ON oauth_clients (tenant_id, id);"

    "CREATE TABLE signing_keys ("
    " kid TEXT PRIMARY KEY,"
    " alg TEXT NOT NULL CHECK (alg = 'ES256'),"
    " private_key_pem TEXT,"
    " public_jwk TEXT NOT NULL CHECK (json_valid(public_jwk)),"
    " created_at INTEGER NOT NULL,"
    " not_after INTEGER,"
    " active INTEGER NOT NULL CHECK (active IN (0, 1)),"
    " CHECK (active = 0 OR (private_key_pem IS NOT NULL AND not_after IS NULL)));"
    "CREATE UNIQUE INDEX signing_keys_active ON signing_keys (active) WHERE active = 1;",

    /* 3: keyset indexes for the sorted document lists (store_sqlite_sort.c);
     * the name expression is exactly the one the queries order by. */
    "CREATE INDEX docs_created ON docs (tenant_id, kind, created_at, id);"
    "CREATE INDEX docs_updated ON docs (tenant_id, kind, updated_at, id);"
    "CREATE INDEX docs_name ON docs"
    " (tenant_id, kind, coalesce(json_extract(doc, '$.name'), ''), id);",

    /* 4: device CAs a tenant registered (ADR-0011, store_sqlite_cas.c).  The
     * authentication thread finds them by subject (the leaf's issuer) across
     * tenants; a fingerprint is live in one tenant at most. */
    "CREATE TABLE device_cas ("
    " tenant_id TEXT NOT NULL REFERENCES tenants (id),"
    " id TEXT NOT NULL,"
    " name TEXT NOT NULL,"
    " subject TEXT NOT NULL,"
    " fingerprint TEXT NOT NULL,"
    " pem TEXT NOT NULL,"
    " auto_provision INTEGER NOT NULL CHECK (auto_provision IN (0, 1)),"
    " profile_id TEXT,"
    " not_after INTEGER NOT NULL,"
    " created_at INTEGER NOT NULL,"
    " revoked_at INTEGER,"
    " PRIMARY KEY (tenant_id, id));"
    "CREATE UNIQUE INDEX device_cas_fingerprint ON device_cas (fingerprint)"
    " WHERE revoked_at IS NULL;"
    "CREATE INDEX device_cas_subject ON device_cas (subject) WHERE revoked_at IS NULL;",
    /* 5: a CA's purpose (docs/provisioning.md): "device" certificates identify
     * devices; "claim" certificates only register them. */
    ("ALTER TABLE device_cas ADD COLUMN purpose TEXT NOT NULL DEFAULT 'device'"
     " CHECK (purpose IN ('device', 'claim'));"),
    /* 6: bind an existing device that has no certificate yet to the first
     * certificate this CA signed for it (CN = device id; docs/topics.md). */
    ("ALTER TABLE device_cas ADD COLUMN bind_existing INTEGER NOT NULL DEFAULT 0"
     " CHECK (bind_existing IN (0, 1));"),
    /* 7: the CA's certificate revocation list (PEM, verified against the CA
     * by the API) and what the API shows of it; all NULL when it has none.
     * An older CRL never replaces a newer one (crl_this_update). */
    ("ALTER TABLE device_cas ADD COLUMN crl_pem TEXT;"
     "ALTER TABLE device_cas ADD COLUMN crl_this_update INTEGER;"
     "ALTER TABLE device_cas ADD COLUMN crl_next_update INTEGER;"
     "ALTER TABLE device_cas ADD COLUMN crl_revoked INTEGER;"),
    /* 8: proof of possession (ADR-0011): a tenant's registration code, made
     * on first request and kept, which a CA must sign (as the CN of a
     * verification certificate) to be registered "verified". */
    ("ALTER TABLE device_cas ADD COLUMN verified INTEGER NOT NULL DEFAULT 0"
     " CHECK (verified IN (0, 1));"
     "CREATE TABLE ca_registration_codes ("
     " tenant_id TEXT PRIMARY KEY REFERENCES tenants (id),"
     " code TEXT NOT NULL,"
     " created_at INTEGER NOT NULL) WITHOUT ROWID;"),
};
const int sq_migration_count = (int)(sizeof(sq_migrations) / sizeof(sq_migrations[0]));

/* Text of an attribute value for "key=value" filters: JSON literals as
 * written, numbers in SQLite's rendering, strings as they are. */
#define ATTR_TEXT                                                                \
    "CASE a.type WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' WHEN 'null' " \
    "THEN 'null' ELSE CAST(a.value AS TEXT) END"

/* The filters of every document list (drv_doc_filter, bound by
 * sq_bind_doc_filter): ?4 tag key, ?5 tag value; ?6 attribute key, ?7 value;
 * ?8 name prefix; ?9 field, ?10 value; ?12 array field, ?13 element.  NULL:
 * no such filter.  The array filter walks the top-level fields and, for the
 * one named ?12 that is an array, its elements (a non-array is read as []:
 * json_each must never be handed a plain string). */
#define DOC_FILTERS                                                                 \
    " AND (?4 IS NULL OR EXISTS (SELECT 1 FROM json_each(docs.doc, '$.tags') AS t"  \
    "  WHERE t.key = ?4 AND (?5 IS NULL OR (t.type = 'text' AND t.value = ?5))))"   \
    " AND (?6 IS NULL OR EXISTS (SELECT 1 FROM json_each(docs.doc, '$.attributes')" \
    "  AS a WHERE a.key = ?6 AND " ATTR_TEXT " = ?7))"                              \
    " AND (?8 IS NULL OR (json_type(docs.doc, '$.name') = 'text'"                   \
    "  AND substr(json_extract(docs.doc, '$.name'), 1, length(?8)) = ?8))"          \
    " AND (?9 IS NULL OR EXISTS (SELECT 1 FROM json_each(docs.doc) AS f"            \
    "  WHERE f.key = ?9 AND f.type = 'text' AND f.value = ?10))"                    \
    " AND (?12 IS NULL OR EXISTS (SELECT 1 FROM json_each(docs.doc) AS ac,"         \
    "  json_each(CASE ac.type WHEN 'array' THEN ac.value ELSE '[]' END) AS av"      \
    "  WHERE ac.key = ?12 AND av.type = 'text' AND av.value = ?13))"

/* A document list ordered by KEY (an expression over docs) in direction DIR,
 * ties broken by id the same way: after ?3, the last key seen, and ?14, the
 * last id, compared as one row value (keyset pagination; the first page
 * binds a position before every document); DOC_FILTERS; ?11 limit.  The
 * third column is the key, for the cursor.  "KEY CMP= ?3" says nothing the
 * row value does not, but it lets SQLite seek the keyset index to the page
 * instead of scanning up to it. */
#define DOC_LIST_SORTED(KEY, CMP, DIR)                                                          \
    "SELECT id, doc, " KEY " FROM docs WHERE tenant_id = ?1 AND kind = ?2 AND " KEY " " CMP     \
    "= ?3 AND (" KEY ", id) " CMP " (?3, ?14)" DOC_FILTERS " ORDER BY " KEY " " DIR ", id " DIR \
    " LIMIT ?11"
#define NAME_KEY "coalesce(json_extract(doc, '$.name'), '')"

#define TOKEN_COLUMNS                                                                        \
    "SELECT id, tenant_id, name, role, scopes, user_id, created_at, expires_at, revoked_at," \
    " last_used_at FROM api_tokens "

#define TOKEN_INSERT                                                                          \
    "INSERT INTO api_tokens (tenant_id, id, name, role, scopes, user_id, sha256, created_at," \
    " expires_at) VALUES "

#define AUDIT_INSERT \
    "INSERT INTO audit_log (tenant_id, ts, actor, action, target, source, detail) VALUES "

#define AUDIT_COLUMNS \
    "SELECT id, tenant_id, ts, actor, action, target, source, detail FROM audit_log "

/* The credential columns lookups fill a drv_credential from, with the
 * device's status; c is the credential, d its device document. */
#define CRED_LOOKUP                                                                   \
    "SELECT c.tenant_id, c.device_id, c.id, c.kind, c.secret_hash, c.public_key_pem," \
    " c.fingerprint, c.not_after, json_extract(d.doc, '$.status')"                    \
    " FROM credentials AS c JOIN docs AS d"                                           \
    " ON d.tenant_id = c.tenant_id AND d.kind = c.device_kind AND d.id = c.device_id "

/* A device CA row (store_sqlite_cas.c reads them in this order).  The CRL
 * itself (up to 1 MiB) is read only by authentication (CA_LOOKUP_COLUMNS). */
#define CA_FIELDS                                                                  \
    "id, tenant_id, name, subject, fingerprint, pem, auto_provision, profile_id,"  \
    " not_after, created_at, revoked_at, purpose, bind_existing, crl_this_update," \
    " crl_next_update, crl_revoked, verified"
#define CA_COLUMNS "SELECT " CA_FIELDS " FROM device_cas "
#define CA_LOOKUP_COLUMNS "SELECT " CA_FIELDS ", crl_pem FROM device_cas "

const drv_sq_def sq_queries[SQ_COUNT] = {
    [SQ_BEGIN] = {"BEGIN IMMEDIATE", false},
    [SQ_COMMIT] = {"COMMIT", false},
    [SQ_ROLLBACK] = {"ROLLBACK", false},
    [SQ_PING] = {"SELECT count(*) FROM schema_migrations", false},
    [SQ_SCHEMA_VERSION] = {"SELECT coalesce(max(version), 0) FROM schema_migrations", false},
    [SQ_SCHEMA_RECORD] = {"INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                          false},

    /* tenants: ?1 id */
    [SQ_TENANT_INSERT] = {"INSERT INTO tenants (id, status, version, doc, created_at, updated_at)"
                          " VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                          false},
    [SQ_TENANT_GET] = {"SELECT status, version, doc, created_at FROM tenants WHERE id = ?1", false},
    [SQ_TENANT_LIST] = {"SELECT id, doc FROM tenants WHERE id > ?1 ORDER BY id LIMIT ?2", false},
    [SQ_TENANT_UPDATE] = {"UPDATE tenants SET status = ?2, version = ?3, doc = ?4, updated_at = ?5"
                          " WHERE id = ?1 AND version = ?6",
                          false},

    /* tokens: ?2 id, ?3 name, ?4 role, ?5 scopes, ?6 user, ?7 sha256, ?8 created,
     * ?9 expires */
    [SQ_TOKEN_INSERT] = {TOKEN_INSERT "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)", true},
    [SQ_TOKEN_INSERT_PLATFORM] = {TOKEN_INSERT "(NULL, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)", false},
    /* ?2 after this id, ?3 limit */
    [SQ_TOKEN_LIST] = {TOKEN_COLUMNS "WHERE tenant_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3", true},
    [SQ_TOKEN_LIST_PLATFORM] = {TOKEN_COLUMNS
                                "WHERE tenant_id IS NULL AND id > ?2 ORDER BY id LIMIT ?3",
                                false},
    /* ?2 id, ?3 now; the first revocation time stays */
    [SQ_TOKEN_REVOKE] = {"UPDATE api_tokens SET revoked_at = coalesce(revoked_at, ?3)"
                         " WHERE tenant_id = ?1 AND id = ?2",
                         true},
    [SQ_TOKEN_REVOKE_PLATFORM] = {"UPDATE api_tokens SET revoked_at = coalesce(revoked_at, ?3)"
                                  " WHERE tenant_id IS NULL AND id = ?2",
                                  false},
    [SQ_TOKEN_COUNT_PLATFORM] = {"SELECT count(*) FROM api_tokens WHERE tenant_id IS NULL", false},
    /* ?1 sha256 */
    [SQ_TOKEN_LOOKUP] = {"SELECT id, tenant_id, role, scopes, expires_at, revoked_at"
                         " FROM api_tokens WHERE sha256 = ?1",
                         false},

    /* documents: ?2 kind, ?3 id */
    [SQ_ID_RESERVE] = {"INSERT INTO reserved_ids (tenant_id, kind, id) VALUES (?1, ?2, ?3)", true},
    /* ?4 version, ?5 doc, ?6 created, ?7 updated */
    [SQ_DOC_INSERT] =
        {"INSERT INTO docs (tenant_id, kind, id, version, doc, created_at, updated_at)"
         " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
         true},
    [SQ_DOC_GET] = {"SELECT version, doc, created_at FROM docs"
                    " WHERE tenant_id = ?1 AND kind = ?2 AND id = ?3",
                    true},
    [SQ_DOC_EXISTS] = {"SELECT 1 FROM docs WHERE tenant_id = ?1 AND kind = ?2 AND id = ?3", true},
    /* ?4 new version, ?5 doc, ?6 updated, ?7 the version read */
    [SQ_DOC_UPDATE] = {"UPDATE docs SET version = ?4, doc = ?5, updated_at = ?6"
                       " WHERE tenant_id = ?1 AND kind = ?2 AND id = ?3 AND version = ?7",
                       true},
    [SQ_DOC_DELETE] = {"DELETE FROM docs WHERE tenant_id = ?1 AND kind = ?2 AND id = ?3", true},
    /* ?3 after this id; DOC_FILTERS; ?11 limit. */
    [SQ_DOC_LIST] =
        {"SELECT id, doc FROM docs WHERE tenant_id = ?1 AND kind = ?2 AND id > ?3" DOC_FILTERS
         " ORDER BY id LIMIT ?11",
         true},
    [SQ_DOC_COUNT] = {"SELECT count(*) FROM docs WHERE tenant_id = ?1 AND kind = ?2", true},
    [SQ_DOC_LIST_ID_DESC] = {DOC_LIST_SORTED("id", "<", "DESC"), true},
    [SQ_DOC_LIST_NAME] = {DOC_LIST_SORTED(NAME_KEY, ">", "ASC"), true},
    [SQ_DOC_LIST_NAME_DESC] = {DOC_LIST_SORTED(NAME_KEY, "<", "DESC"), true},
    [SQ_DOC_LIST_CREATED] = {DOC_LIST_SORTED("created_at", ">", "ASC"), true},
    [SQ_DOC_LIST_CREATED_DESC] = {DOC_LIST_SORTED("created_at", "<", "DESC"), true},
    [SQ_DOC_LIST_UPDATED] = {DOC_LIST_SORTED("updated_at", ">", "ASC"), true},
    [SQ_DOC_LIST_UPDATED_DESC] = {DOC_LIST_SORTED("updated_at", "<", "DESC"), true},
    /* ?2 device, ?3 connectivity fields (JSON object), ?4 last_seen: merged
     * unless the document already records a later event (RFC 3339 strings
     * in one fixed format order as text).  version is not touched. */
    [SQ_DEVICE_CONNECTIVITY] =
        {"UPDATE docs SET doc = json_set(doc, '$.connectivity', json_patch(CASE"
         " json_type(doc, '$.connectivity') WHEN 'object' THEN json_extract(doc, '$.connectivity')"
         " ELSE '{}' END, ?3))"
         " WHERE tenant_id = ?1 AND kind = 'device' AND id = ?2"
         " AND coalesce(json_extract(doc, '$.connectivity.last_seen'), '') <= ?4",
         true},

    /* credentials: ?2 id, ?3 device, ?4 kind, ?5 secret hash, ?6 fingerprint,
     * ?7 public key, ?8 not_after, ?9 created */
    [SQ_CRED_INSERT] = {"INSERT INTO credentials (tenant_id, id, device_id, kind, secret_hash,"
                        " fingerprint, public_key_pem, not_after, created_at)"
                        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                        true},
    /* ?2 device */
    [SQ_CRED_LIVE_COUNT] = {"SELECT count(*) FROM credentials"
                            " WHERE tenant_id = ?1 AND device_id = ?2 AND revoked_at IS NULL",
                            true},
    [SQ_CRED_LIST] = {"SELECT id, kind, fingerprint, not_after, created_at, revoked_at, device_id"
                      " FROM credentials WHERE tenant_id = ?1 AND device_id = ?2"
                      " ORDER BY created_at, id",
                      true},
    /* ?2 device, ?3 id, ?4 now */
    [SQ_CRED_REVOKE] = {"UPDATE credentials SET revoked_at = coalesce(revoked_at, ?4)"
                        " WHERE tenant_id = ?1 AND device_id = ?2 AND id = ?3",
                        true},
    /* ?2 device, ?3 now */
    [SQ_CRED_REVOKE_ALL] = {"UPDATE credentials SET revoked_at = ?3"
                            " WHERE tenant_id = ?1 AND device_id = ?2 AND revoked_at IS NULL",
                            true},
    /* ?2 device, ?3 now, ?4 limit */
    [SQ_CRED_LOOKUP] = {CRED_LOOKUP "WHERE c.tenant_id = ?1 AND c.device_id = ?2"
                                    " AND c.revoked_at IS NULL"
                                    " AND (c.not_after IS NULL OR c.not_after > ?3)"
                                    " ORDER BY c.created_at DESC, c.id LIMIT ?4",
                        true},
    /* ?1 fingerprint, ?2 now: across tenants, for mutual TLS */
    [SQ_CRED_LOOKUP_FINGERPRINT] = {CRED_LOOKUP "WHERE c.fingerprint = ?1 AND c.kind = 'x509'"
                                                " AND c.revoked_at IS NULL"
                                                " AND (c.not_after IS NULL OR c.not_after > ?2)",
                                    false},

    /* events: ?2 device, ?3 ts, ?4 kind, ?5 detail */
    [SQ_EVENT_INSERT] = {"INSERT INTO device_events (tenant_id, device_id, ts, kind, detail)"
                         " VALUES (?1, ?2, ?3, ?4, ?5)",
                         true},
    /* ?2 device, ?3 from, ?4 to, (?5, ?6) the last (ts, id) seen, ?7 limit */
    [SQ_EVENT_LIST] = {"SELECT id, ts, kind, detail FROM device_events"
                       " WHERE tenant_id = ?1 AND device_id = ?2 AND ts >= ?3 AND ts < ?4"
                       " AND (ts, id) < (?5, ?6) ORDER BY ts DESC, id DESC LIMIT ?7",
                       true},

    [SQ_EVENT_SINCE] = {"SELECT id, device_id, ts, kind, detail FROM device_events"
                        " WHERE tenant_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
                        true},
    [SQ_EVENT_LAST_ID] = {"SELECT coalesce(max(id), 0) FROM device_events", false},

    /* audit: ?2 ts, ?3 actor, ?4 action, ?5 target, ?6 source, ?7 detail */
    [SQ_AUDIT_INSERT] = {AUDIT_INSERT "(?1, ?2, ?3, ?4, ?5, ?6, ?7)", true},
    [SQ_AUDIT_INSERT_PLATFORM] = {AUDIT_INSERT "(NULL, ?2, ?3, ?4, ?5, ?6, ?7)", false},
    /* ?2 from, ?3 to, (?4, ?5) the last (ts, id) seen, ?6 limit */
    [SQ_AUDIT_LIST] = {AUDIT_COLUMNS "WHERE tenant_id = ?1 AND ts >= ?2 AND ts < ?3"
                                     " AND (ts, id) < (?4, ?5) ORDER BY ts DESC, id DESC LIMIT ?6",
                       true},
    [SQ_AUDIT_LIST_PLATFORM] = {AUDIT_COLUMNS
                                "WHERE tenant_id IS NULL AND ts >= ?2 AND ts < ?3"
                                " AND (ts, id) < (?4, ?5) ORDER BY ts DESC, id DESC LIMIT ?6",
                                false},

    /* OAuth clients: ?2 client_id, ?3 name, ?4 role, ?5 scopes, ?6 secret
     * SHA-256, ?7 created */
    [SQ_OAUTH_CLIENT_INSERT] = {"INSERT INTO oauth_clients (tenant_id, id, name, role, scopes,"
                                " secret_sha256, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                                true},
    /* ?2 after this client_id, ?3 limit */
    [SQ_OAUTH_CLIENT_LIST] = {"SELECT id, tenant_id, name, role, scopes, created_at, revoked_at"
                              " FROM oauth_clients WHERE tenant_id = ?1 AND id > ?2"
                              " ORDER BY id LIMIT ?3",
                              true},
    /* ?2 client_id, ?3 now; the first revocation time stays */
    [SQ_OAUTH_CLIENT_REVOKE] = {"UPDATE oauth_clients SET revoked_at = coalesce(revoked_at, ?3)"
                                " WHERE tenant_id = ?1 AND id = ?2",
                                true},
    /* ?1 client_id: across tenants, for the token endpoint and JWT checks */
    [SQ_OAUTH_CLIENT_LOOKUP] = {"SELECT id, tenant_id, role, scopes, secret_sha256, revoked_at"
                                " FROM oauth_clients WHERE id = ?1",
                                false},

    /* signing keys (platform): ?1 verifies until; the private key goes */
    [SQ_SIGNING_KEY_RETIRE] = {"UPDATE signing_keys SET active = 0, not_after = ?1,"
                               " private_key_pem = NULL WHERE active = 1",
                               false},
    /* ?1 now */
    [SQ_SIGNING_KEY_PURGE] = {"DELETE FROM signing_keys WHERE active = 0 AND not_after <= ?1",
                              false},
    /* ?1 kid, ?2 alg, ?3 private key PEM, ?4 public JWK, ?5 created */
    [SQ_SIGNING_KEY_INSERT] =
        {"INSERT INTO signing_keys (kid, alg, private_key_pem, public_jwk,"
         " created_at, not_after, active) VALUES (?1, ?2, ?3, ?4, ?5, NULL, 1)",
         false},
    [SQ_SIGNING_KEY_LIST] = {"SELECT kid, alg, public_jwk, created_at, not_after, active"
                             " FROM signing_keys ORDER BY created_at DESC, rowid DESC",
                             false},
    [SQ_SIGNING_KEY_ACTIVE] = {"SELECT kid, alg, private_key_pem, public_jwk, created_at"
                               " FROM signing_keys WHERE active = 1",
                               false},

    /* device CAs (store_sqlite_cas.c): ?2 id, ?3 name, ?4 subject, ?5 fingerprint,
     * ?6 PEM, ?7 auto_provision, ?8 profile, ?9 not_after, ?10 created, ?11 purpose,
     * ?12 bind_existing, ?13 verified */
    [SQ_CA_INSERT] = {"INSERT INTO device_cas (tenant_id, id, name, subject, fingerprint, pem,"
                      " auto_provision, profile_id, not_after, created_at, purpose,"
                      " bind_existing, verified)"
                      " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                      true},
    /* ?1 fingerprint: who registered it, revoked or not (one tenant per CA) */
    [SQ_CA_OWNERS] = {"SELECT tenant_id, revoked_at FROM device_cas WHERE fingerprint = ?1", false},
    /* ?2 after this id, ?3 limit */
    [SQ_CA_LIST] = {CA_COLUMNS "WHERE tenant_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3", true},
    /* ?2 id */
    [SQ_CA_GET] = {CA_COLUMNS "WHERE tenant_id = ?1 AND id = ?2", true},
    /* ?2 id, ?3 now; the first revocation time stays */
    [SQ_CA_REVOKE] = {"UPDATE device_cas SET revoked_at = coalesce(revoked_at, ?3)"
                      " WHERE tenant_id = ?1 AND id = ?2",
                      true},
    /* ?1 subject, ?2 now, ?3 limit: live CAs across tenants, for authentication */
    [SQ_CA_LOOKUP_SUBJECT] = {CA_LOOKUP_COLUMNS "WHERE subject = ?1 AND revoked_at IS NULL"
                                                " AND not_after > ?2 ORDER BY tenant_id, id"
                                                " LIMIT ?3",
                              false},
    /* ?2 id, ?3 CRL PEM, ?4 this_update, ?5 next_update, ?6 revoked count: never
     * over a CRL issued later */
    [SQ_CA_CRL_SET] = {"UPDATE device_cas SET crl_pem = ?3, crl_this_update = ?4,"
                       " crl_next_update = ?5, crl_revoked = ?6 WHERE tenant_id = ?1 AND id = ?2"
                       " AND (crl_this_update IS NULL OR crl_this_update <= ?4)",
                       true},
    /* ?2 id */
    [SQ_CA_CRL_CLEAR] = {"UPDATE device_cas SET crl_pem = NULL, crl_this_update = NULL,"
                         " crl_next_update = NULL, crl_revoked = NULL"
                         " WHERE tenant_id = ?1 AND id = ?2",
                         true},
    [SQ_CA_EXISTS] = {"SELECT 1 FROM device_cas WHERE tenant_id = ?1 AND id = ?2", true},
    /* ?2 code, ?3 created; the first code stays */
    [SQ_CA_CODE_INSERT] = {"INSERT INTO ca_registration_codes (tenant_id, code, created_at)"
                           " VALUES (?1, ?2, ?3) ON CONFLICT (tenant_id) DO NOTHING",
                           true},
    [SQ_CA_CODE_GET] = {"SELECT code FROM ca_registration_codes WHERE tenant_id = ?1", true},
};
