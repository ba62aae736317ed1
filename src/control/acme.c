/* The ACME client (acme.h).
 *
 * One HTTP request at a time (struct req: URL, signed body, what to do
 * with the answer), one order at a time (struct order), on the main loop.
 * libevent's HTTP callbacks only record the answer and activate `finish`,
 * which frees the connection and goes on outside libevent's own stack (as
 * the webhook sink does).
 *
 * An order walks: directory (once) -> nonce (when none is held) ->
 * account (once: newAccount with the key in storage) -> newOrder -> each
 * authorization (POST-as-GET; a pending one gets its challenge published
 * for the serving threads, then the challenge is accepted and the
 * authorization polled) -> finalize with a CSR -> poll the order ->
 * download the certificate -> store, publish, schedule the renewal.
 * Every POST is signed with the last Replay-Nonce; a badNonce answer is
 * retried with the fresh one it carries. */
#include "autoconf.h"

#include "control/acme.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "admin/metrics.h"
#include "control/acme_config.h"
#include "control/server.h"
#include "events/events.h"
#include "fleet/fleet.h"
#include "lib/acme_jose.h"
#include "lib/clock.h"
#include "lib/file.h"
#include "lib/html.h"
#include "lib/json.h"
#include "lib/lit.h"
#include "lib/log.h"
#include "lib/netaddr.h"
#include "serve/acme_live.h"

#define ACME_TIMEOUT_S        30          /* one request, connect to last byte */
#define ACME_MAX_BODY         (1u << 20)  /* an answer's body */
#define ACME_MAX_HEADS        (64u << 10) /* an answer's headers */
#define ACME_BACKOFF_MIN_MS   60000       /* 1 min, doubling ... */
#define ACME_BACKOFF_MAX_MS   3600000     /* ... to 1 h */
#define ACME_MAX_POLLS        120         /* an authorization or order polled */
#define ACME_POLL_MS          1000        /* between polls without Retry-After */
#define ACME_MAX_RETRY_AFTER  86400       /* seconds: a later Retry-After is capped */
#define ACME_MAX_BAD_NONCE    5           /* one request re-signed after badNonce */
#define ACME_ORDER_DEADLINE_S 600         /* a whole order, then it failed */
#define ACME_ACK_WAIT_MS      10000       /* fleet: for every instance to have an answer */
#define ACME_SHARE_FIRST_MS   5000        /* fleet: cert/NAME written again after 5 s, doubling */
#define ACME_SHARE_MAX_MS     600000      /* ... to 10 min */
#define FLEET_NAME_LEN        80          /* an instance name and its NUL */

enum name_state { NS_NONE, NS_VALID, NS_ORDERING, NS_FAILED };

struct aname {
    char *name;
    enum name_state state;
    X509 *x509;
    EVP_PKEY *key;
    STACK_OF(X509) * chain;
    time_t not_before, not_after;
    int64_t due_ms;      /* when the next order starts (INT64_MAX: none) */
    time_t next_renewal; /* for /status (0: unknown) */
    char *last_error;
    unsigned failures;   /* in a row, for the backoff */
    int64_t ari_next_ms; /* when to ask renewalInfo again for the certificate held */
    int64_t shared_rev;  /* the fleet's cert/NAME revision last looked at */
    bool shared_same;    /* that revision holds the certificate served here */
    bool shared_seen;    /* cert/NAME was in etcd at the last look */
    /* fleet: the certificate this instance obtained, as it goes to cert/NAME,
     * kept until a newer one comes: written again whenever etcd lacks it
     * (a refused write, etcd unreachable at that moment, a deletion) */
    char *share;
    int64_t share_next_ms, share_wait_ms;
};

/* A challenge answer another instance published (fleet) */
struct shared_chal {
    char *id; /* the token (http-01) or the name (tls-alpn-01) */
    char *keyauth;
    X509 *x509; /* tls-alpn-01: built here from keyauth */
    EVP_PKEY *key;
    int64_t acked; /* the lease this instance's seen/ key went under (0: none) */
};

/* What an answer is for. */
enum step {
    S_DIRECTORY,
    S_NONCE,
    S_ACCOUNT,
    S_ORDER,
    S_AUTHZ,
    S_CHALLENGE,
    S_POLL_AUTHZ,
    S_FINALIZE,
    S_POLL_ORDER,
    S_CERT,
    S_ARI,
};

struct answer {
    int status; /* 0: none (the reason in why) */
    char *body;
    size_t len;
    char *location, *nonce, *content_type;
    long retry_after; /* seconds, -1: none */
    char why[256];
};

struct order {
    struct aname *n;
    bool renewal;
    char *url, *finalize, *cert_url;
    char **authz;
    size_t nauthz, iauthz;
    char *chal_url, *token, *keyauth;
    bool chal_alpn;
    X509 *alpn_x509;
    EVP_PKEY *alpn_key;
    EVP_PKEY *key; /* the new certificate's */
    unsigned polls;
    int64_t started_ms;
    /* in a fleet: the lock first, the challenge seen in etcd before it is
     * accepted */
    bool lock_wait, lock_put, acks_wait;
    bool replaced, no_replaces; /* newOrder named the certificate it replaces (ARI) */
    bool superseded;            /* fleet: another instance's newer certificate came */
    int64_t lock_lease, lock_put_ms, acks_since_ms;
    char *chal_key; /* "http01/TOKEN" or "alpn/NAME" (after "acme/") */
};

struct acme {
    struct event_base *base;
    struct server *srv;
    struct acme_cfg *cfg; /* a copy of the running config's section; NULL: none */
    /* the server */
    bool have_dir;
    char *u_nonce, *u_account, *u_order, *u_ari;
    char *nonce;
    EVP_PKEY *acct;
    char *kid, *thumb;
    SSL_CTX *ssl_ctx;
    struct evdns_base *dns;
    /* the request in flight */
    struct evhttp_connection *conn;
    bool busy, have_answer;
    enum step step;
    char *req_url, *req_payload; /* payload NULL: GET (or HEAD for S_NONCE) */
    bool req_post, req_jwk;
    /* a POST waiting for the nonce fetched first (nonce_first) */
    bool nonce_first;
    enum step post_step;
    char *pend_url;
    unsigned bad_nonces;
    struct answer ans;
    struct event *finish, *deadline, *timer, *poll;
    /* names and the order in hand */
    struct aname *names;
    size_t nnames;
    struct order *ord;
    struct aname *ari_for; /* the name whose renewalInfo is asked */
    uint64_t issued, failed;
    /* the fleet (NULL: alone) and the challenges other instances publish */
    struct fleet *fleet;
    bool want_fleet;      /* the config has `fleet:`: nothing is ordered alone */
    int64_t member_lease; /* the lease acme/member/INSTANCE went under */
    struct event *fwait;  /* re-checks the fleet's keys while an order waits on them */
    struct event *odl;    /* the order's deadline */
    struct shared_chal *stok, *salpn;
    size_t nstok, nsalpn;
};

static void kick(struct acme *a);
static void on_timer(evutil_socket_t fd, short what, void *arg);
static void order_fail(struct acme *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- small helpers ---- */

static int64_t now_ms(void)
{
    return clock_wall_ms();
}

static void set_str(char **dst, const char *src)
{
    free(*dst);
    *dst = src ? strdup(src) : NULL;
}

static void iso_time(time_t t, char *buf, size_t len)
{
    struct tm tm;
    if (!t || !gmtime_r(&t, &tm) || !strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm)) buf[0] = '\0';
}

static const char *state_name(enum name_state s)
{
    switch (s) {
    case NS_VALID: return "valid";
    case NS_ORDERING: return "ordering";
    case NS_FAILED: return "failed";
    default: return "ordering"; /* waiting for its first order */
    }
}

static bool is_ip_literal(const char *h)
{
    unsigned char b[16];
    return inet_pton(AF_INET, h, b) == 1 || inet_pton(AF_INET6, h, b) == 1;
}

/* ---- storage: one directory, 0700, every file 0600, written atomically ---- */

static void path_of(const struct acme *a, const char *file, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s", a->cfg->storage, file);
}

static bool storage_dir(const struct acme *a, char *why, size_t len)
{
    if (mkdir(a->cfg->storage, 0700) == 0 || errno == EEXIST) return true;
    snprintf(why, len, "cannot create the storage directory %s: %s", a->cfg->storage,
             strerror(errno));
    return false;
}

/* Writes data to storage/file through a temporary file renamed over it:
 * a crash leaves the old file or the new one, never half of one. */
static bool storage_write(const struct acme *a, const char *file, const char *data, size_t len,
                          char *why, size_t whylen)
{
    char path[4096], tmp[4200];
    if (!storage_dir(a, why, whylen)) return false;
    path_of(a, file, path, sizeof(path));
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        snprintf(why, whylen, "cannot write %.300s: %s", tmp, strerror(errno));
        return false;
    }
    (void)fchmod(fd, 0600); /* whatever the umask, and an older file's mode */
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        off += (size_t)w;
    }
    bool ok = off == len && fsync(fd) == 0;
    int e = errno;
    if (close(fd) != 0 && ok) ok = false, e = errno;
    if (!ok || rename(tmp, path) != 0) {
        if (ok) e = errno;
        snprintf(why, whylen, "cannot write %.300s: %s", path, strerror(e));
        unlink(tmp);
        return false;
    }
    return true;
}

/* storage/file, or NULL (missing, unreadable: *why says which unless it
 * is simply missing) */
static char *storage_read(const struct acme *a, const char *file, size_t *len, char *why,
                          size_t whylen)
{
    char path[4096], buf[256];
    struct file_error fe;
    path_of(a, file, path, sizeof(path));
    why[0] = '\0';
    char *p = file_read(path, FILE_MAX_PEM_BYTES, len, &fe);
    if (!p && !(fe.kind == FILE_EOPEN && fe.err == ENOENT))
        snprintf(why, whylen, "%.300s%s%s", path, file_sep(&fe), file_why(&fe, buf, sizeof(buf)));
    return p;
}

static bool load_account_key(struct acme *a, char *why, size_t len)
{
    size_t n;
    char *pem = storage_read(a, "_account.key.pem", &n, why, len);
    if (pem) {
        a->acct = acme_key_from_pem(pem, n);
        file_free(pem, n);
        if (!a->acct) snprintf(why, len, "%s/_account.key.pem holds no key", a->cfg->storage);
        return a->acct != NULL;
    }
    if (why[0]) return false;
    a->acct = acme_key_new(ACME_KEY_EC256);
    char *out = a->acct ? acme_key_pem(a->acct) : NULL;
    bool ok = out && storage_write(a, "_account.key.pem", out, strlen(out), why, len);
    if (out) OPENSSL_cleanse(out, strlen(out)), free(out);
    if (!ok) {
        if (!why[0]) snprintf(why, len, "cannot make an account key");
        EVP_PKEY_free(a->acct);
        a->acct = NULL;
    } else {
        log_info("acme: new account key in %s/_account.key.pem", a->cfg->storage);
    }
    return ok;
}

