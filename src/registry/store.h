/*
 * store.h — the registry's storage interface: tenants, API tokens, tenant
 * resources (users, devices, profiles, groups), device credentials, device
 * events and the audit log; OAuth clients and the keys that sign the API's
 * access tokens.
 *
 * The embedded default is SQLite in WAL mode (store_sqlite.c); a clustered
 * deployment adds a PostgreSQL backend with row-level security behind the
 * same ops table without touching callers (ADR-0008).
 *
 * Tenant isolation is enforced here, in one place per backend: every call
 * that touches tenant data takes a `drv_scope`, and the backend binds the
 * scope's tenant into every statement it runs (a row of another tenant is
 * indistinguishable from a missing row: DRV_NOTFOUND).  Only calls named
 * `platform_*` or `lookup_*` are unscoped; they serve the platform admin and
 * authentication, before a tenant is known.
 *
 * Documents are JSON (jansson).  Resources are stored as the document the
 * API serves, with the store adding the bookkeeping fields:
 *   "id", "tenant", "version" (integer, +1 on every update: the ETag),
 *   "created_at", "updated_at" (RFC 3339 UTC with milliseconds),
 * and, for devices, "connectivity" ({"online", "last_seen", "last_address"?,
 * "last_reason"?}), which only event_append changes (a status, not an
 * edit: it does not bump the version).  Store-owned fields in a document
 * the caller passes in are ignored.  A document is at most
 * DRV_STORE_DOC_MAX bytes serialised (DRV_TOOBIG).
 * Ownership: functions returning json_t * give a new reference to the
 * caller; json_t * arguments are borrowed.
 *
 * Thread safety: a drv_store is used by one thread at a time (the API
 * thread); broker workers open their own read-only handle with
 * drv_store_open_reader() for authentication lookups.
 *
 * Errors: DRV_NOTFOUND (no such row in this scope), DRV_EXISTS (id taken —
 * ids are never reused, not even after deletion), DRV_CONFLICT (version
 * mismatch), DRV_INVAL (bad argument), DRV_AGAIN (the database stayed
 * locked by another writer past the busy timeout), DRV_UNSUPPORTED (a write
 * on a reader handle), DRV_IO (storage failure, logged).
 *
 * Time ranges (from_ms, to_ms) are half-open, from_ms <= ts < to_ms; 0 for
 * either end means unbounded.
 */
#ifndef DRV_REGISTRY_STORE_H
#define DRV_REGISTRY_STORE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

/* Largest serialised document the store keeps (DRV_TOOBIG beyond). */
#define DRV_STORE_DOC_MAX (1024 * 1024)
/* Most live (unrevoked) credentials one device may have (DRV_LIMIT beyond):
 * rotation needs two, and authentication reads them all. */
#define DRV_STORE_CRED_MAX 16

typedef struct drv_store drv_store;

/* Whose data a call may see and change. */
typedef struct drv_scope {
    const char *tenant; /* tenant id, never NULL in scoped calls */
} drv_scope;

/* Keyset pagination.  The cursor is opaque text made by the store. */
typedef struct drv_page {
    const char *cursor; /* from the previous page's "next_cursor"; NULL: first page */
    uint32_t limit;     /* 1..1000; 0: 100 */
} drv_page;

/*
 * A list answer: {"items": [...], "next_cursor": "..." | null}.
 * next_cursor is null on the last page.
 */

/* A filter for resource lists: every set field must match. */
typedef struct drv_doc_filter {
    const char *tag;         /* "key" or "key=value": doc.tags has it */
    const char *attr;        /* "key=value": doc.attributes.key == value (as text) */
    const char *name_prefix; /* doc.name starts with */
    const char *field_eq; /* "field=value": top-level string field equals (e.g. "status=active") */
    /* "field=value": the top-level array field holds the string value
     * (e.g. "groups=g1": the device is a member of static group g1) */
    const char *array_contains;
    /* Order of the list: "id" (NULL: the default), "name", "created_at" or
     * "updated_at", ascending, or descending with a '-' in front ("-created_at");
     * ties are broken by id.  Anything else is DRV_INVAL.  The cursor holds
     * the sort, the last item's key and its id (keyset pagination over
     * (key, id)), so a cursor is only good for the sort that made it.  A
     * missing or non-string name sorts as "". */
    const char *sort;
} drv_doc_filter;

