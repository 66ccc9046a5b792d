/*
 * store_sqlite_cas.c — device CAs a tenant registered, and the zero-touch
 * creation of a device on its first connect (ADR-0011).
 *
 * A CA row keeps what the API parsed out of the certificate (subject,
 * SHA-256 fingerprint, expiry) beside the PEM itself; the store does not
 * parse certificates.  A CA fingerprint belongs to one tenant: registering
 * one that another tenant ever registered (revoked or not) is DRV_EXISTS,
 * so revoking a CA never hands its devices to whoever registers it next.
 * Revocation only sets revoked_at; lookup_cas skips revoked and expired CAs.
 *
 * A CA may carry a CRL, parsed and verified against it by the API; the row
 * keeps the PEM and the few facts the API shows (thisUpdate, nextUpdate,
 * entry count).  A CRL only replaces one whose thisUpdate is not later.
 * "verified" records that the registrant proved it holds the CA's key (the
 * API checked a certificate the CA signed for the tenant's registration
 * code, kept in ca_registration_codes).
 *
 * lookup_cas is the unscoped read of the authentication thread, by subject
 * (the leaf's issuer name) before a tenant is known; the caller verifies the
 * chain against each CA it gets, and its CRL.  device_provision_x509 is that
 * thread's one write: device, "provisioned" event and x509 credential in one
 * transaction.
 */
#include "registry/store_int.h"

#include <string.h>

#include "core/alloc.h"

#define CA_ID_CHARS 20
#define CRED_ID_CHARS 16
#define CA_PEM_MAX 16384

void drv_device_ca_clear(drv_device_ca *ca)
{
    if (!ca)
        return;
    drv_free(ca->pem);
    drv_free(ca->crl_pem);
    memset(ca, 0, sizeof(*ca));
}

/* The "crl" member of a CA row: null without one. */
static json_t *crl_json(sqlite3_stmt *stmt)
{
    if (sqlite3_column_type(stmt, 13) == SQLITE_NULL)
        return json_null();
    json_t *c = json_object();
    bool ok = c && drv_sq_set(c, "this_update", drv_sq_time_json(sqlite3_column_int64(stmt, 13))) &&
              drv_sq_set(c, "next_update", drv_sq_time_json(sqlite3_column_int64(stmt, 14))) &&
              drv_sq_set(c, "revoked", json_integer(sqlite3_column_int64(stmt, 15)));
    if (!ok) {
        json_decref(c);
        return NULL;
    }
    return c;
}

/* A row of CA_COLUMNS as the API serves it. */
static drv_err ca_row(drv_sq *sq, sqlite3_stmt *stmt, json_t **item)
{
    (void)sq;
    const char *profile = drv_sq_col_text(stmt, 7);
    json_t *c = json_object();
    bool ok = c && drv_sq_set(c, "id", json_string(drv_sq_col_text(stmt, 0))) &&
              drv_sq_set(c, "tenant", json_string(drv_sq_col_text(stmt, 1))) &&
              drv_sq_set(c, "name", json_string(drv_sq_col_text(stmt, 2))) &&
              drv_sq_set(c, "subject", json_string(drv_sq_col_text(stmt, 3))) &&
              drv_sq_set(c, "fingerprint", json_string(drv_sq_col_text(stmt, 4))) &&
              drv_sq_set(c, "certificate_pem", json_string(drv_sq_col_text(stmt, 5))) &&
              drv_sq_set(c, "auto_provision", json_boolean(sqlite3_column_int(stmt, 6) != 0)) &&
              drv_sq_set(c, "profile", profile[0] ? json_string(profile) : json_null()) &&
              drv_sq_set(c, "not_after", drv_sq_time_json(sqlite3_column_int64(stmt, 8))) &&
              drv_sq_set(c, "created_at", drv_sq_time_json(sqlite3_column_int64(stmt, 9))) &&
              drv_sq_set(c, "revoked_at", drv_sq_time_json(sqlite3_column_int64(stmt, 10))) &&
              drv_sq_set(c, "purpose", json_string(drv_sq_col_text(stmt, 11))) &&
              drv_sq_set(c, "bind_existing", json_boolean(sqlite3_column_int(stmt, 12) != 0)) &&
              drv_sq_set(c, "verified", json_boolean(sqlite3_column_int(stmt, 16) != 0)) &&
              drv_sq_set(c, "crl", crl_json(stmt));
    if (!ok) {
        json_decref(c);
        return DRV_NOMEM;
    }
    *item = c;
    return DRV_OK;
}