/* account.json: the account URL the directory gave for this key */
static void load_account_url(struct acme *a)
{
    char why[256];
    size_t n;
    char *s = storage_read(a, "_account.json", &n, why, sizeof(why));
    if (!s) return;
    json_t *j = json_loadb(s, n, 0, NULL);
    file_free(s, n);
    const char *dir = json_string_value(json_object_get(j, "directory"));
    const char *kid = json_string_value(json_object_get(j, "kid"));
    if (dir && kid && strcmp(dir, a->cfg->directory) == 0) set_str(&a->kid, kid);
    json_decref(j);
}

static void save_account_url(struct acme *a)
{
    char why[256];
    json_t *j = json_pack("{s:s, s:s}", "directory", a->cfg->directory, "kid", a->kid);
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!s || !storage_write(a, "_account.json", s, strlen(s), why, sizeof(why)))
        log_warn("acme: cannot keep the account URL: %s", s ? why : "out of memory");
    free(s);
}

static void name_unshare(struct aname *n)
{
    if (n->share) OPENSSL_cleanse(n->share, strlen(n->share)), free(n->share);
    n->share = NULL;
    n->share_next_ms = n->share_wait_ms = 0;
}

static void name_clear_cert(struct aname *n)
{
    X509_free(n->x509);
    EVP_PKEY_free(n->key);
    sk_X509_pop_free(n->chain, X509_free);
    n->x509 = NULL;
    n->key = NULL;
    n->chain = NULL;
    n->not_before = n->not_after = 0;
}

static void schedule_renewal(struct aname *n);

/* n serves x (its key k, its chain) from now on; the references pass to n. */
static void name_take(struct aname *n, X509 *x, EVP_PKEY *k, STACK_OF(X509) * chain)
{
    name_clear_cert(n);
    n->x509 = x;
    n->key = k;
    n->chain = chain;
    n->not_before = acme_not_before(x);
    n->not_after = acme_not_after(x);
    n->shared_same = false; /* until etcd is seen to hold it */
    n->state = NS_VALID;
    n->failures = 0;
    n->ari_next_ms = 0;
    set_str(&n->last_error, NULL);
    schedule_renewal(n);
}

/* Keeps name's key and certificate chain (PEM) in storage; false with why. */
static bool store_pair(const struct acme *a, const char *name, const char *key, const char *crt,
                       size_t crtlen, char *why, size_t whylen)
{
    char file[300];
    snprintf(file, sizeof(file), "%s.key.pem", name);
    if (!storage_write(a, file, key, strlen(key), why, whylen)) return false;
    snprintf(file, sizeof(file), "%s.crt.pem", name);
    return storage_write(a, file, crt, crtlen, why, whylen);
}

/* When a certificate should be renewed: a third of its lifetime before
 * its end (ARI may move it later). */
static time_t renew_at(const struct aname *n)
{
    time_t life = n->not_after - n->not_before;
    if (life < 3) life = 3;
    return n->not_after - life / 3;
}

static void schedule_renewal(struct aname *n)
{
    n->next_renewal = renew_at(n);
    n->due_ms = (int64_t)n->next_renewal * 1000;
}

/* The certificate and key kept for n, if both are there, match, and the
 * certificate is still valid. */
static void load_cert(struct acme *a, struct aname *n)
{
    char file[300], why[512];
    size_t cl, kl;
    snprintf(file, sizeof(file), "%s.crt.pem", n->name);
    char *crt = storage_read(a, file, &cl, why, sizeof(why));
    if (!crt) {
        if (why[0]) log_warn("acme: %s", why);
        return;
    }
    snprintf(file, sizeof(file), "%s.key.pem", n->name);
    char *key = storage_read(a, file, &kl, why, sizeof(why));
    X509 *x = NULL;
    STACK_OF(X509) *chain = NULL;
    EVP_PKEY *k = key ? acme_key_from_pem(key, kl) : NULL;
    if (key) file_free(key, kl);
    if (!acme_chain_parse(crt, cl, &x, &chain) || !k || !acme_cert_key_match(x, k) ||
        !acme_cert_covers(x, n->name)) {
        log_warn("acme: %s: the certificate kept in %s is unusable (missing key, mismatch or "
                 "another name): ordering a new one",
                 n->name, a->cfg->storage);
        X509_free(x);
        sk_X509_pop_free(chain, X509_free);
        EVP_PKEY_free(k);
        free(crt);
        return;
    }
    free(crt);
    time_t na = acme_not_after(x);
    if (na <= time(NULL)) {
        log_warn("acme: %s: the certificate kept has expired: ordering a new one", n->name);
        X509_free(x);
        sk_X509_pop_free(chain, X509_free);
        EVP_PKEY_free(k);
        return;
    }
    name_take(n, x, k, chain);
    char t[32];
    iso_time(na, t, sizeof(t));
    log_info("acme: %s: serving the certificate kept in %s (expires %s)", n->name, a->cfg->storage,
             t);
}

/* ---- what the serving threads read ---- */

static void retire_live(void *p)
{
    acme_live_free(p);
}

/* Publishes every certificate held and the challenge pending now. */
static void publish(struct acme *a)
{
    struct acme_live *l = calloc(1, sizeof(*l));
    if (!l) {
        log_error("acme: out of memory publishing certificates");
        return;
    }
    size_t nc = 0;
    for (size_t i = 0; i < a->nnames; i++) nc += a->names[i].x509 != NULL;
    l->certs = nc ? calloc(nc, sizeof(*l->certs)) : NULL;
    bool ok = !nc || l->certs;
    for (size_t i = 0; ok && i < a->nnames; i++) {
        struct aname *n = &a->names[i];
        if (!n->x509) continue;
        struct acme_live_cert *c = &l->certs[l->ncerts];
        if (!(c->name = strdup(n->name))) {
            ok = false;
            break;
        }
        X509_up_ref(n->x509);
        EVP_PKEY_up_ref(n->key);
        c->x509 = n->x509;
        c->key = n->key;
        c->chain = n->chain ? X509_chain_up_ref(n->chain) : NULL;
        l->ncerts++;
    }
    struct order *o = a->ord;
    bool own_tok = o && o->token && o->keyauth && !o->chal_alpn;
    bool own_alpn = o && o->chal_alpn && o->alpn_x509;
    size_t nt = a->nstok + own_tok, na = a->nsalpn + own_alpn;
    if (ok && nt) ok = (l->tokens = calloc(nt, sizeof(*l->tokens))) != NULL;
    if (ok && na) ok = (l->alpn = calloc(na, sizeof(*l->alpn))) != NULL;
    for (size_t i = 0; ok && i < nt; i++) {
        const char *tok = i < a->nstok ? a->stok[i].id : o->token;
        const char *ka = i < a->nstok ? a->stok[i].keyauth : o->keyauth;
        struct acme_live_token *t = &l->tokens[l->ntokens];
        ok = (t->token = strdup(tok)) && (t->keyauth = strdup(ka));
        t->token_len = t->token ? strlen(t->token) : 0;
        t->keyauth_len = t->keyauth ? strlen(t->keyauth) : 0;
        l->ntokens++;
    }
    for (size_t i = 0; ok && i < na; i++) {
        const char *name = i < a->nsalpn ? a->salpn[i].id : o->n->name;
        X509 *x = i < a->nsalpn ? a->salpn[i].x509 : o->alpn_x509;
        EVP_PKEY *k = i < a->nsalpn ? a->salpn[i].key : o->alpn_key;
        struct acme_live_alpn *al = &l->alpn[l->nalpn];
        if (!x || !k) continue;
        if (!(al->name = strdup(name))) {
            ok = false;
            break;
        }
        X509_up_ref(x);
        EVP_PKEY_up_ref(k);
        al->x509 = x;
        al->key = k;
        l->nalpn++;
    }
    if (!ok) {
        acme_live_free(l);
        log_error("acme: out of memory publishing certificates");
        return;
    }
    struct acme_live *old = acme_live_swap(l);
    if (old) server_retire(a->srv, old, retire_live);
}

/* ---- HTTP ---- */

static void answer_clear(struct answer *r)
{
    free(r->body);
    free(r->location);
    free(r->nonce);
    free(r->content_type);
    memset(r, 0, sizeof(*r));
    r->retry_after = -1;
}