/* Most documents one doc_create_many call takes (one transaction). */
#define DRV_STORE_BATCH_MAX 500

/* One document of a doc_create_many batch. */
typedef struct drv_doc_batch_item {
    json_t *doc;             /* borrowed: validated by the caller, with a string "id" */
    const char *secret_hash; /* kind device: also add a secret credential with this
                                Argon2id hash; NULL: none */
    drv_err result;          /* out: DRV_OK (created), DRV_EXISTS (the id is taken or
                                reserved), DRV_INVAL (no valid id), DRV_TOOBIG */
} drv_doc_batch_item;

/* Resource kinds kept as documents.  Names are also the table discriminator. */
#define DRV_KIND_USER "user"
#define DRV_KIND_DEVICE "device"
#define DRV_KIND_PROFILE "profile"
#define DRV_KIND_GROUP "group"
#define DRV_KIND_TEMPLATE "provisioning_template" /* docs/provisioning.md */

/* A credential as authentication needs it (lookup_*). */
typedef struct drv_credential {
    char tenant[64];
    char device[129];     /* resource ids are 1..128 characters */
    char id[40];          /* credential id */
    char kind[16];        /* "secret", "x509", "jwt_key" */
    char *secret_hash;    /* Argon2id encoded hash (kind secret), heap, or NULL */
    char *public_key_pem; /* kind jwt_key, heap, or NULL */
    char fingerprint[96]; /* kind x509: SHA-256 lower-case hex */
    int64_t not_after_ms; /* 0: no expiry (rotation overlap ends here) */
    bool device_active;   /* the device is not decommissioned */
} drv_credential;
void drv_credential_clear(drv_credential *c);

/* Bytes of a credential's scopes, space-separated, NUL included: room for
 * the whole vocabulary (src/api/scopes.def) with space to grow. */
#define DRV_SCOPES_MAX 1024

/* An API token as authentication needs it. */
typedef struct drv_token_info {
    char id[40];
    char tenant[64];             /* "" for a platform token */
    char role[24];               /* "platform_admin", "tenant_admin", "operator", "viewer" */
    char scopes[DRV_SCOPES_MAX]; /* space-separated; "" means all the role allows */
    int64_t expires_ms;          /* 0: never */
    bool revoked;
} drv_token_info;

/* A device's connection event, as the broker reports it (event_append_batch). */
typedef struct drv_device_event {
    char tenant[64];
    char device[129];
    const char *kind; /* static: "connected", "disconnected" */
    int64_t ts_ms;
    char address[56]; /* peer "ip:port", "" if unknown */
    char reason[64];  /* why it ended, "" for a connect */
} drv_device_event;

/* A device event as it was committed (event_since, and the event hook). */
typedef struct drv_store_event {
    const char *tenant;
    const char *device;
    const char *kind; /* "connected", "provisioned", ... */
    int64_t id;       /* its row: increasing in commit order, across tenants */
    int64_t ts_ms;
    const char *detail; /* JSON object text, NULL when none */
} drv_store_event;

/*
 * The event hook: told of every device event committed through any writer
 * handle of this process, after the commit, on the committing thread (it
 * must not block: the live hub queues them).  Process-wide, because several
 * modules open their own handles; set it before opening stores, clear it
 * (NULL) after closing them.  A backend shared by several nodes (PostgreSQL)
 * would carry this over the event bus instead (ADR-0016).
 */
typedef void (*drv_store_event_hook)(void *ud, const drv_store_event *ev, size_t n);
void drv_store_set_event_hook(drv_store_event_hook fn, void *ud);

/* An OAuth 2.0 client as the token endpoint and JWT authentication need it
 * (lookup_oauth_client).  Its secret is random and kept as a SHA-256, like an
 * API token's. */
typedef struct drv_oauth_client {
    char id[40];                 /* the client_id, "oc_..." */
    char tenant[64];             /* every client belongs to one tenant */
    char role[24];               /* "tenant_admin", "operator", "viewer" */
    char scopes[DRV_SCOPES_MAX]; /* space-separated; "" means none registered */
    uint8_t secret_sha256[32];
    bool revoked;
} drv_oauth_client;

/* A key that signs the API's access tokens (JWS).  Only the active key has
 * its private half; a key loses it when it is retired.  The caller clears a
 * filled struct with drv_signing_key_clear (which wipes the private key). */