static bool hex64(const char *s)
{
    if (!s || strlen(s) != 64)
        return false;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
            return false;
    return true;
}

/* DRV_EXISTS when fingerprint is live anywhere or was ever another tenant's. */
static drv_err check_owner(sq_store *s, const char *tenant, const char *fingerprint)
{
    sqlite3_stmt *stmt = NULL;
    drv_err e = drv_sq_unscoped(&s->sq, SQ_CA_OWNERS, &stmt);
    if (e != DRV_OK)
        return e;
    drv_sq_bind_text(stmt, 1, fingerprint);
    while ((e = drv_sq_step(&s->sq, stmt, "ca owners")) == DRV_OK) {
        bool live = sqlite3_column_type(stmt, 1) == SQLITE_NULL;
        if (live || strcmp(drv_sq_col_text(stmt, 0), tenant) != 0) {
            e = DRV_EXISTS;
            break;
        }
    }
    drv_sq_reset(stmt);
    return e == DRV_NOTFOUND ? DRV_OK : e;
}

drv_err sq_ca_create(drv_store *st, const drv_scope *sc, json_t *doc, json_t **out)
{
    sq_store *s = sq_of(st);
    char id[40];
    int64_t not_after = 0;
    *out = NULL;
    if (!sc || !sc->tenant || !json_is_object(doc))
        return DRV_INVAL;
    const char *name = json_string_value(json_object_get(doc, "name"));
    const char *subject = json_string_value(json_object_get(doc, "subject"));
    const char *fp = json_string_value(json_object_get(doc, "fingerprint"));
    const char *pem = json_string_value(json_object_get(doc, "certificate_pem"));
    const char *profile = json_string_value(json_object_get(doc, "profile"));
    const char *na = json_string_value(json_object_get(doc, "not_after"));
    json_t *ap = json_object_get(doc, "auto_provision");
    json_t *bind = json_object_get(doc, "bind_existing");
    json_t *verified = json_object_get(doc, "verified");
    const char *purpose = json_string_value(json_object_get(doc, "purpose"));
    if (!purpose)
        purpose = "device";
    bool claim = strcmp(purpose, "claim") == 0;
    if (!name || !subject || !*subject || !hex64(fp) || !pem || strlen(pem) > CA_PEM_MAX ||
        (profile && !sq_valid_id(profile)) || !na || !drv_store_parse_time(na, &not_after) ||
        (ap && !json_is_boolean(ap)) || (!claim && strcmp(purpose, "device") != 0) ||
        (claim && json_is_true(ap)) || (bind && !json_is_boolean(bind)) ||
        (claim && json_is_true(bind)) || (verified && !json_is_boolean(verified)))
        return DRV_INVAL;
    drv_err e = drv_sq_random_id(&s->sq, "ca_", CA_ID_CHARS, id, sizeof(id));
    if (e != DRV_OK)
        return e;
    int64_t now = drv_store_now_ms();
    sqlite3_stmt *stmt = NULL;
    e = sq_begin(s);
    if (e == DRV_OK)
        e = check_owner(s, sc->tenant, fp);
    if (e == DRV_OK)
        e = sq_scoped(s, sc, SQ_CA_INSERT, &stmt);
    if (e == DRV_OK) {
        drv_sq_bind_text(stmt, 2, id);
        drv_sq_bind_text(stmt, 3, name);
        drv_sq_bind_text(stmt, 4, subject);
        drv_sq_bind_text(stmt, 5, fp);
        drv_sq_bind_text(stmt, 6, pem);
        sqlite3_bind_int(stmt, 7, json_is_true(ap) ? 1 : 0);
        drv_sq_bind_text(stmt, 8, profile);
        sqlite3_bind_int64(stmt, 9, not_after);
        sqlite3_bind_int64(stmt, 10, now);
        drv_sq_bind_text(stmt, 11, purpose);
        sqlite3_bind_int(stmt, 12, json_is_true(bind) ? 1 : 0);
        sqlite3_bind_int(stmt, 13, json_is_true(verified) ? 1 : 0);
        e = drv_sq_run(&s->sq, stmt, "ca insert");
    }
    if (e == DRV_OK)
        e = sq_commit(s);
    if (e != DRV_OK) {
        sq_rollback(s);
        return e;
    }
    return sq_ca_get(st, sc, id, out);
}