static struct evdns_base *dns_for(struct acme *a)
{
    if (a->dns) return a->dns;
    a->dns = evdns_base_new(a->base,
                            EVDNS_BASE_INITIALIZE_NAMESERVERS | EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (!a->dns) {
        a->dns = evdns_base_new(a->base, 0);
        if (a->dns) evdns_base_load_hosts(a->dns, NULL);
    }
    return a->dns;
}

static SSL_CTX *ssl_ctx_for(struct acme *a, char *why, size_t len)
{
    if (a->ssl_ctx) return a->ssl_ctx;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        snprintf(why, len, "TLS: cannot create a context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    char err[256] = "";
    int ok = a->cfg->ca_file ? file_load_verify(ctx, a->cfg->ca_file, err, sizeof(err))
                             : SSL_CTX_set_default_verify_paths(ctx);
    ERR_clear_error();
    if (!ok) {
        snprintf(why, len, "TLS: cannot load CA certificates%s%s%s%s",
                 a->cfg->ca_file ? " from " : "", a->cfg->ca_file ? a->cfg->ca_file : "",
                 err[0] ? ": " : "", err);
        SSL_CTX_free(ctx);
        return NULL;
    }
    a->ssl_ctx = ctx;
    return ctx;
}

static void conn_close(struct acme *a)
{
    if (a->conn) evhttp_connection_free(a->conn);
    a->conn = NULL;
    event_del(a->deadline);
    event_del(a->finish);
}

static const char *req_error_text(int e)
{
    switch (e) {
    case EVREQ_HTTP_TIMEOUT: return "timed out";
    case EVREQ_HTTP_EOF: return "the connection closed before an answer";
    case EVREQ_HTTP_INVALID_HEADER: return "an invalid answer";
    case EVREQ_HTTP_BUFFER_ERROR: return "a connection error";
    case EVREQ_HTTP_DATA_TOO_LONG: return "an answer too large";
    default: return "no answer";
    }
}

static void on_request_error(enum evhttp_request_error err, void *arg)
{
    struct acme *a = arg;
    if (!a->have_answer && !a->ans.why[0])
        snprintf(a->ans.why, sizeof(a->ans.why), "%s", req_error_text((int)err));
}

static char *header_dup(struct evkeyvalq *h, const char *name)
{
    const char *v = evhttp_find_header(h, name);
    return v ? strdup(v) : NULL;
}

static void on_request_done(struct evhttp_request *req, void *arg)
{
    struct acme *a = arg;
    if (a->have_answer) return;
    int status = req ? evhttp_request_get_response_code(req) : 0;
    struct answer *r = &a->ans;
    if (status > 0) {
        r->status = status;
        struct evkeyvalq *h = evhttp_request_get_input_headers(req);
        r->location = header_dup(h, "Location");
        r->nonce = header_dup(h, "Replay-Nonce");
        r->content_type = header_dup(h, "Content-Type");
        const char *ra = evhttp_find_header(h, "Retry-After");
        if (ra) {
            char *end;
            long v = strtol(ra, &end, 10);
            struct tm tm = {0};
            if (end != ra && *end == '\0' && v >= 0) {
                r->retry_after = v;
            } else if ((end = strptime(ra, "%a, %d %b %Y %H:%M:%S GMT", &tm)) && !*end) {
                time_t at = timegm(&tm), now = time(NULL); /* an HTTP-date */
                r->retry_after = at > now ? (long)(at - now) : 0;
            }
        }
        struct evbuffer *b = evhttp_request_get_input_buffer(req);
        size_t n = evbuffer_get_length(b);
        r->body = malloc(n + 1);
        if (r->body) {
            evbuffer_remove(b, r->body, n);
            r->body[n] = '\0';
            r->len = n;
        }
    } else if (!r->why[0]) {
        int e = EVUTIL_SOCKET_ERROR();
        struct bufferevent *bev = a->conn ? evhttp_connection_get_bufferevent(a->conn) : NULL;
        unsigned long ssl_err = bev ? bufferevent_get_openssl_error(bev) : 0;
        int lib = ssl_err ? ERR_GET_LIB(ssl_err) : 0;
        if (ssl_err && (lib == ERR_LIB_SSL || lib == ERR_LIB_X509 || lib == ERR_LIB_X509V3)) {
            char buf[200];
            ERR_error_string_n(ssl_err, buf, sizeof(buf));
            snprintf(r->why, sizeof(r->why), "TLS: %s", buf);
        } else {
            snprintf(r->why, sizeof(r->why), "cannot connect%s%s", e ? ": " : "",
                     e ? strerror(e) : "");
        }
    }
    a->have_answer = true;
    event_del(a->deadline);
    event_active(a->finish, EV_TIMEOUT, 0);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct acme *a = arg;
    if (a->have_answer) return;
    snprintf(a->ans.why, sizeof(a->ans.why), "no answer within %d s", ACME_TIMEOUT_S);
    a->have_answer = true;
    event_active(a->finish, EV_TIMEOUT, 0);
}

/* Sends the request described in a (req_url, req_post, req_payload):
 * a POST is signed here with the nonce held (fetched first if none). */
static void send_req(struct acme *a)
{
    char why[256] = "";
    answer_clear(&a->ans);
    a->have_answer = false;
    a->busy = true;
    struct url u;
    const char *err = netaddr_parse_url(a->req_url, true, &u);
    if (err) {
        snprintf(a->ans.why, sizeof(a->ans.why), "bad URL '%s': %s", a->req_url, err);
        a->have_answer = true;
        event_active(a->finish, EV_TIMEOUT, 0);
        return;
    }
    bool tls = strncmp(u.norm, "https://", 8) == 0;
    /* the path as written (and signed): u.norm drops a trailing '/' */
    const char *path = strstr(a->req_url, "://");
    path = path ? strchr(path + 3, '/') : NULL;
    char *body = NULL;
    if (a->req_post) {
        body = acme_jws(a->acct, a->req_jwk ? NULL : a->kid, a->nonce, a->req_url,
                        a->req_payload ? a->req_payload : "");
        free(a->nonce); /* a nonce is good for one request */
        a->nonce = NULL;
        if (!body) snprintf(why, sizeof(why), "cannot sign the request");
    }
    struct bufferevent *bev = NULL;
    struct evdns_base *dns = dns_for(a);
    if (!why[0] && !dns) snprintf(why, sizeof(why), "cannot set up DNS resolution");
    if (!why[0] && tls) {
        SSL_CTX *ctx = ssl_ctx_for(a, why, sizeof(why));
        SSL *ssl = ctx ? SSL_new(ctx) : NULL;
        if (ctx && !ssl) snprintf(why, sizeof(why), "TLS: cannot create a session");
        if (ssl) {
            bool ip = is_ip_literal(u.host);
            if (!ip) SSL_set_tlsext_host_name(ssl, u.host);
            SSL_set_verify(ssl, SSL_VERIFY_PEER, NULL);
            if (ip)
                X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), u.host);
            else
                SSL_set1_host(ssl, u.host);
            bev = bufferevent_openssl_socket_new(a->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                                 BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
            if (!bev) {
                SSL_free(ssl);
                snprintf(why, sizeof(why), "out of memory");
            } else {
                bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
            }
        }
    }
    if (!why[0]) {
        a->conn = evhttp_connection_base_bufferevent_new(a->base, dns, bev, u.host,
                                                         (unsigned short)u.port);
        if (!a->conn) {
            if (bev) bufferevent_free(bev);
            snprintf(why, sizeof(why), "out of memory");
        }
    }
    struct evhttp_request *req = NULL;
    if (!why[0]) {
        struct timeval tv = {ACME_TIMEOUT_S + 1, 0};
        evhttp_connection_set_timeout_tv(a->conn, &tv);
        evhttp_connection_set_retries(a->conn, 0);
        evhttp_connection_set_max_body_size(a->conn, ACME_MAX_BODY);
        evhttp_connection_set_max_headers_size(a->conn, ACME_MAX_HEADS);
        req = evhttp_request_new(on_request_done, a);
        if (!req) snprintf(why, sizeof(why), "out of memory");
    }
    if (!why[0]) {
        evhttp_request_set_error_cb(req, on_request_error);
        struct evkeyvalq *h = evhttp_request_get_output_headers(req);
        char host[300];
        bool dflt = u.port == (tls ? 443u : 80u);
        snprintf(host, sizeof(host), strchr(u.host, ':') ? "[%s]" : "%s", u.host);
        if (!dflt) snprintf(host + strlen(host), sizeof(host) - strlen(host), ":%u", u.port);
        bool ok = evhttp_add_header(h, "Host", host) == 0 &&
                  evhttp_add_header(h, "User-Agent", "detourd/" PACKAGE_VERSION) == 0 &&
                  evhttp_add_header(h, "Connection", "close") == 0;
        if (a->step == S_CERT)
            ok = ok && evhttp_add_header(h, "Accept", "application/pem-certificate-chain") == 0;
        if (body)
            ok = ok && evhttp_add_header(h, "Content-Type", "application/jose+json") == 0 &&
                 evbuffer_add(evhttp_request_get_output_buffer(req), body, strlen(body)) == 0;
        if (!ok) {
            evhttp_request_free(req);
            snprintf(why, sizeof(why), "cannot build the request");
        }
    }
    free(body);
    free(u.norm);
    if (why[0]) {
        snprintf(a->ans.why, sizeof(a->ans.why), "%s", why);
        a->have_answer = true;
        event_active(a->finish, EV_TIMEOUT, 0);
        return;
    }
    struct timeval tv = {ACME_TIMEOUT_S, 0};
    evtimer_add(a->deadline, &tv);
    enum evhttp_cmd_type cmd = a->req_post          ? EVHTTP_REQ_POST
                               : a->step == S_NONCE ? EVHTTP_REQ_HEAD
                                                    : EVHTTP_REQ_GET;
    if (evhttp_make_request(a->conn, req, cmd, path ? path : "/") != 0 && !a->have_answer) {
        snprintf(a->ans.why, sizeof(a->ans.why), "cannot send the request");
        a->have_answer = true;
        event_active(a->finish, EV_TIMEOUT, 0);
    }
}

/* Starts a request for step: GET url (post false), or a POST of payload
 * (NULL: POST-as-GET) signed with the account's kid (or its jwk). */
static void request(struct acme *a, enum step step, const char *url, bool post, const char *payload,
                    bool jwk)
{
    a->step = step;
    set_str(&a->req_url, url);
    set_str(&a->req_payload, payload);
    a->req_post = post;
    a->req_jwk = jwk;
    a->bad_nonces = 0;
    a->nonce_first = post && !a->nonce && a->u_nonce;
    if (a->nonce_first) { /* the last answer had none: newNonce, then this */
        a->step = S_NONCE;
        a->post_step = step;
        free(a->pend_url);
        a->pend_url = a->req_url;
        a->req_url = strdup(a->u_nonce);
        a->req_post = false;
    }
    if (!a->req_url || (payload && !a->req_payload)) {
        snprintf(a->ans.why, sizeof(a->ans.why), "out of memory");
        a->have_answer = true;
        a->busy = true;
        event_active(a->finish, EV_TIMEOUT, 0);
        return;
    }
    send_req(a);
}

static void order_fail(struct acme *a, const char *fmt, ...);

/* POSTs the JSON object j (taken: freed here) as the request for step. */
static void post_json(struct acme *a, enum step step, const char *url, json_t *j, bool jwk)
{
    char *p = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!p) {
        order_fail(a, "out of memory");
        return;
    }
    request(a, step, url, true, p, jwk);
    free(p);
}

/* "TYPE: detail" of an RFC 7807 problem document, else "HTTP N" */
static void problem_text(const struct answer *r, char *buf, size_t len)
{
    json_t *j = r->body ? json_loadb(r->body, r->len, 0, NULL) : NULL;
    const char *type = json_string_value(json_object_get(j, "type"));
    const char *detail = json_string_value(json_object_get(j, "detail"));
    if (type && !strncmp(type, "urn:ietf:params:acme:error:", 27)) type += 27;
    if (type || detail)
        snprintf(buf, len, "HTTP %d: %s%s%s", r->status, type ? type : "",
                 type && detail ? ": " : "", detail ? detail : "");
    else
        snprintf(buf, len, "HTTP %d", r->status);
    json_decref(j);
}

static bool is_bad_nonce(const struct answer *r)
{
    if (r->status != 400 || !r->body) return false;
    json_t *j = json_loadb(r->body, r->len, 0, NULL);
    const char *type = json_string_value(json_object_get(j, "type"));
    bool bad = type && strcmp(type, "urn:ietf:params:acme:error:badNonce") == 0;
    json_decref(j);
    return bad;
}

/* ---- orders ---- */

static void order_free(struct order *o)
{
    if (!o) return;
    free(o->url);
    free(o->finalize);
    free(o->cert_url);
    for (size_t i = 0; i < o->nauthz; i++) free(o->authz[i]);
    free(o->authz);
    free(o->chal_url);
    free(o->chal_key);
    free(o->token);
    if (o->keyauth) OPENSSL_cleanse(o->keyauth, strlen(o->keyauth));
    free(o->keyauth);
    X509_free(o->alpn_x509);
    EVP_PKEY_free(o->alpn_key);
    EVP_PKEY_free(o->key);
    free(o);
}

static int64_t backoff_ms(unsigned failures)
{
    int64_t ms = ACME_BACKOFF_MIN_MS;
    for (unsigned i = 1; i < failures && ms < ACME_BACKOFF_MAX_MS; i++) ms *= 2;
    return ms < ACME_BACKOFF_MAX_MS ? ms : ACME_BACKOFF_MAX_MS;
}

/* The order in hand ends: its challenge is withdrawn, the next one may go. */
static bool in_fleet(const struct acme *a)
{
    return a->fleet && fleet_acme_on(a->fleet);
}