typedef struct drv_signing_key {
    char kid[64];          /* key id: the RFC 7638 thumbprint of the public JWK */
    char alg[16];          /* "ES256" */
    char *private_key_pem; /* PKCS#8 PEM, heap; NULL when retired or not asked for */
    char *public_jwk;      /* the public JWK as JSON text, heap */
    int64_t created_ms;
    int64_t not_after_ms; /* retired: verifies tokens until then; 0 while active */
    bool active;          /* signs new tokens (exactly one key is active) */
} drv_signing_key;
void drv_signing_key_clear(drv_signing_key *k);

/* Largest CRL (PEM) a device CA may have (DRV_TOOBIG beyond). */
#define DRV_STORE_CRL_MAX (1024 * 1024)

/* A tenant's device CA as authentication needs it (lookup_cas). */
typedef struct drv_device_ca {
    char id[40];
    char tenant[64];
    char fingerprint[96]; /* SHA-256 of the CA certificate, lower-case hex */
    char profile[129];    /* profile of devices it provisions; "" none */
    char *pem;            /* the CA certificate, heap */
    char *crl_pem;        /* its CRL (PEM, verified against it when set), heap; NULL: none */
    bool auto_provision;  /* zero-touch: create unknown devices on first connect */
    bool claim;           /* purpose "claim": its certificates only register (provisioning.md) */
    bool bind_existing;   /* bind an existing device without a certificate to one it signed */
} drv_device_ca;
void drv_device_ca_clear(drv_device_ca *ca);