drv_err sq_ca_list(drv_store *st, const drv_scope *sc, const drv_page *pg, json_t **out)
{
    sq_store *s = sq_of(st);
    uint32_t limit;
    char after[40] = "";
    *out = NULL;
    if (sq_page_limit(pg, &limit) != DRV_OK ||
        (pg && pg->cursor && drv_sq_cursor_decode(pg->cursor, after, sizeof(after)) != DRV_OK))
        return DRV_INVAL;
    sqlite3_stmt *stmt = NULL;
    drv_err e = sq_scoped(s, sc, SQ_CA_LIST, &stmt);
    if (e != DRV_OK)
        return e;
    drv_sq_bind_text(stmt, 2, after);
    sqlite3_bind_int64(stmt, 3, (int64_t)limit + 1);
    return drv_sq_collect(&s->sq, stmt, limit, DRV_SQ_TEXT_KEY(0), ca_row, out);
}

drv_err sq_ca_get(drv_store *st, const drv_scope *sc, const char *id, json_t **out)
{
    sq_store *s = sq_of(st);
    *out = NULL;
    sqlite3_stmt *stmt = NULL;
    drv_err e = sq_scoped(s, sc, SQ_CA_GET, &stmt);
    if (e != DRV_OK)
        return e;
    drv_sq_bind_text(stmt, 2, id);
    e = drv_sq_step(&s->sq, stmt, "ca get");
    if (e == DRV_OK)
        e = ca_row(&s->sq, stmt, out);
    drv_sq_reset(stmt);
    return e;
}

drv_err sq_ca_revoke(drv_store *st, const drv_scope *sc, const char *id)
{
    sq_store *s = sq_of(st);
    sqlite3_stmt *stmt = NULL;
    drv_err e = sq_scoped(s, sc, SQ_CA_REVOKE, &stmt);
    if (e != DRV_OK)
        return e;
    drv_sq_bind_text(stmt, 2, id);
    sqlite3_bind_int64(stmt, 3, drv_store_now_ms());
    e = drv_sq_run(&s->sq, stmt, "ca revoke");
    if (e == DRV_OK && sqlite3_changes(s->sq.db) == 0)
        e = DRV_NOTFOUND;
    return e;
}

/* DRV_OK when CA id exists in the scope's tenant, else DRV_NOTFOUND. */
static drv_err ca_exists(sq_store *s, const drv_scope *sc, const char *id)
{
    sqlite3_stmt *stmt = NULL;
    drv_err e = sq_scoped(s, sc, SQ_CA_EXISTS, &stmt);
    if (e != DRV_OK)
        return e;
    drv_sq_bind_text(stmt, 2, id);
    e = drv_sq_step(&s->sq, stmt, "ca exists");
    drv_sq_reset(stmt);
    return e;
}

/* Store the CRL doc describes over one not issued later; DRV_CONFLICT when
 * the CA has a later one. */
static drv_err crl_store(sq_store *s, const drv_scope *sc, const char *id, json_t *doc)
{
    const char *pem = json_string_value(json_object_get(doc, "crl_pem"));
    const char *tu = json_string_value(json_object_get(doc, "this_update"));
    json_t *nu = json_object_get(doc, "next_update");
    json_t *revoked = json_object_get(doc, "revoked");
    int64_t this_ms = 0, next_ms = 0;
    if (!pem || !tu || !drv_store_parse_time(tu, &this_ms) ||
        (nu && !json_is_null(nu) &&
         !(json_is_string(nu) && drv_store_parse_time(json_string_value(nu), &next_ms))) ||
        !json_is_integer(revoked) || json_integer_value(revoked) < 0)
        return DRV_INVAL;
    if (strlen(pem) > DRV_STORE_CRL_MAX)
        return DRV_TOOBIG;
    sqlite3_stmt *stmt = NULL;
    drv_err e = sq_scoped(s, sc, SQ_CA_CRL_SET, &stmt);
    if (e != DRV_OK)
        return e;
    drv_sq_bind_text(stmt, 2, id);
    drv_sq_bind_text(stmt, 3, pem);
    sqlite3_bind_int64(stmt, 4, this_ms);
    drv_sq_bind_time(stmt, 5, next_ms);
    sqlite3_bind_int64(stmt, 6, json_integer_value(revoked));
    e = drv_sq_run(&s->sq, stmt, "ca crl set");
    if (e == DRV_OK && sqlite3_changes(s->sq.db) == 0) {
        e = ca_exists(s, sc, id);
        if (e == DRV_OK)
            e = DRV_CONFLICT;
    }
    return e;
}