/* Fleet: a certificate this instance obtained goes to cert/NAME, and
 * again, 5 s doubling to 10 min apart, for as long as etcd does not hold
 * it (a refused write, etcd away at that moment, a deletion) and no newer
 * one came: otherwise each instance waiting for the lock would order a
 * certificate of its own, and CAs limit duplicate certificates. */
static void share_one(struct acme *a, struct aname *n, bool at_issue)
{
    if (!n->share || !in_fleet(a)) return;
    if (n->shared_seen && n->shared_same) {
        n->share_wait_ms = 0; /* etcd holds it */
        return;
    }
    int64_t now = now_ms();
    if (now < n->share_next_ms || !fleet_acme_connected(a->fleet)) return;
    char rest[300];
    snprintf(rest, sizeof(rest), "cert/%s", n->name);
    if (!fleet_acme_put(a->fleet, rest, n->share, strlen(n->share), false)) return;
    if (!at_issue)
        log_info("acme: %s: etcd lacks the certificate this instance obtained: written again",
                 n->name);
    n->share_wait_ms = !n->share_wait_ms                          ? ACME_SHARE_FIRST_MS
                       : n->share_wait_ms * 2 > ACME_SHARE_MAX_MS ? ACME_SHARE_MAX_MS
                                                                  : n->share_wait_ms * 2;
    n->share_next_ms = now + n->share_wait_ms;
}

static void share_check(struct acme *a)
{
    for (size_t i = 0; i < a->nnames; i++) share_one(a, &a->names[i], false);
}

/* This instance's lock key for name: "lock/NAME/INSTANCE" */
static void lock_rest(const struct acme *a, const char *name, char *buf, size_t len)
{
    snprintf(buf, len, "lock/%s/%s", name, fleet_acme_instance(a->fleet));
}

/* The order's keys in etcd go with it (best effort: this instance's lease
 * takes them when it ends anyway). */
static void order_release(struct acme *a, struct order *o)
{
    if (!o || !in_fleet(a)) return;
    char rest[600];
    if (o->chal_key) fleet_acme_delete(a->fleet, o->chal_key);
    lock_rest(a, o->n->name, rest, sizeof(rest));
    if (o->lock_put) fleet_acme_delete(a->fleet, rest);
}

static void order_end(struct acme *a)
{
    struct order *o = a->ord;
    order_release(a, o);
    a->ord = NULL;
    bool had_challenge = o && (o->token || o->alpn_x509);
    order_free(o);
    if (had_challenge) publish(a);
    event_del(a->poll);
    event_del(a->odl);
    kick(a);
}

/* The order in hand is for a name whose newer certificate another
 * instance wrote to etcd (taken already): it stops before the challenge
 * is accepted or, later, before finalizing, the step that issues. */
static bool superseded_end(struct acme *a)
{
    if (!a->ord || !a->ord->superseded) return false;
    log_info("acme: %s: another instance's certificate came first: this order stops",
             a->ord->n->name);
    order_end(a);
    return true;
}

static void order_fail(struct acme *a, const char *fmt, ...)
{
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    struct order *o = a->ord;
    if (!o) { /* a request of no order (the directory for ARI): go on */
        kick(a);
        return;
    }
    if (o->superseded) { /* the name has a newer certificate: no failure, no retry */
        log_info("acme: %s: another instance's certificate came first: this order stops (%s)",
                 o->n->name, why);
        order_end(a);
        return;
    }
    struct aname *n = o->n;
    n->failures++;
    int64_t wait = backoff_ms(n->failures);
    if (a->ans.retry_after > 0) {
        long ra =
            a->ans.retry_after < ACME_MAX_RETRY_AFTER ? a->ans.retry_after : ACME_MAX_RETRY_AFTER;
        if ((int64_t)ra * 1000 > wait) wait = (int64_t)ra * 1000;
    }
    n->due_ms = now_ms() + wait;
    /* a renewal that failed keeps serving the certificate it has */
    n->state = n->x509 ? NS_VALID : NS_FAILED;
    if (n->x509 && n->due_ms > (int64_t)n->not_after * 1000) n->state = NS_FAILED;
    set_str(&n->last_error, why);
    a->failed++;
    log_warn("acme: %s: order failed: %s (next try in %lld s)", n->name, why,
             (long long)(wait / 1000));
    event_emit_certificate(n->name, "failed", why);
    order_end(a);
}

static bool want_ok(struct acme *a, int lo, int hi, const char *what)
{
    const struct answer *r = &a->ans;
    if (r->status >= lo && r->status <= hi) return true;
    if (r->status == 0) {
        order_fail(a, "%s: %s", what, r->why[0] ? r->why : "no answer");
    } else {
        char p[400];
        problem_text(r, p, sizeof(p));
        order_fail(a, "%s: %s", what, p);
    }
    return false;
}

static json_t *answer_json(struct acme *a, const char *what)
{
    json_t *j = a->ans.body ? json_loadb(a->ans.body, a->ans.len, 0, NULL) : NULL;
    if (!json_is_object(j)) {
        json_decref(j);
        order_fail(a, "%s: the answer is not a JSON object", what);
        return NULL;
    }
    return j;
}

static void next_step(struct acme *a);

static void poll_later(struct acme *a, enum step step)
{
    struct order *o = a->ord;
    if (++o->polls > ACME_MAX_POLLS) {
        order_fail(a, "%s still pending after %d polls",
                   step == S_POLL_AUTHZ ? "the authorization" : "the order", ACME_MAX_POLLS);
        return;
    }
    long s = a->ans.retry_after;
    int64_t ms = s > 0 ? (s < 60 ? s : 60) * 1000 : ACME_POLL_MS;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    a->step = step;
    evtimer_add(a->poll, &tv);
}

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct acme *a = arg;
    struct order *o = a->ord;
    if (!o) return;
    if (a->step == S_POLL_AUTHZ)
        request(a, S_POLL_AUTHZ, o->authz[o->iauthz], true, NULL, false);
    else
        request(a, S_POLL_ORDER, o->url, true, NULL, false);
}

struct lock_scan {
    const char *me;
    int64_t min_rev, my_rev;
    const char *holder;
    char holder_buf[128];
};

static void scan_lock(void *arg, const char *rest, const char *val, size_t len, int64_t rev)
{
    (void)val, (void)len;
    struct lock_scan *ls = arg;
    const char *inst = strrchr(rest, '/') + 1;
    if (!strcmp(inst, ls->me)) ls->my_rev = rev;
    if (!ls->min_rev || rev < ls->min_rev) {
        ls->min_rev = rev;
        snprintf(ls->holder_buf, sizeof(ls->holder_buf), "%s", inst);
        ls->holder = ls->holder_buf;
    }
}

/* The instance names (the last part of each key) under sub. */
struct names_scan {
    char (*v)[FLEET_NAME_LEN];
    size_t n, max;
};

static void scan_names(void *arg, const char *rest, const char *val, size_t len, int64_t rev)
{
    (void)val, (void)len, (void)rev;
    struct names_scan *ns = arg;
    if (ns->n < ns->max) snprintf(ns->v[ns->n++], FLEET_NAME_LEN, "%s", strrchr(rest, '/') + 1);
}

/* This instance holds the lock of o's name: its key is there, the oldest. */
static bool holds_lock(struct acme *a, const struct order *o, struct lock_scan *ls)
{
    char sub[600];
    snprintf(sub, sizeof(sub), "lock/%s/", o->n->name);
    memset(ls, 0, sizeof(*ls));
    ls->me = fleet_acme_instance(a->fleet);
    fleet_acme_each(a->fleet, sub, scan_lock, ls);
    return ls->my_rev && ls->my_rev == ls->min_rev;
}

/* Every instance of the fleet (acme/member/) acknowledged the challenge
 * answer (acme/seen/...); or, after ACME_ACK_WAIT_MS, the ones that did. */
static bool acks_done(struct acme *a, struct order *o)
{
    static char members[64][FLEET_NAME_LEN], acked[64][FLEET_NAME_LEN];
    struct names_scan m = {.v = members, .max = 64}, k = {.v = acked, .max = 64};
    char sub[700];
    fleet_acme_each(a->fleet, "member/", scan_names, &m);
    snprintf(sub, sizeof(sub), "seen/%s/", o->chal_key);
    fleet_acme_each(a->fleet, sub, scan_names, &k);
    char missing[300] = "";
    for (size_t i = 0; i < m.n; i++) {
        size_t j = 0;
        while (j < k.n && strcmp(members[i], acked[j]) != 0) j++;
        if (j == k.n)
            snprintf(missing + strlen(missing), sizeof(missing) - strlen(missing), "%s%.80s",
                     missing[0] ? ", " : "", members[i]);
    }
    bool mine = false; /* at least this instance has it back from etcd */
    for (size_t j = 0; j < k.n; j++) mine |= !strcmp(acked[j], fleet_acme_instance(a->fleet));
    if (mine && !missing[0]) return true;
    if (now_ms() - o->acks_since_ms < ACME_ACK_WAIT_MS) return false;
    log_warn("acme: %s: after %d s, not every instance has the challenge answer (%s): "
             "accepting it anyway",
             o->n->name, ACME_ACK_WAIT_MS / 1000, missing[0] ? missing : "this one");
    return true;
}

/* Next authorization, or finalize once all are valid. */
static void authz_next(struct acme *a)
{
    struct order *o = a->ord;
    if (o->iauthz < o->nauthz) {
        o->polls = 0;
        request(a, S_AUTHZ, o->authz[o->iauthz], true, NULL, false);
        return;
    }
    if (superseded_end(a)) return;
    /* all valid: in a fleet, still the lock's holder? */
    struct lock_scan ls;
    if (in_fleet(a) && !holds_lock(a, o, &ls)) {
        order_fail(a, "this instance lost the fleet's lock (%s holds it)",
                   ls.holder ? ls.holder : "nobody");
        return;
    }
    /* the certificate's key and the CSR */
    const char *names[1] = {o->n->name};
    o->key = acme_key_new(a->cfg->key_type);
    char *csr = o->key ? acme_csr(o->key, names, 1) : NULL;
    if (!csr) {
        order_fail(a, "cannot make the CSR");
        return;
    }
    json_t *j = json_pack("{s:s}", "csr", csr);
    free(csr);
    o->polls = 0;
    post_json(a, S_FINALIZE, o->finalize, j, false);
}

/* The challenge for authorization j: the first of the configured kinds
 * that it offers. Published before it is accepted: the validator may come
 * at once. */