typedef struct drv_store_ops {
    const char *name; /* "sqlite" */

    void (*close)(drv_store *st);
    /* A cheap query proving the store answers (for /readyz). */
    drv_err (*ping)(drv_store *st);

    /* -- tenants (platform scope) ------------------------------------------- */
    /* doc: {"id"?, "name", "quotas"?: {devices, connections, messages_per_second,
     * storage_bytes}, "allow_zero_touch"?}.  id is generated when absent
     * (lower-case [a-z0-9-], 3..63). */
    drv_err (*platform_tenant_create)(drv_store *st, json_t *doc, json_t **out);
    drv_err (*platform_tenant_get)(drv_store *st, const char *id, json_t **out);
    drv_err (*platform_tenant_list)(drv_store *st, const drv_page *pg, json_t **out);
    /* Replace the mutable fields (name, quotas, status) if version matches (0: any). */
    drv_err (*platform_tenant_update)(drv_store *st, const char *id, json_t *doc,
                                      int64_t expected_version, json_t **out);
    /* Mark deleted (status "deleted"); its rows stay until purged; id not reused.
     * A deleted tenant can still be read, but not updated or deleted again
     * (DRV_NOTFOUND). */
    drv_err (*platform_tenant_delete)(drv_store *st, const char *id);

    /* -- API tokens --------------------------------------------------------- */
    /* Store a token whose secret the caller generated; only its SHA-256 is kept.
     * doc: {"name", "role", "scopes"?: [..], "expires_at"?, "user"?}; tenant NULL
     * for a platform token, whose role is "platform_admin" (and only a platform
     * token's is).  Scopes are words without spaces, DRV_SCOPES_MAX - 1 bytes in all.
     * out: the token's metadata (no secret), as token_list lists it:
     * {"id", "tenant", "name", "role", "scopes", "user"?, "created_at",
     * "expires_at", "revoked_at"}. */
    drv_err (*token_create)(drv_store *st, const char *tenant, json_t *doc,
                            const uint8_t sha256[32], json_t **out);
    drv_err (*token_list)(drv_store *st, const drv_scope *sc, const drv_page *pg, json_t **out);
    /* Revoking a revoked token succeeds and keeps the first revocation time. */
    drv_err (*token_revoke)(drv_store *st, const drv_scope *sc, const char *id);
    drv_err (*lookup_token)(drv_store *st, const uint8_t sha256[32], drv_token_info *out);
    /* Count platform tokens, revoked ones included (first start creates one
     * when there are none, so revoking every token does not re-open that door). */
    drv_err (*platform_token_count)(drv_store *st, int64_t *out);
    /* The platform tokens (tenant NULL), which no scope reaches. */
    drv_err (*platform_token_list)(drv_store *st, const drv_page *pg, json_t **out);
    drv_err (*platform_token_revoke)(drv_store *st, const char *id);

    /* -- tenant resources as documents -------------------------------------- */
    /* id in doc ("id") or generated.  The caller has validated the document. */
    drv_err (*doc_create)(drv_store *st, const drv_scope *sc, const char *kind, json_t *doc,
                          json_t **out);
    drv_err (*doc_get)(drv_store *st, const drv_scope *sc, const char *kind, const char *id,
                       json_t **out);
    /* Replace the document (bookkeeping fields are the store's) if version
     * matches (0: any). */
    drv_err (*doc_replace)(drv_store *st, const drv_scope *sc, const char *kind, const char *id,
                           json_t *doc, int64_t expected_version, json_t **out);
    /* Remove the row; the id stays reserved (DRV_EXISTS on a later create). */
    drv_err (*doc_delete)(drv_store *st, const drv_scope *sc, const char *kind, const char *id);
    drv_err (*doc_list)(drv_store *st, const drv_scope *sc, const char *kind,
                        const drv_doc_filter *f, const drv_page *pg, json_t **out);
    drv_err (*doc_count)(drv_store *st, const drv_scope *sc, const char *kind, int64_t *out);
    /* Create up to DRV_STORE_BATCH_MAX documents in one transaction (one
     * fsync), for bulk provisioning.  Each item gets its own result: a taken
     * id rejects that item only.  A created device also gets a "provisioned"
     * event, and a secret credential when its item has a secret_hash, in the
     * same transaction.  dry_run: every check runs, then the transaction is
     * rolled back (nothing is stored; the results say what would have
     * happened).  An error return (DRV_INVAL for n, DRV_AGAIN, DRV_IO, ...)
     * means nothing of the batch was stored and the results are void. */
    drv_err (*doc_create_many)(drv_store *st, const drv_scope *sc, const char *kind,
                               drv_doc_batch_item *items, size_t n, bool dry_run);

    /* -- device credentials ------------------------------------------------- */
    /* doc: {"kind": "secret"|"x509"|"jwt_key", "secret_hash"?, "fingerprint"?,
     * "public_key_pem"?, "not_after"?}: exactly the field the kind needs
     * (fingerprint: 64 hex digits, stored lower-case).  The device must exist
     * (DRV_NOTFOUND); a fingerprint live elsewhere is DRV_EXISTS; more than
     * DRV_STORE_CRED_MAX live credentials is DRV_LIMIT.  out: metadata without
     * secret material.  Deleting the device deletes its credentials and events. */
    drv_err (*credential_add)(drv_store *st, const drv_scope *sc, const char *device, json_t *doc,
                              json_t **out);
    /* All of the device's credentials, revoked ones included, oldest first, as
     * a list answer with next_cursor null. */
    drv_err (*credential_list)(drv_store *st, const drv_scope *sc, const char *device,
                               json_t **out);
    drv_err (*credential_revoke)(drv_store *st, const drv_scope *sc, const char *device,
                                 const char *id);
    /* Revoke every credential of a device (decommissioning). */
    drv_err (*credential_revoke_all)(drv_store *st, const drv_scope *sc, const char *device);
    /* Unscoped, for MQTT authentication: the live (not revoked, not expired)
     * credentials of (tenant, device), newest first, up to max; *n gets the
     * count (0 for an unknown device).  The caller clears each with
     * drv_credential_clear. */
    drv_err (*lookup_credentials)(drv_store *st, const char *tenant, const char *device,
                                  drv_credential *out, size_t max, size_t *n);
    /* The live x509 credential with this SHA-256 fingerprint, in any tenant. */
    drv_err (*lookup_fingerprint)(drv_store *st, const char *fingerprint, drv_credential *out);

    /* -- device status and events ------------------------------------------ */
    /* kind: "connected", "disconnected", "provisioned", "decommissioned", ...;
     * detail: {"reason", "address", ...} (borrowed, may be NULL).  Also updates
     * the device's "connectivity" for connected/disconnected, unless it already
     * records a later event.  ts_ms 0: now.  The device must exist. */
    drv_err (*event_append)(drv_store *st, const drv_scope *sc, const char *device,
                            const char *kind, int64_t ts_ms, json_t *detail);
    /* Newest first: items {"ts", "kind", "detail"?}. */
    /* Many events in one transaction (one fsync): connection events from the
     * broker, written in batches.  Events of unknown devices are skipped. */
    drv_err (*event_append_batch)(drv_store *st, const drv_device_event *ev, size_t n);
    drv_err (*event_list)(drv_store *st, const drv_scope *sc, const char *device, int64_t from_ms,
                          int64_t to_ms, const drv_page *pg, json_t **out);
    /* The tenant's events with a row id above after_id, oldest first, at most
     * limit, each to fn (strings valid during the call; false stops). */
    drv_err (*event_since)(drv_store *st, const drv_scope *sc, int64_t after_id, uint32_t limit,
                           bool (*fn)(void *ud, const drv_store_event *ev), void *ud);
    /* The newest event row id of the whole store (0: none), where a live
     * stream's cursor starts. */
    drv_err (*event_last_id)(drv_store *st, int64_t *out);

    /* -- audit log ---------------------------------------------------------- */
    /* One administrative action: actor (token id), action ("device.create"),
     * target ("devices/d1"), source address, detail (borrowed, may be NULL).
     * tenant NULL: a platform action. */
    drv_err (*audit_append)(drv_store *st, const char *tenant, const char *actor,
                            const char *action, const char *target, const char *source,
                            json_t *detail);
    /* Newest first: items {"id", "ts", "tenant", "actor", "action", "target",
     * "source", "detail"?}; the scope's tenant's entries only. */
    drv_err (*audit_list)(drv_store *st, const drv_scope *sc, int64_t from_ms, int64_t to_ms,
                          const drv_page *pg, json_t **out);
    /* The same for platform actions (tenant NULL), which no scope reaches. */
    drv_err (*platform_audit_list)(drv_store *st, int64_t from_ms, int64_t to_ms,
                                   const drv_page *pg, json_t **out);

    /* -- OAuth 2.0 clients (client credentials grant) ----------------------- */
    /* Store a client whose secret the caller generated; only its SHA-256 is
     * kept.  doc: {"name", "role" (viewer|operator|tenant_admin), "scopes"?: [..]}
     * (scopes as for tokens).  The client_id ("oc_...") is generated.  out:
     * the client's metadata (no secret), as oauth_client_list lists it:
     * {"client_id", "tenant", "name", "role", "scopes", "created_at",
     * "revoked_at"}. */
    drv_err (*oauth_client_create)(drv_store *st, const drv_scope *sc, json_t *doc,
                                   const uint8_t sha256[32], json_t **out);
    drv_err (*oauth_client_list)(drv_store *st, const drv_scope *sc, const drv_page *pg,
                                 json_t **out);
    /* Revoking a revoked client succeeds and keeps the first revocation time. */
    drv_err (*oauth_client_revoke)(drv_store *st, const drv_scope *sc, const char *client_id);
    /* Unscoped, for the token endpoint and JWT authentication: the client,
     * revoked or not (one primary-key read). */
    drv_err (*lookup_oauth_client)(drv_store *st, const char *client_id, drv_oauth_client *out);

    /* -- signing keys of the API's access tokens (platform) ----------------- */
    /* Make key (kid, alg, private_key_pem, public_jwk; the rest is ignored) the
     * active key, in one transaction: the key active until now stops signing,
     * verifies until retire_prev_ms (its not_after), and its private key is
     * erased; keys whose not_after has passed are deleted.  DRV_EXISTS for a
     * kid already stored. */
    drv_err (*platform_signing_key_add)(drv_store *st, const drv_signing_key *key,
                                        int64_t retire_prev_ms);
    /* Every stored key, newest first, without private keys: a list answer
     * (next_cursor null) of {"kid", "alg", "created_at", "active",
     * "retires_at" (null while active), "jwk"}. */
    drv_err (*platform_signing_key_list)(drv_store *st, json_t **out);
    /* The same keys as structs for the verifier (public_jwk set,
     * private_key_pem NULL), up to max, newest first; *n gets the count. */
    drv_err (*platform_signing_key_public)(drv_store *st, drv_signing_key *out, size_t max,
                                           size_t *n);
    /* The active key with its private key; DRV_NOTFOUND when there is none. */
    drv_err (*platform_signing_key_active)(drv_store *st, drv_signing_key *out);

    /* -- device CAs (zero-touch provisioning, ADR-0011) --------------------- */
    /* doc (validated by the caller, who parsed the certificate): {"name",
     * "subject" (RFC 2253), "fingerprint" (SHA-256, 64 lower-case hex),
     * "certificate_pem", "auto_provision" (bool), "profile"? (id),
     * "not_after" (RFC 3339), "purpose"? ("device", the default, or "claim";
     * a claim CA cannot auto_provision), "bind_existing"? (bool; not with
     * "claim"), "verified"? (bool: the caller checked a proof of possession)}.
     * The id ("ca_...") is generated.  DRV_EXISTS
     * when the fingerprint is live in this tenant or was ever registered by
     * another (a CA belongs to one tenant).  out: as ca_get answers. */
    drv_err (*ca_create)(drv_store *st, const drv_scope *sc, json_t *doc, json_t **out);
    /* By id, revoked ones included: {"id", "tenant", "name", "subject",
     * "fingerprint", "certificate_pem", "auto_provision", "profile",
     * "not_after", "created_at", "revoked_at", "purpose", "bind_existing",
     * "verified", "crl": {"this_update", "next_update" (or null), "revoked"}
     * or null}. */
    drv_err (*ca_list)(drv_store *st, const drv_scope *sc, const drv_page *pg, json_t **out);
    drv_err (*ca_get)(drv_store *st, const drv_scope *sc, const char *id, json_t **out);
    /* Revoking a revoked CA succeeds and keeps the first revocation time. */
    drv_err (*ca_revoke)(drv_store *st, const drv_scope *sc, const char *id);
    /* Set the CA's CRL from doc, or remove it when doc is NULL.  doc
     * (validated by the caller, who parsed the CRL and verified it against
     * the CA): {"crl_pem" (at most DRV_STORE_CRL_MAX bytes), "this_update"
     * (RFC 3339), "next_update" (RFC 3339 or null), "revoked" (count)}.
     * DRV_NOTFOUND: no such CA; DRV_CONFLICT: its CRL has a later
     * this_update (an older CRL never replaces a newer one).  out (NULL
     * allowed): the CA as ca_get answers. */
    drv_err (*ca_crl_set)(drv_store *st, const drv_scope *sc, const char *id, json_t *doc,
                          json_t **out);
    /* The tenant's CA registration code into out[cap] (64 lower-case hex):
     * the one it has, or, when it has none yet and fresh is not NULL, fresh
     * (64 lower-case hex the caller drew), kept from then on.  DRV_NOTFOUND:
     * none yet and fresh is NULL. */
    drv_err (*ca_registration_code)(drv_store *st, const drv_scope *sc, const char *fresh,
                                    char *out, size_t cap);
    /* Unscoped, for MQTT authentication: the live (unrevoked, unexpired) CAs
     * whose subject is exactly `subject`, in any tenant, up to max, each with
     * its CRL if it has one; *n gets
     * the count.  The caller clears each with drv_device_ca_clear. */
    drv_err (*lookup_cas)(drv_store *st, const char *subject, drv_device_ca *out, size_t max,
                          size_t *n);
    /* Zero-touch: create device doc (validated, with a string "id") with a
     * "provisioned" event carrying detail (borrowed, may be NULL) and an x509
     * credential for fingerprint, in one transaction.  DRV_EXISTS when the
     * id is taken or reserved or the fingerprint is bound elsewhere. */
    drv_err (*device_provision_x509)(drv_store *st, const drv_scope *sc, json_t *doc,
                                     const char *fingerprint, json_t *detail);
} drv_store_ops;

struct drv_store {
    const drv_store_ops *ops;
};

/*
 * Open the SQLite store at path (created, with the schema migrated to the
 * newest version; each migration runs in a transaction and is recorded in
 * schema_migrations).  WAL mode, synchronous=FULL: a committed write has been
 * fsynced before the call returns (principle 4).
 */
drv_err drv_store_open_sqlite(const char *path, drv_store **out);
/* A read-only handle on the same database, for another thread.  The database
 * must exist and be migrated (DRV_NOTFOUND, DRV_CONFIG); its write ops answer
 * DRV_UNSUPPORTED. */
drv_err drv_store_open_reader(const char *path, drv_store **out);

static inline void drv_store_close(drv_store *st)
{
    if (st)
        st->ops->close(st);
}

/* Now, in milliseconds since the epoch, and its RFC 3339 form
 * ("2026-11-28T21:15:17.123Z", buf of at least 32 bytes; years outside
 * 0000..9999 are clamped). */
int64_t drv_store_now_ms(void);
const char *drv_store_format_time(int64_t ms, char *buf, size_t cap);
/* Parse RFC 3339 (Z or offset); false when malformed. */
bool drv_store_parse_time(const char *s, int64_t *ms);

#endif