static drv_err crl_clear(sq_store *s, const drv_scope *sc, const char *id)
{
    sqlite3_stmt *stmt = NULL;
    drv_err e = sq_scoped(s, sc, SQ_CA_CRL_CLEAR, &stmt);
    if (e != DRV_OK)
        return e;
    drv_sq_bind_text(stmt, 2, id);
    e = drv_sq_run(&s->sq, stmt, "ca crl clear");
    if (e == DRV_OK && sqlite3_changes(s->sq.db) == 0)
        e = DRV_NOTFOUND;
    return e;
}

drv_err sq_ca_crl_set(drv_store *st, const drv_scope *sc, const char *id, json_t *doc, json_t **out)
{
    sq_store *s = sq_of(st);
    if (out)
        *out = NULL;
    if (!sc || !sc->tenant || !id || (doc && !json_is_object(doc)))
        return DRV_INVAL;
    /* One transaction: the "is there a later CRL?" answer must hold when
     * DRV_CONFLICT is told apart from DRV_NOTFOUND. */
    drv_err e = sq_begin(s);
    if (e != DRV_OK)
        return e;
    e = sq_end(s, doc ? crl_store(s, sc, id, doc) : crl_clear(s, sc, id));
    if (e == DRV_OK && out)
        e = sq_ca_get(st, sc, id, out);
    return e;
}

drv_err sq_ca_registration_code(drv_store *st, const drv_scope *sc, const char *fresh, char *out,
                                size_t cap)
{
    sq_store *s = sq_of(st);
    if (cap)
        out[0] = '\0';
    if (!sc || !sc->tenant || cap < 65 || (fresh && !hex64(fresh)))
        return DRV_INVAL;
    sqlite3_stmt *stmt = NULL;
    drv_err e = DRV_OK;
    if (fresh) {
        e = sq_scoped(s, sc, SQ_CA_CODE_INSERT, &stmt);
        if (e == DRV_OK) {
            drv_sq_bind_text(stmt, 2, fresh);
            sqlite3_bind_int64(stmt, 3, drv_store_now_ms());
            e = drv_sq_run(&s->sq, stmt, "registration code insert");
        }
    }
    if (e == DRV_OK)
        e = sq_scoped(s, sc, SQ_CA_CODE_GET, &stmt);
    if (e != DRV_OK)
        return e;
    e = drv_sq_step(&s->sq, stmt, "registration code get");
    if (e == DRV_OK && !drv_sq_copy_str(out, cap, drv_sq_col_text(stmt, 0)))
        e = DRV_CORRUPT;
    drv_sq_reset(stmt);
    return e;
}

drv_err sq_lookup_cas(drv_store *st, const char *subject, drv_device_ca *out, size_t max, size_t *n)
{
    sq_store *s = sq_of(st);
    *n = 0;
    if (!subject || !out)
        return DRV_INVAL;
    sqlite3_stmt *stmt = NULL;
    drv_err e = drv_sq_unscoped(&s->sq, SQ_CA_LOOKUP_SUBJECT, &stmt);
    if (e != DRV_OK)
        return e;
    drv_sq_bind_text(stmt, 1, subject);
    sqlite3_bind_int64(stmt, 2, drv_store_now_ms());
    sqlite3_bind_int64(stmt, 3, (int64_t)max);
    while (*n < max && (e = drv_sq_step(&s->sq, stmt, "ca lookup")) == DRV_OK) {
        drv_device_ca *ca = &out[*n];
        memset(ca, 0, sizeof(*ca));
        ca->pem = drv_strdup(drv_sq_col_text(stmt, 5));
        e = ca->pem ? drv_sq_col_dup(stmt, 17, &ca->crl_pem) : DRV_NOMEM;
        if (e != DRV_OK) {
            drv_device_ca_clear(ca);
            break;
        }
        (*n)++;
        if (!drv_sq_copy_str(ca->id, sizeof(ca->id), drv_sq_col_text(stmt, 0)) ||
            !drv_sq_copy_str(ca->tenant, sizeof(ca->tenant), drv_sq_col_text(stmt, 1)) ||
            !drv_sq_copy_str(ca->fingerprint, sizeof(ca->fingerprint), drv_sq_col_text(stmt, 4)) ||
            !drv_sq_copy_str(ca->profile, sizeof(ca->profile), drv_sq_col_text(stmt, 7))) {
            e = DRV_CORRUPT;
            break;
        }
        ca->auto_provision = sqlite3_column_int(stmt, 6) != 0;
        ca->claim = strcmp(drv_sq_col_text(stmt, 11), "claim") == 0;
        ca->bind_existing = sqlite3_column_int(stmt, 12) != 0;
    }
    drv_sq_reset(stmt);
    if (e == DRV_NOTFOUND || (e == DRV_OK && *n == max))
        return DRV_OK;
    for (size_t i = 0; i < *n; i++)
        drv_device_ca_clear(&out[i]);
    *n = 0;
    return e;
}