static void take_challenge(struct acme *a, json_t *j)
{
    struct order *o = a->ord;
    json_t *chs = json_object_get(j, "challenges");
    json_t *pick = NULL;
    bool alpn = false;
    for (int pass = 0; pass < 2 && !pick; pass++) {
        bool want_alpn = a->cfg->prefer_alpn ? pass == 0 : pass == 1;
        if (want_alpn ? !a->cfg->tlsalpn01 : !a->cfg->http01) continue;
        size_t i;
        json_t *c;
        json_array_foreach(chs, i, c)
        {
            const char *type = json_string_value(json_object_get(c, "type"));
            if (type && strcmp(type, want_alpn ? "tls-alpn-01" : "http-01") == 0) {
                pick = c;
                alpn = want_alpn;
                break;
            }
        }
    }
    const char *url = json_string_value(json_object_get(pick, "url"));
    const char *token = json_string_value(json_object_get(pick, "token"));
    if (!pick || !url || !token) {
        order_fail(a, "the authorization offers none of the challenges configured (%s%s%s)",
                   a->cfg->http01 ? "http-01" : "", a->cfg->http01 && a->cfg->tlsalpn01 ? ", " : "",
                   a->cfg->tlsalpn01 ? "tls-alpn-01" : "");
        return;
    }
    /* a token is base64url (RFC 8555 8.1): nothing else may reach a path */
    if (strspn(token, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") !=
            strlen(token) ||
        strlen(token) > 256 || !token[0]) {
        order_fail(a, "the challenge's token is not base64url");
        return;
    }
    set_str(&o->chal_url, url);
    set_str(&o->token, token);
    free(o->keyauth);
    o->keyauth = acme_keyauth(token, a->thumb);
    o->chal_alpn = alpn;
    X509_free(o->alpn_x509);
    EVP_PKEY_free(o->alpn_key);
    o->alpn_x509 = NULL;
    o->alpn_key = NULL;
    if (!o->keyauth || !o->chal_url || !o->token ||
        (alpn && !acme_alpn_cert(o->n->name, o->keyauth, &o->alpn_x509, &o->alpn_key))) {
        order_fail(a, "cannot prepare the %s answer", alpn ? "tls-alpn-01" : "http-01");
        return;
    }
    publish(a);
    log_info("acme: %s: answering %s", o->n->name, alpn ? "tls-alpn-01" : "http-01");
    if (in_fleet(a)) {
        /* every instance answers it: accepted once etcd has it back */
        char rest[600];
        snprintf(rest, sizeof(rest), alpn ? "alpn/%s" : "http01/%s", alpn ? o->n->name : token);
        set_str(&o->chal_key, rest);
        if (!o->chal_key || !fleet_acme_put(a->fleet, rest, o->keyauth, strlen(o->keyauth), true)) {
            order_fail(a, "cannot publish the challenge answer in etcd (not connected)");
            return;
        }
        o->acks_wait = true;
        o->acks_since_ms = now_ms();
        return;
    }
    request(a, S_CHALLENGE, o->chal_url, true, "{}", false);
}

/* The answer to an authorization (fetched or polled). */
static void on_authz(struct acme *a, bool polled)
{
    struct order *o = a->ord;
    if (!want_ok(a, 200, 299, "authorization")) return;
    json_t *j = answer_json(a, "authorization");
    if (!j) return;
    const char *st = json_string_value(json_object_get(j, "status"));
    if (st && strcmp(st, "valid") == 0) {
        json_decref(j);
        o->iauthz++;
        if (o->token || o->alpn_x509) {
            free(o->token);
            o->token = NULL;
            X509_free(o->alpn_x509);
            o->alpn_x509 = NULL;
            EVP_PKEY_free(o->alpn_key);
            o->alpn_key = NULL;
            if (o->chal_key && in_fleet(a)) fleet_acme_delete(a->fleet, o->chal_key);
            free(o->chal_key);
            o->chal_key = NULL;
            publish(a); /* the challenge is answered: withdrawn */
        }
        authz_next(a);
        return;
    }
    if (st && strcmp(st, "pending") == 0) {
        if (polled)
            poll_later(a, S_POLL_AUTHZ);
        else
            take_challenge(a, j);
        json_decref(j);
        return;
    }
    /* invalid (or expired, deactivated, revoked): the challenge's error says why */
    char why[400] = "";
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(j, "challenges"), i, c)
    {
        json_t *e = json_object_get(c, "error");
        const char *d = json_string_value(json_object_get(e, "detail"));
        const char *t = json_string_value(json_object_get(e, "type"));
        if (t && !strncmp(t, "urn:ietf:params:acme:error:", 27)) t += 27;
        if (d || t) {
            snprintf(why, sizeof(why), ": %s%s%s", t ? t : "", t && d ? ": " : "", d ? d : "");
            break;
        }
    }
    order_fail(a, "the authorization is %s%s", st ? st : "not valid", why);
    json_decref(j);
}

/* The order object (after newOrder, finalize or a poll). */
static void on_order_object(struct acme *a)
{
    struct order *o = a->ord;
    json_t *j = answer_json(a, "order");
    if (!j) return;
    const char *st = json_string_value(json_object_get(j, "status"));
    const char *cert = json_string_value(json_object_get(j, "certificate"));
    if (st && strcmp(st, "valid") == 0 && cert) {
        set_str(&o->cert_url, cert);
        json_decref(j);
        request(a, S_CERT, o->cert_url, true, NULL, false);
        return;
    }
    if (st && (strcmp(st, "processing") == 0 || (strcmp(st, "ready") == 0 && a->step != S_ORDER))) {
        json_decref(j);
        poll_later(a, S_POLL_ORDER);
        return;
    }
    if (st && strcmp(st, "invalid") == 0) {
        json_t *e = json_object_get(j, "error");
        const char *d = json_string_value(json_object_get(e, "detail"));
        order_fail(a, "the order is invalid%s%s", d ? ": " : "", d ? d : "");
        json_decref(j);
        return;
    }
    if (a->step != S_ORDER || !st || (strcmp(st, "pending") != 0 && strcmp(st, "ready") != 0)) {
        order_fail(a, "the order is '%s' after %s", st ? st : "without a status",
                   a->step == S_FINALIZE ? "finalize"
                   : a->step == S_ORDER  ? "newOrder"
                                         : "a poll");
        json_decref(j);
        return;
    }
    /* pending or ready after newOrder: the authorizations */
    json_t *az = json_object_get(j, "authorizations");
    const char *fin = json_string_value(json_object_get(j, "finalize"));
    if (!json_is_array(az) || !fin || json_array_size(az) == 0 || json_array_size(az) > 100) {
        order_fail(a, "the order has no authorizations or no finalize URL");
        json_decref(j);
        return;
    }
    set_str(&o->finalize, fin);
    size_t want = json_array_size(az);
    for (size_t k = 0; k < o->nauthz; k++) free(o->authz[k]);
    free(o->authz);
    o->nauthz = 0;
    o->authz = calloc(want, sizeof(*o->authz));
    size_t i;
    json_t *v;
    json_array_foreach(az, i, v)
    {
        if (o->authz && json_string_value(v)) o->authz[o->nauthz++] = strdup(json_string_value(v));
    }
    json_decref(j);
    if (!o->authz || !o->finalize || o->nauthz != want) {
        order_fail(a, "out of memory");
        return;
    }
    o->iauthz = 0;
    authz_next(a);
}

static void on_certificate(struct acme *a)
{
    struct order *o = a->ord;
    struct aname *n = o->n;
    X509 *x = NULL;
    STACK_OF(X509) *chain = NULL;
    if (!acme_chain_parse(a->ans.body, a->ans.len, &x, &chain)) {
        order_fail(a, "the certificate download is not a PEM chain");
        return;
    }
    if (!acme_cert_key_match(x, o->key) || !acme_cert_covers(x, n->name)) {
        X509_free(x);
        sk_X509_pop_free(chain, X509_free);
        order_fail(a, "the certificate issued does not match the key or the name");
        return;
    }
    char why[512];
    char *kp = acme_key_pem(o->key);
    bool ok = kp && store_pair(a, n->name, kp, a->ans.body, a->ans.len, why, sizeof(why));
    char *share = NULL; /* every instance serves it (cert/NAME, no lease: it outlives us) */
    if (kp && in_fleet(a)) {
        json_t *j = json_pack("{s:s%, s:s}", "cert", a->ans.body, a->ans.len, "key", kp);
        share = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        if (!share)
            log_warn("acme: %s: cannot share the certificate in etcd (out of memory): the other "
                     "instances order their own",
                     n->name);
        else if (!fleet_acme_connected(a->fleet))
            log_warn("acme: %s: etcd is not reachable: the certificate goes there once it is",
                     n->name);
    }
    if (!ok)
        log_warn("acme: %s: the certificate is served but not kept: %s", n->name,
                 kp ? why : "out of memory");
    if (kp) OPENSSL_cleanse(kp, strlen(kp)), free(kp);
    bool renewed = n->x509 != NULL;
    name_take(n, x, o->key, chain);
    o->key = NULL;
    a->issued++;
    char t[32];
    iso_time(n->not_after, t, sizeof(t));
    log_info("acme: %s: certificate %s (expires %s)", n->name, renewed ? "renewed" : "issued", t);
    event_emit_certificate(n->name, renewed ? "renewed" : "issued", NULL);
    name_unshare(n);
    n->share = share;
    share_one(a, n, true);
    order_end(a); /* publishes: the challenge is gone, the certificate in */
    publish(a);
}

/* ARI (RFC 9773): the suggested window moves the renewal. */
static void on_ari(struct acme *a)
{
    struct aname *n = a->ari_for;
    a->ari_for = NULL;
    if (!n) {
        kick(a);
        return;
    }
    /* asked again when the server says (RFC 9773 4.3: Retry-After), else
     * every 6 h; an error: in an hour */
    long ra = a->ans.retry_after;
    int64_t again = a->ans.status != 200 ? 3600 : ra > 0 ? (ra < 86400 ? ra : 86400) : 6 * 3600;
    if (ra > 0 && ra < 60) again = 60;
    n->ari_next_ms = now_ms() + again * 1000;
    if (a->ans.status != 200) {
        kick(a);
        return;
    }
    json_t *j = json_loadb(a->ans.body ? a->ans.body : "", a->ans.len, 0, NULL);
    json_t *w = json_object_get(j, "suggestedWindow");
    const char *s = json_string_value(json_object_get(w, "start"));
    const char *e = json_string_value(json_object_get(w, "end"));
    struct tm ts = {0}, te = {0};
    if (s && e && strptime(s, "%Y-%m-%dT%H:%M:%S", &ts) && strptime(e, "%Y-%m-%dT%H:%M:%S", &te)) {
        time_t t0 = timegm(&ts), t1 = timegm(&te);
        if (t1 >= t0 && t0 > 0) {
            uint32_t r = 0;
            RAND_bytes((unsigned char *)&r, sizeof(r));
            time_t at = t0 + (t1 > t0 ? (time_t)(r % (uint32_t)(t1 - t0)) : 0);
            if (at > n->not_after - 300) at = n->not_after - 300; /* never past the end */
            n->next_renewal = at;
            n->due_ms = (int64_t)at * 1000;
        }
    }
    json_decref(j);
    kick(a);
}

/* What each answer leads to. */
static void next_step(struct acme *a)
{
    struct answer *r = &a->ans;
    struct order *o = a->ord;
    switch (a->step) {
    case S_DIRECTORY: {
        if (!want_ok(a, 200, 200, "directory")) return;
        json_t *j = answer_json(a, "directory");
        if (!j) return;
        const char *nn = json_string_value(json_object_get(j, "newNonce"));
        const char *na = json_string_value(json_object_get(j, "newAccount"));
        const char *no = json_string_value(json_object_get(j, "newOrder"));
        const char *ri = json_string_value(json_object_get(j, "renewalInfo"));
        if (!nn || !na || !no) {
            json_decref(j);
            order_fail(a, "directory: newNonce, newAccount or newOrder missing");
            return;
        }
        set_str(&a->u_nonce, nn);
        set_str(&a->u_account, na);
        set_str(&a->u_order, no);
        set_str(&a->u_ari, ri && *ri ? ri : NULL);
        json_decref(j);
        a->have_dir = true;
        if (!a->u_ari) /* no ARI: the lifetime rule alone */
            for (size_t i = 0; i < a->nnames; i++) a->names[i].ari_next_ms = INT64_MAX;
        if (!a->ord) {
            on_timer(-1, 0, a);
            return;
        }
        kick(a);
        return;
    }
    case S_NONCE:
        if (!a->nonce) {
            a->nonce_first = false;
            order_fail(a, "newNonce: %s",
                       r->status   ? "no Replay-Nonce in the answer"
                       : r->why[0] ? r->why
                                   : "failed");
            return;
        }
        if (a->nonce_first) { /* the POST that needed it */
            a->nonce_first = false;
            a->step = a->post_step;
            free(a->req_url);
            a->req_url = a->pend_url;
            a->pend_url = NULL;
            a->req_post = true;
            send_req(a);
            return;
        }
        kick(a);
        return;
    case S_ACCOUNT: {
        if (!want_ok(a, 200, 201, "newAccount")) return;
        if (!r->location) {
            order_fail(a, "newAccount: no account URL (Location) in the answer");
            return;
        }
        set_str(&a->kid, r->location);
        log_info("acme: account %s at %s", a->kid, a->cfg->directory);
        save_account_url(a);
        kick(a);
        return;
    }
    case S_ORDER:
        if (r->status >= 400 && r->status < 500 && o->replaced) {
            /* the server would not take "replaces" (already replaced, or a
             * certificate it does not know): once more without it */
            o->replaced = false;
            o->no_replaces = true;
            kick(a);
            return;
        }
        if (!want_ok(a, 201, 201, "newOrder")) return;
        if (!r->location) {
            order_fail(a, "newOrder: no order URL (Location) in the answer");
            return;
        }
        set_str(&o->url, r->location);
        on_order_object(a);
        return;
    case S_AUTHZ: on_authz(a, false); return;
    case S_POLL_AUTHZ: on_authz(a, true); return;
    case S_CHALLENGE:
        if (!want_ok(a, 200, 299, "challenge")) return;
        o->polls = 0;
        poll_later(a, S_POLL_AUTHZ);
        return;
    case S_FINALIZE:
    case S_POLL_ORDER:
        if (!want_ok(a, 200, 299, a->step == S_FINALIZE ? "finalize" : "order")) return;
        on_order_object(a);
        return;
    case S_CERT:
        if (!want_ok(a, 200, 200, "certificate download")) return;
        on_certificate(a);
        return;
    case S_ARI: on_ari(a); return;
    }
}

/* An answer is in (or the request failed): the connection goes, the
 * nonce is kept, a badNonce is retried, the step goes on. */
static void on_finish(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct acme *a = arg;
    conn_close(a);
    a->busy = false;
    if (a->ans.nonce) {
        free(a->nonce);
        a->nonce = a->ans.nonce;
        a->ans.nonce = NULL;
    }
    if (a->req_post && is_bad_nonce(&a->ans) && a->nonce && a->bad_nonces < ACME_MAX_BAD_NONCE) {
        a->bad_nonces++;
        log_debug("acme: badNonce from %s: signing again with the fresh nonce", a->req_url);
        send_req(a);
        return;
    }
    if (a->step == S_ARI && !a->ord) {
        on_ari(a);
        return;
    }
    if (a->step == S_DIRECTORY && !a->ord) { /* fetched for ARI */
        struct aname *n = a->ari_for;
        a->ari_for = NULL;
        if (a->ans.status == 200) {
            next_step(a);
        } else {
            if (n) n->ari_next_ms = now_ms() + 3600 * 1000;
            kick(a);
        }
        return;
    }
    if (!a->ord) { /* the order was dropped (a reload) while its request ran */
        kick(a);
        return;
    }
    next_step(a);
}

/* ---- scheduling ---- */

static void arm_timer(struct acme *a)
{
    int64_t due = INT64_MAX;
    for (size_t i = 0; i < a->nnames; i++) {
        if (a->names[i].due_ms < due) due = a->names[i].due_ms;
        if (a->names[i].x509 && a->names[i].ari_next_ms < due) due = a->names[i].ari_next_ms;
    }
    event_del(a->timer);
    if (due == INT64_MAX) return;
    int64_t wait = due - now_ms();
    if (wait < 0) wait = 0;
    if (wait > 86400000) wait = 86400000; /* woken daily at least: clocks move */
    struct timeval tv = {(time_t)(wait / 1000), (suseconds_t)(wait % 1000) * 1000};
    evtimer_add(a->timer, &tv);
}

/* Goes on with whatever is next: the directory, a nonce, the account, an
 * order for a name that is due, or the renewal information of one. */
static void kick(struct acme *a)
{
    if (!a->cfg || a->busy || event_pending(a->poll, EV_TIMEOUT, NULL)) return;
    /* in a fleet, nothing before the fleet is followed (on_fleet kicks) */
    if (a->want_fleet && !in_fleet(a)) return;
    struct order *o = a->ord;
    int64_t now = now_ms();
    if (!o) {
        struct aname *due = NULL;
        for (size_t i = 0; i < a->nnames; i++)
            if (a->names[i].due_ms <= now && (!due || a->names[i].due_ms < due->due_ms))
                due = &a->names[i];
        if (!due) {
            arm_timer(a);
            return;
        }
        if (!(o = calloc(1, sizeof(*o)))) {
            log_error("acme: out of memory");
            arm_timer(a);
            return;
        }
        o->n = due;
        o->renewal = due->x509 != NULL;
        o->started_ms = now;
        a->ord = o;
        due->due_ms = INT64_MAX;
        if (due->state != NS_VALID) due->state = NS_ORDERING;
        log_info("acme: %s: %s", due->name,
                 o->renewal ? "renewing the certificate" : "ordering a certificate");
        answer_clear(&a->ans);
        o->lock_wait = a->want_fleet; /* one instance at a time orders a name */
        if (!o->lock_wait) {
            struct timeval tv = {ACME_ORDER_DEADLINE_S, 0};
            evtimer_add(a->odl, &tv);
        }
    }
    if (o->lock_wait) {
        char rest[600];
        if (o->lock_put || !fleet_acme_connected(a->fleet)) return; /* on_fleet goes on */
        lock_rest(a, o->n->name, rest, sizeof(rest));
        const char *me = fleet_acme_instance(a->fleet);
        if (!fleet_acme_put(a->fleet, rest, me, strlen(me), true)) return;
        o->lock_put = true;
        o->lock_lease = fleet_acme_lease(a->fleet);
        o->lock_put_ms = now_ms();
        return;
    }
    if (o->acks_wait) return;
    if (!a->acct) {
        char why[512] = "";
        if (!load_account_key(a, why, sizeof(why))) {
            order_fail(a, "%s", why);
            return;
        }
        free(a->thumb);
        a->thumb = acme_thumbprint(a->acct);
    }
    if (!a->have_dir) {
        request(a, S_DIRECTORY, a->cfg->directory, false, NULL, false);
        return;
    }
    if (!a->nonce) {
        request(a, S_NONCE, a->u_nonce, false, NULL, false);
        return;
    }
    if (!a->kid) {
        json_t *j = json_pack("{s:b}", "termsOfServiceAgreed", 1);
        json_t *c = json_array();
        for (size_t i = 0; i < a->cfg->ncontact; i++)
            json_array_append_new(c, json_string(a->cfg->contact[i]));
        if (a->cfg->ncontact) json_object_set(j, "contact", c);
        json_decref(c);
        if (a->cfg->eab_kid) {
            char why[256];
            size_t n;
            struct file_error fe;
            char *key = file_read(a->cfg->eab_hmac_file, 4096, &n, &fe);
            unsigned char *hmac = NULL;
            size_t hl = 0;
            while (key && n && (key[n - 1] == '\n' || key[n - 1] == '\r' || key[n - 1] == ' ')) n--;
            char *eab = key && b64url_decode(key, n, &hmac, &hl)
                            ? acme_eab(a->cfg->eab_kid, hmac, hl, a->acct, a->u_account)
                            : NULL;
            if (key) file_free(key, n);
            if (hmac) OPENSSL_cleanse(hmac, hl), free(hmac);
            json_t *e = eab ? json_loadb(eab, strlen(eab), 0, NULL) : NULL;
            free(eab);
            if (!e) {
                json_decref(j);
                snprintf(why, sizeof(why), "%s", a->cfg->eab_hmac_file);
                order_fail(a,
                           "external account binding: cannot use the HMAC key in %s "
                           "(base64url expected)",
                           why);
                return;
            }
            json_object_set_new(j, "externalAccountBinding", e);
        }
        post_json(a, S_ACCOUNT, a->u_account, j, true);
        return;
    }
    /* the order: ARI asks first whether the held certificate's window moved */
    json_t *j = json_pack("{s:[{s:s,s:s}]}", "identifiers", "type", "dns", "value", o->n->name);
    if (j && o->renewal && a->u_ari && o->n->x509 && !o->no_replaces) {
        char *id = acme_ari_id(o->n->x509);
        if (id) json_object_set_new(j, "replaces", json_string(id));
        o->replaced = id != NULL;
        free(id);
    }
    post_json(a, S_ORDER, a->u_order, j, false);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct acme *a = arg;
    /* ARI: a certificate held whose window is to be asked for (the
     * directory fetched first, to know whether the server has ARI) */
    int64_t now = now_ms();
    for (size_t i = 0; !a->busy && !a->ord && a->cfg && i < a->nnames; i++) {
        struct aname *n = &a->names[i];
        if (!n->x509 || n->ari_next_ms > now) continue;
        if (!a->have_dir) {
            a->ari_for = n;
            request(a, S_DIRECTORY, a->cfg->directory, false, NULL, false);
            return;
        }
    }
    if (!a->busy && !a->ord && a->have_dir && a->u_ari) {
        for (size_t i = 0; i < a->nnames; i++) {
            struct aname *n = &a->names[i];
            if (!n->x509 || n->ari_next_ms > now) continue;
            n->ari_next_ms = now + 3600 * 1000; /* until the answer says otherwise */
            char *id = acme_ari_id(n->x509);
            if (!id) continue;
            char url[2048];
            snprintf(url, sizeof(url), "%s%s%s", a->u_ari,
                     a->u_ari[strlen(a->u_ari) - 1] == '/' ? "" : "/", id);
            free(id);
            a->ari_for = n;
            request(a, S_ARI, url, false, NULL, false);
            return;
        }
    }
    kick(a);
}