drv_err sq_device_provision_x509(drv_store *st, const drv_scope *sc, json_t *doc,
                                 const char *fingerprint, json_t *detail)
{
    sq_store *s = sq_of(st);
    const char *id = json_string_value(json_object_get(doc, "id"));
    if (!sc || !sc->tenant || !sq_valid_tenant_id(sc->tenant) || !json_is_object(doc) ||
        !sq_valid_id(id) || !hex64(fingerprint))
        return DRV_INVAL;
    int64_t now = drv_store_now_ms();
    char *text = NULL, *detail_text = NULL, cred[40];
    json_t *d = sq_doc_form_new(sc->tenant, DRV_KIND_DEVICE, id, doc, now);
    drv_err e = d ? drv_sq_json_dump(d, DRV_STORE_DOC_MAX, &text) : DRV_NOMEM;
    json_decref(d);
    if (e == DRV_OK && detail)
        e = drv_sq_json_dump(detail, DRV_STORE_DOC_MAX, &detail_text);
    if (e == DRV_OK)
        e = drv_sq_random_id(&s->sq, "cred_", CRED_ID_CHARS, cred, sizeof(cred));
    if (e == DRV_OK)
        e = sq_begin(s);
    if (e != DRV_OK)
        goto out_free;
    sqlite3_stmt *stmt = NULL;
    e = sq_scoped(s, sc, SQ_ID_RESERVE, &stmt);
    if (e == DRV_OK) {
        drv_sq_bind_text(stmt, 2, DRV_KIND_DEVICE);
        drv_sq_bind_text(stmt, 3, id);
        e = drv_sq_run(&s->sq, stmt, "zero-touch reserve id");
    }
    if (e == DRV_OK)
        e = sq_scoped(s, sc, SQ_DOC_INSERT, &stmt);
    if (e == DRV_OK) {
        drv_sq_bind_text(stmt, 2, DRV_KIND_DEVICE);
        drv_sq_bind_text(stmt, 3, id);
        sqlite3_bind_int64(stmt, 4, 1);
        drv_sq_bind_text(stmt, 5, text);
        sqlite3_bind_int64(stmt, 6, now);
        sqlite3_bind_int64(stmt, 7, now);
        e = drv_sq_run(&s->sq, stmt, "zero-touch device insert");
    }
    if (e == DRV_OK)
        e = sq_scoped(s, sc, SQ_EVENT_INSERT, &stmt);
    if (e == DRV_OK) {
        drv_sq_bind_text(stmt, 2, id);
        sqlite3_bind_int64(stmt, 3, now);
        drv_sq_bind_text(stmt, 4, "provisioned");
        drv_sq_bind_text(stmt, 5, detail_text);
        e = drv_sq_run(&s->sq, stmt, "zero-touch event insert");
    }
    if (e == DRV_OK)
        sq_note_event(s, sc->tenant, id, "provisioned", now, detail_text);
    if (e == DRV_OK)
        e = sq_scoped(s, sc, SQ_CRED_INSERT, &stmt);
    if (e == DRV_OK) {
        drv_sq_bind_text(stmt, 2, cred);
        drv_sq_bind_text(stmt, 3, id);
        drv_sq_bind_text(stmt, 4, "x509");
        drv_sq_bind_text(stmt, 6, fingerprint);
        sqlite3_bind_int64(stmt, 9, now);
        e = drv_sq_run(&s->sq, stmt, "zero-touch credential insert");
    }
    if (e == DRV_OK)
        e = sq_commit(s);
    else
        sq_rollback(s);
out_free:
    drv_free(text);
    drv_free(detail_text);
    return e;
}