/* ---- the fleet: shared certificates, locks, challenge answers ---- */

static void shared_free(struct shared_chal *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].id);
        if (v[i].keyauth) OPENSSL_cleanse(v[i].keyauth, strlen(v[i].keyauth));
        free(v[i].keyauth);
        X509_free(v[i].x509);
        EVP_PKEY_free(v[i].key);
    }
    free(v);
}

struct collect {
    struct acme *a;
    struct shared_chal *v;
    size_t n, cap;
    bool alpn;
    bool changed;
};

/* one "http01/TOKEN" or "alpn/NAME": kept (its certificate reused when
 * the answer is the same), or added */
static void collect_chal(void *arg, const char *rest, const char *val, size_t len, int64_t rev)
{
    (void)rev;
    struct collect *c = arg;
    const char *id = strchr(rest, '/') + 1;
    if (!*id || len == 0 || len > 1024 || memchr(val, '\0', len)) return;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 4;
        struct shared_chal *nv = realloc(c->v, cap * sizeof(*nv));
        if (!nv) return;
        c->v = nv;
        c->cap = cap;
    }
    struct shared_chal *s = &c->v[c->n];
    memset(s, 0, sizeof(*s));
    struct shared_chal *old = c->alpn ? c->a->salpn : c->a->stok;
    size_t nold = c->alpn ? c->a->nsalpn : c->a->nstok;
    for (size_t i = 0; i < nold; i++) {
        if (old[i].id && !strcmp(old[i].id, id) && strlen(old[i].keyauth) == len &&
            !memcmp(old[i].keyauth, val, len)) {
            *s = old[i];
            memset(&old[i], 0, sizeof(old[i]));
            c->n++;
            return;
        }
    }
    s->id = strdup(id);
    s->keyauth = strndup(val, len);
    if (!s->id || !s->keyauth ||
        (c->alpn && !acme_alpn_cert(s->id, s->keyauth, &s->x509, &s->key))) {
        free(s->id);
        free(s->keyauth);
        return;
    }
    c->changed = true;
    c->n++;
}

/* acme/seen/KIND/ID/INSTANCE: this instance serves that answer */
static void seen_rest(const struct acme *a, bool alpn, const char *id, char *buf, size_t len)
{
    snprintf(buf, len, "seen/%s/%s/%s", alpn ? "alpn" : "http01", id,
             fleet_acme_instance(a->fleet));
}

/* The challenge answers as etcd has them now (the holder's own among
 * them); each one this instance serves is acknowledged under its lease,
 * so that the holder accepts the challenge once every instance answers
 * it. True if they changed. */
static bool refresh_challenges(struct acme *a)
{
    bool changed = false;
    int64_t lease = fleet_acme_lease(a->fleet);
    char rest[700];
    for (int alpn = 0; alpn < 2; alpn++) {
        struct collect c = {.a = a, .alpn = alpn};
        fleet_acme_each(a->fleet, alpn ? "alpn/" : "http01/", collect_chal, &c);
        struct shared_chal **v = alpn ? &a->salpn : &a->stok;
        size_t *n = alpn ? &a->nsalpn : &a->nstok;
        for (size_t i = 0; i < *n; i++) {
            if (!(*v)[i].id) continue;
            changed = true; /* one went: its acknowledgement too */
            seen_rest(a, alpn, (*v)[i].id, rest, sizeof(rest));
            if ((*v)[i].acked) fleet_acme_delete(a->fleet, rest);
        }
        changed |= c.changed;
        shared_free(*v, *n);
        *v = c.v;
        *n = c.n;
        for (size_t i = 0; i < *n && lease; i++) {
            struct shared_chal *sc = &(*v)[i];
            if (sc->acked == lease) continue;
            seen_rest(a, alpn, sc->id, rest, sizeof(rest));
            if (fleet_acme_put(a->fleet, rest, "1", 1, true)) sc->acked = lease;
        }
    }
    return changed;
}

struct adopt {
    struct acme *a;
    bool changed;
};

/* "cert/NAME": a certificate another instance ordered, taken when it is
 * newer than the one held */
static void adopt_cert(void *arg, const char *rest, const char *val, size_t len, int64_t rev)
{
    struct adopt *ad = arg;
    struct acme *a = ad->a;
    const char *name = rest + 5;
    struct aname *n = NULL;
    for (size_t i = 0; i < a->nnames; i++)
        if (!strcmp(a->names[i].name, name)) n = &a->names[i];
    if (!n) return;
    n->shared_seen = true;
    if (n->shared_rev == rev) return;
    n->shared_rev = rev;
    json_t *j = json_loadb(val, len, 0, NULL);
    const char *cert = json_string_value(json_object_get(j, "cert"));
    const char *key = json_string_value(json_object_get(j, "key"));
    X509 *x = NULL;
    STACK_OF(X509) *chain = NULL;
    EVP_PKEY *k = key ? acme_key_from_pem(key, strlen(key)) : NULL;
    bool ok = cert && k && acme_chain_parse(cert, strlen(cert), &x, &chain) &&
              acme_cert_key_match(x, k) && acme_cert_covers(x, name);
    time_t na = ok ? acme_not_after(x) : 0, nb = ok ? acme_not_before(x) : 0;
    n->shared_same = ok && n->x509 && X509_cmp(x, n->x509) == 0;
    /* newer: issued later (a renewal may end before what it replaces) */
    bool newer = !n->x509 || nb > n->not_before || (nb == n->not_before && na > n->not_after);
    if (!ok || na <= time(NULL) || !newer) {
        if (!ok) log_warn("acme: %s: the certificate in etcd is unusable: ignored", name);
        X509_free(x);
        sk_X509_pop_free(chain, X509_free);
        EVP_PKEY_free(k);
        json_decref(j);
        return;
    }
    char why[512];
    if (!store_pair(a, name, key, cert, strlen(cert), why, sizeof(why)))
        log_warn("acme: %s: the fleet's certificate is served but not kept: %s", name, why);
    json_decref(j);
    name_take(n, x, k, chain);
    name_unshare(n); /* a newer one than this instance's is in etcd */
    char t[32];
    iso_time(na, t, sizeof(t));
    log_info("acme: %s: serving the certificate another instance ordered (expires %s)", name, t);
    /* ordering it: nothing to order any more (waiting for the lock: stop
     * now; further on: before finalizing, the step that issues) */
    if (a->ord && a->ord->n == n) {
        if (a->ord->lock_wait)
            order_end(a);
        else
            a->ord->superseded = true;
    }
    ad->changed = true;
}

struct member_look {
    const char *rest;
    bool there;
};

static void member_seen(void *arg, const char *rest, const char *val, size_t len, int64_t rev)
{
    (void)val, (void)len, (void)rev;
    struct member_look *ml = arg;
    if (!strcmp(rest, ml->rest)) ml->there = true;
}

/* No ACME here any more (a reload took the section away): the member key
 * goes, so that no holder waits for this instance's acknowledgements
 * until its lease ends. Tried again at each change while the key is there. */
static void member_withdraw(struct acme *a)
{
    a->member_lease = 0;
    if (!in_fleet(a) || !fleet_acme_connected(a->fleet)) return;
    char rest[300];
    snprintf(rest, sizeof(rest), "member/%s", fleet_acme_instance(a->fleet));
    struct member_look ml = {rest, false};
    fleet_acme_each(a->fleet, rest, member_seen, &ml);
    if (ml.there) fleet_acme_delete(a->fleet, rest);
}

/* Keys under PREFIX acme/ changed, etcd is back, or the re-check timer:
 * shared certificates are taken, challenge answers served and
 * acknowledged, and the order in hand goes on where it waits on the
 * fleet. */
static void on_fleet(void *arg)
{
    struct acme *a = arg;
    if (!a->cfg) member_withdraw(a);
    if (!a->cfg || !in_fleet(a)) return;
    int64_t lease = fleet_acme_lease(a->fleet);
    if (lease && a->member_lease != lease && fleet_acme_connected(a->fleet)) {
        char rest[300];
        snprintf(rest, sizeof(rest), "member/%s", fleet_acme_instance(a->fleet));
        if (fleet_acme_put(a->fleet, rest, "1", 1, true)) a->member_lease = lease;
    }
    struct adopt ad = {.a = a};
    for (size_t i = 0; i < a->nnames; i++) a->names[i].shared_seen = false;
    fleet_acme_each(a->fleet, "cert/", adopt_cert, &ad);
    share_check(a);
    if (refresh_challenges(a) || ad.changed) publish(a);
    struct order *o = a->ord;
    struct lock_scan ls;
    if (o && o->lock_wait && o->lock_put) {
        if (holds_lock(a, o, &ls)) {
            o->lock_wait = false;
            o->started_ms = now_ms();
            struct timeval tv = {ACME_ORDER_DEADLINE_S, 0};
            evtimer_add(a->odl, &tv);
            log_info("acme: %s: this instance holds the fleet's lock: ordering", o->n->name);
        } else if (!ls.my_rev && (lease != o->lock_lease || now_ms() - o->lock_put_ms > 5000)) {
            o->lock_put = false; /* the put was lost (refused, or its lease ended): again */
        } else if (ls.my_rev) {
            log_debug("acme: %s: %s orders it (the fleet's lock)", o->n->name,
                      ls.holder ? ls.holder : "another instance");
        }
    }
    if (o && o->acks_wait && !a->busy && superseded_end(a)) return;
    if (o && o->acks_wait && o->chal_key && !a->busy && acks_done(a, o)) {
        o->acks_wait = false;
        if (!holds_lock(a, o, &ls)) {
            order_fail(a, "this instance lost the fleet's lock (%s holds it)",
                       ls.holder ? ls.holder : "nobody");
            return;
        }
        request(a, S_CHALLENGE, o->chal_url, true, "{}", false);
        return;
    }
    kick(a);
}

static void on_fwait(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct acme *a = arg;
    if (a->ord && (a->ord->lock_wait || a->ord->acks_wait))
        on_fleet(a);
    else
        share_check(a); /* a write of cert/NAME due again */
}

/* The order in hand took too long: it fails, whatever it waits for. */
static void on_order_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct acme *a = arg;
    if (!a->ord || a->ord->lock_wait) return;
    conn_close(a);
    a->busy = false;
    event_del(a->poll);
    answer_clear(&a->ans);
    order_fail(a, "the order took longer than %d s", ACME_ORDER_DEADLINE_S);
}

/* f NULL: alone from now on (before the fleet is stopped) */
void acme_set_fleet(struct acme *a, struct fleet *f)
{
    if (!a) return;
    if (a->fleet && a->fleet != f) fleet_acme_follow(a->fleet, NULL, NULL);
    a->fleet = f;
    if (f) fleet_acme_follow(f, on_fleet, a);
    if (f) kick(a);
}

/* ---- names follow the config ---- */

static void names_free(struct aname *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        name_clear_cert(&v[i]);
        name_unshare(&v[i]);
        free(v[i].name);
        free(v[i].last_error);
    }
    free(v);
}

static struct acme_cfg *cfg_copy(const struct acme_cfg *c)
{
    struct acme_cfg *d = calloc(1, sizeof(*d));
    if (!d) return NULL;
    bool ok = (d->directory = strdup(c->directory ? c->directory : "")) &&
              (d->storage = strdup(c->storage ? c->storage : "acme"));
    d->key_type = c->key_type;
    d->http01 = c->http01;
    d->tlsalpn01 = c->tlsalpn01;
    d->prefer_alpn = c->prefer_alpn;
    if (ok && c->ca_file) ok = (d->ca_file = strdup(c->ca_file)) != NULL;
    if (ok && c->eab_kid) ok = (d->eab_kid = strdup(c->eab_kid)) != NULL;
    if (ok && c->eab_hmac_file) ok = (d->eab_hmac_file = strdup(c->eab_hmac_file)) != NULL;
    if (ok && c->ncontact) ok = (d->contact = calloc(c->ncontact, sizeof(char *))) != NULL;
    for (size_t i = 0; ok && i < c->ncontact; i++)
        ok = (d->contact[d->ncontact++] = strdup(c->contact[i])) != NULL;
    if (!ok) {
        acme_cfg_free(d);
        return NULL;
    }
    return d;
}

/* The server changed (or the account's settings): start again with it. */
static void forget_server(struct acme *a)
{
    a->have_dir = false;
    free(a->u_nonce), free(a->u_account), free(a->u_order), free(a->u_ari);
    a->u_nonce = a->u_account = a->u_order = a->u_ari = NULL;
    free(a->nonce), free(a->kid), free(a->thumb);
    a->nonce = a->kid = a->thumb = NULL;
    EVP_PKEY_free(a->acct);
    a->acct = NULL;
    SSL_CTX_free(a->ssl_ctx);
    a->ssl_ctx = NULL;
}

/* Makes the names those of c: kept names keep their certificates, new
 * ones are loaded from storage or ordered, failed ones are tried now. */
static void follow(struct acme *a, const struct acme_cfg *c, bool fleet)
{
    bool same = a->cfg && c && acme_cfg_same_account(a->cfg, c);
    /* an order in flight goes on unless what it was begun with changed */
    bool keep = same && a->ord && a->want_fleet == fleet && a->cfg->http01 == c->http01 &&
                a->cfg->tlsalpn01 == c->tlsalpn01 && a->cfg->prefer_alpn == c->prefer_alpn &&
                a->cfg->key_type == c->key_type;
    for (size_t i = 0; keep && i <= c->nnames; i++) {
        if (i == c->nnames)
            keep = false; /* its name is gone */
        else if (!strcmp(c->names[i], a->ord->n->name))
            break;
    }
    a->want_fleet = fleet;
    if (!c) member_withdraw(a);
    if (!keep && (a->busy || a->ord)) { /* dropped: begun for other settings */
        conn_close(a);
        a->busy = false;
        event_del(a->poll);
        if (a->ord) {
            a->ord->n->due_ms = 0; /* tried again at once */
            order_release(a, a->ord);
            order_free(a->ord);
            a->ord = NULL;
        }
        a->ari_for = NULL;
    }
    if (!same) forget_server(a);
    struct acme_cfg *nc = c ? cfg_copy(c) : NULL;
    if (c && !nc) {
        log_error("acme: out of memory following the configuration");
        return;
    }
    size_t want = c ? c->nnames : 0;
    struct aname *v = want ? calloc(want, sizeof(*v)) : NULL;
    if (want && !v) {
        acme_cfg_free(nc);
        log_error("acme: out of memory following the configuration");
        return;
    }
    acme_cfg_free(a->cfg);
    a->cfg = nc;
    if (nc && !same) load_account_url(a);
    size_t n = 0;
    for (size_t i = 0; i < want; i++) {
        struct aname *old = NULL;
        for (size_t k = 0; same && k < a->nnames; k++)
            if (a->names[k].name && strcmp(a->names[k].name, c->names[i]) == 0) old = &a->names[k];
        if (old) {
            v[n] = *old;
            memset(old, 0, sizeof(*old));
            if (a->ord && a->ord->n == old) { /* the order in hand goes on */
                a->ord->n = &v[n];
                n++;
                continue;
            }
            if (v[n].state == NS_FAILED || v[n].state == NS_ORDERING || v[n].state == NS_NONE) {
                v[n].due_ms = 0; /* a reload retries at once */
                v[n].failures = 0;
            } else if (v[n].due_ms == 0 || v[n].due_ms == INT64_MAX) {
                schedule_renewal(&v[n]);
            }
            if (v[n].x509 && v[n].state != NS_VALID) v[n].state = NS_VALID;
            n++;
            continue;
        }
        if (!(v[n].name = strdup(c->names[i]))) continue;
        v[n].state = NS_NONE;
        v[n].due_ms = 0;
        load_cert(a, &v[n]);
        n++;
    }
    names_free(a->names, a->nnames);
    a->names = v;
    a->nnames = n;
    publish(a);
    if (nc && n) {
        char why[512];
        if (!storage_dir(a, why, sizeof(why))) log_warn("acme: %s", why);
    }
    kick(a);
    /* ARI for certificates found in storage, once the directory is known */
    if (a->cfg && !a->busy) arm_timer(a);
}

struct acme *acme_start(struct event_base *base, struct server *srv, const struct config *cfg)
{
    struct acme *a = calloc(1, sizeof(*a));
    if (!a) return NULL;
    a->base = base;
    a->srv = srv;
    a->ans.retry_after = -1;
    a->finish = event_new(base, -1, 0, on_finish, a);
    a->deadline = evtimer_new(base, on_deadline, a);
    a->timer = evtimer_new(base, on_timer, a);
    a->poll = evtimer_new(base, on_poll, a);
    a->odl = evtimer_new(base, on_order_deadline, a);
    a->fwait = event_new(base, -1, EV_PERSIST, on_fwait, a);
    if (!a->finish || !a->deadline || !a->timer || !a->poll || !a->odl || !a->fwait) {
        acme_stop(a);
        return NULL;
    }
    struct timeval second = {1, 0};
    evtimer_add(a->fwait, &second);
    follow(a, cfg->acme, cfg->fleet != NULL);
    return a;
}

void acme_reload(struct acme *a, const struct config *cfg)
{
    if (a) follow(a, cfg->acme, cfg->fleet != NULL);
}

void acme_stop(struct acme *a)
{
    if (!a) return;
    conn_close(a);
    order_free(a->ord);
    if (a->finish) event_free(a->finish);
    if (a->deadline) event_free(a->deadline);
    if (a->timer) event_free(a->timer);
    if (a->poll) event_free(a->poll);
    if (a->odl) event_free(a->odl);
    if (a->fwait) event_free(a->fwait);
    forget_server(a);
    if (a->dns) evdns_base_free(a->dns, 0);
    answer_clear(&a->ans);
    free(a->ans.body);
    free(a->req_url);
    free(a->req_payload);
    free(a->pend_url);
    names_free(a->names, a->nnames);
    acme_cfg_free(a->cfg);
    shared_free(a->stok, a->nstok);
    shared_free(a->salpn, a->nsalpn);
    /* the workers are gone: nothing reads the table any more */
    acme_live_free(acme_live_swap(NULL));
    free(a);
}

/* ---- what the admin listener shows ---- */

void acme_status_json(const struct acme *a, struct evbuffer *o)
{
    evbuffer_add(o, LIT(",\"acme\":["));
    for (size_t i = 0; a && i < a->nnames; i++) {
        const struct aname *n = &a->names[i];
        char t[32];
        if (i) evbuffer_add(o, LIT(","));
        evbuffer_add(o, LIT("{\"name\":"));
        json_str(o, n->name);
        iso_time(n->not_after, t, sizeof(t));
        evbuffer_add_printf(o, ",\"not_after\":%s%s%s", t[0] ? "\"" : "", t[0] ? t : "null",
                            t[0] ? "\"" : "");
        time_t next =
            n->x509 ? n->next_renewal : (n->due_ms != INT64_MAX ? (time_t)(n->due_ms / 1000) : 0);
        if (a->ord && a->ord->n == n) next = 0;
        iso_time(next, t, sizeof(t));
        evbuffer_add_printf(o, ",\"next_renewal\":%s%s%s", t[0] ? "\"" : "", t[0] ? t : "null",
                            t[0] ? "\"" : "");
        const char *st = a->ord && a->ord->n == n && !n->x509 ? "ordering" : state_name(n->state);
        evbuffer_add_printf(o, ",\"state\":\"%s\",\"last_error\":", st);
        if (n->last_error)
            json_str(o, n->last_error);
        else
            evbuffer_add(o, LIT("null"));
        evbuffer_add(o, LIT("}"));
    }
    evbuffer_add(o, LIT("]"));
}

void acme_page_html(const struct acme *a, struct evbuffer *o, time_t now)
{
    for (size_t i = 0; a && i < a->nnames; i++) {
        const struct aname *n = &a->names[i];
        char t[32];
        long long left = n->not_after ? (long long)(n->not_after - now) / 86400 : 0;
        const char *st = a->ord && a->ord->n == n && !n->x509 ? "ordering" : state_name(n->state);
        evbuffer_add_printf(o, "<tr class=\"cert-%s\" data-acme-state=\"%s\"><th scope=\"row\">",
                            n->x509 ? "ok" : "soon", st);
        evbuffer_add(o, LIT("ACME</th><td>acme:"));
        html_str(o, n->name);
        evbuffer_add(o, LIT("</td><td>"));
        html_str(o, n->name);
        evbuffer_add(o, LIT("</td><td>"));
        iso_time(n->not_after, t, sizeof(t));
        html_str(o, t[0] ? t : "none yet");
        evbuffer_add_printf(o, "</td><td class=\"n\">");
        if (n->x509) evbuffer_add_printf(o, "%lld ", left);
        evbuffer_add_printf(o, "(%s", st);
        if (n->last_error) {
            evbuffer_add(o, LIT(": "));
            html_str(o, n->last_error);
        }
        evbuffer_add(o, LIT(")</td></tr>"));
    }
}

void acme_metrics(const struct acme *a, struct evbuffer *out)
{
    evbuffer_add(out, LIT("# HELP detourd_acme_orders_total ACME orders finished, by result.\n"
                          "# TYPE detourd_acme_orders_total counter\n"));
    evbuffer_add_printf(out, "detourd_acme_orders_total{result=\"issued\"} %" PRIu64 "\n",
                        a ? a->issued : 0);
    evbuffer_add_printf(out, "detourd_acme_orders_total{result=\"failed\"} %" PRIu64 "\n",
                        a ? a->failed : 0);
}

time_t acme_cert_not_after(const struct acme *a, const char *name)
{
    for (size_t i = 0; a && i < a->nnames; i++)
        if (strcmp(a->names[i].name, name) == 0)
            return a->names[i].x509 ? a->names[i].not_after : 0;
    return 0;
}
