/* Envoy ALS v3 wire format -> column buffers of the `requests` table, in one pass per entry.
 *
 * An accelerator for collector/decode/envoy_als.py, which stays the reference: this module reads
 * the same fields with the same rules, and returns None ("decline") for anything it does not
 * handle exactly like the upb-backed Python path (malformed wire data, a singular message
 * field sent twice, oneof switches, non-ASCII trace headers, values that overflow the Arrow
 * column types, invalid UTF-8). The caller then decodes those records in Python, which gives
 * the same rows or the precise DecodeError. Identity is not resolved here: each entry gets the
 * index of its distinct identity key (local workload, cluster, TLS properties, filter state,
 * metadata-exchange headers, authority, passthrough host) and Python resolves each key once.
 *
 * Field numbers: collector/proto/meshlens_envoy_accesslog.proto, meshlens_als.proto,
 * meshlens_envoy_core.proto (subsets of Envoy's data/accesslog/v3 and service/accesslog/v3).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "_utf8_valid.h"

/* ---- growable byte buffers ---------------------------------------------------------------- */

typedef struct {
    char *d;
    size_t len, cap;
} buf_t;

static int buf_grow(buf_t *b, size_t extra) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra) cap *= 2;
    char *d = PyMem_Realloc(b->d, cap);
    if (!d) {
        PyErr_NoMemory();
        return -1;
    }
    b->d = d;
    b->cap = cap;
    return 0;
}

static inline int buf_put(buf_t *b, const void *p, size_t n) {
    if (__builtin_expect(b->len + n > b->cap, 0) && buf_grow(b, n) < 0) return -1;
    if (n) memcpy(b->d + b->len, p, n);
    b->len += n;
    return 0;
}

static void buf_free(buf_t *b) {
    PyMem_Free(b->d);
    b->d = NULL;
    b->len = b->cap = 0;
}

static PyObject *buf_bytes(const buf_t *b) {
    return PyBytes_FromStringAndSize(b->d ? b->d : "", (Py_ssize_t)b->len);
}

/* A column with a validity byte per row (packed into an Arrow bitmap at the end). */
typedef struct {
    buf_t data, offsets, valid;
    Py_ssize_t nulls;
    int is_string;
} col_t;

typedef struct {
    const uint8_t *p;
    size_t n;
} slice_t;

static const slice_t NOSLICE = {NULL, 0};

static inline int col_str(col_t *c, slice_t s, int valid) {
    uint8_t v = (uint8_t)(valid != 0);
    if (!valid) c->nulls++;
    if (valid && buf_put(&c->data, s.p, s.n) < 0) return -1;
    int32_t off = (int32_t)c->data.len;
    if (c->data.len > INT32_MAX) return -2;
    if (buf_put(&c->offsets, &off, 4) < 0) return -1;
    return buf_put(&c->valid, &v, 1);
}

static inline int col_fixed(col_t *c, const void *value, size_t width, int valid) {
    uint8_t v = (uint8_t)(valid != 0);
    if (!valid) c->nulls++;
    if (buf_put(&c->data, value, width) < 0) return -1;
    return buf_put(&c->valid, &v, 1);
}

/* (validity bitmap or None, data[, offsets], null count) as a Python tuple. */
static PyObject *col_result(col_t *c, Py_ssize_t rows) {
    PyObject *bitmap;
    if (c->nulls == 0) {
        bitmap = Py_NewRef(Py_None);
    } else {
        Py_ssize_t nbytes = (rows + 7) / 8;
        bitmap = PyBytes_FromStringAndSize(NULL, nbytes);
        if (!bitmap) return NULL;
        uint8_t *bits = (uint8_t *)PyBytes_AS_STRING(bitmap);
        memset(bits, 0, (size_t)nbytes);
        const uint8_t *v = (const uint8_t *)c->valid.d;
        for (Py_ssize_t i = 0; i < rows; i++)
            if (v[i]) bits[i >> 3] |= (uint8_t)(1u << (i & 7));
    }
    PyObject *data = buf_bytes(&c->data);
    PyObject *offsets = c->is_string ? buf_bytes(&c->offsets) : Py_NewRef(Py_None);
    if (!data || !offsets) {
        Py_XDECREF(data);
        Py_XDECREF(offsets);
        Py_DECREF(bitmap);
        return NULL;
    }
    return Py_BuildValue("(NNNn)", bitmap, offsets, data, c->nulls);
}

/* ---- wire reading -------------------------------------------------------------------------- */

/* Every reader returns 0 on success, -1 to decline. */
typedef struct {
    const uint8_t *p, *end;
} rd_t;

static inline int rd_varint(rd_t *r, uint64_t *out) {
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (r->p >= r->end) return -1;
        uint8_t b = *r->p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

static inline int rd_tag(rd_t *r, uint32_t *field, uint32_t *wt) {
    uint64_t t;
    if (rd_varint(r, &t) < 0) return -1;
    if (t > UINT32_MAX || (t >> 3) == 0) return -1;
    *field = (uint32_t)(t >> 3);
    *wt = (uint32_t)(t & 7);
    return 0;
}

static inline int rd_len(rd_t *r, slice_t *s) {
    uint64_t n;
    if (rd_varint(r, &n) < 0) return -1;
    if (n > (uint64_t)(r->end - r->p)) return -1;
    s->p = r->p;
    s->n = (size_t)n;
    r->p += n;
    return 0;
}

static int rd_skip(rd_t *r, uint32_t wt) {
    uint64_t v;
    slice_t s;
    switch (wt) {
    case 0:
        return rd_varint(r, &v);
    case 1:
        if (r->end - r->p < 8) return -1;
        r->p += 8;
        return 0;
    case 2:
        return rd_len(r, &s);
    case 5:
        if (r->end - r->p < 4) return -1;
        r->p += 4;
        return 0;
    default: /* groups: never in these messages; let the reference decoder judge */
        return -1;
    }
}

#define WT_VARINT 0
#define WT_LEN 2

/* A known field with the wire type we expect (anything else: decline). */
#define EXPECT(wt_, want) \
    do {                  \
        if ((wt_) != (want)) return -1; \
    } while (0)

static int utf8_ok(slice_t s) { return utf8_valid(s.p, s.n); }

static int ascii_only(slice_t s) {
    for (size_t i = 0; i < s.n; i++)
        if (s.p[i] & 0x80) return 0;
    return 1;
}

static int slice_eq(slice_t s, const char *lit) {
    size_t n = strlen(lit);
    return s.n == n && memcmp(s.p, lit, n) == 0;
}

static int slice_contains(slice_t s, const char *lit) {
    size_t n = strlen(lit);
    if (s.n < n) return 0;
    for (size_t i = 0; i + n <= s.n; i++)
        if (s.p[i] == (uint8_t)lit[0] && memcmp(s.p + i, lit, n) == 0) return 1;
    return 0;
}

/* ---- one entry ----------------------------------------------------------------------------- */

typedef struct {
    int set;
    int64_t s;
    int32_t ns;
} dur_t;

typedef struct {
    int has_sock, port_set;
    slice_t address;
    uint64_t port;
} addr_t;

/* headers we look up in a map<string, string>: last duplicate wins, like protobuf maps */
typedef struct {
    int nonempty;
    int have_mx, have_ctype, have_grpc, have_xrid, have_tp, have_b3tid, have_b3;
    slice_t mx, ctype, grpc, xrid, tp, b3tid, b3;
} headers_t;

typedef struct {
    /* common */
    dur_t start, duration, ttldtb;
    int has_flags;
    uint32_t flags; /* bit i = ResponseFlags field i+1 */
    addr_t dremote, dlocal, uremote;
    slice_t cluster, term_details;
    int has_tls;
    slice_t tls_raw;
    slice_t fso_first, fso_last; /* first and last filter_state_objects entry (raw) */
    int intermediate;
    /* http */
    uint64_t method;
    slice_t authority, path, orig_path, user_agent, request_id, code_details;
    uint64_t resp_code, req_body, resp_body;
    headers_t reqh, resph, trailers;
    /* tcp */
    uint64_t received, sent;
    /* presence of singular message fields already seen (a repeat would need merging) */
    uint64_t seen;
} entry_t;

enum {
    SEEN_COMMON = 1 << 0,
    SEEN_REQUEST = 1 << 1,
    SEEN_RESPONSE = 1 << 2,
    SEEN_CONN = 1 << 3,
    SEEN_DREMOTE = 1 << 4,
    SEEN_DLOCAL = 1 << 5,
    SEEN_UREMOTE = 1 << 6,
    SEEN_TLS = 1 << 7,
    SEEN_START = 1 << 8,
    SEEN_DURATION = 1 << 9,
    SEEN_TTLDTB = 1 << 10,
    SEEN_FLAGS = 1 << 11,
    SEEN_RESP_CODE = 1 << 12,
};

static int once(entry_t *e, uint64_t bit) {
    if (e->seen & bit) return -1;
    e->seen |= bit;
    return 0;
}

static int parse_time(slice_t s, dur_t *d) {
    rd_t r = {s.p, s.p + s.n};
    d->set = 1;
    while (r.p < r.end) {
        uint32_t f, wt;
        uint64_t v;
        if (rd_tag(&r, &f, &wt) < 0) return -1;
        if (f == 1) {
            EXPECT(wt, WT_VARINT);
            if (rd_varint(&r, &v) < 0) return -1;
            d->s = (int64_t)v;
        } else if (f == 2) {
            EXPECT(wt, WT_VARINT);
            if (rd_varint(&r, &v) < 0) return -1;
            d->ns = (int32_t)(uint32_t)v;
        } else if (rd_skip(&r, wt) < 0) {
            return -1;
        }
    }
    return 0;
}

static int parse_socket(slice_t s, addr_t *a) {
    rd_t r = {s.p, s.p + s.n};
    a->has_sock = 1;
    while (r.p < r.end) {
        uint32_t f, wt;
        uint64_t v;
        slice_t x;
        if (rd_tag(&r, &f, &wt) < 0) return -1;
        switch (f) {
        case 2:
            EXPECT(wt, WT_LEN);
            if (rd_len(&r, &x) < 0 || !utf8_ok(x)) return -1;
            a->address = x;
            break;
        case 3:
            EXPECT(wt, WT_VARINT);
            if (rd_varint(&r, &v) < 0) return -1;
            a->port = (uint32_t)v;
            a->port_set = 1;
            break;
        case 4: /* named_port: the other member of the port oneof */
            return -1;
        default:
            if (rd_skip(&r, wt) < 0) return -1;
        }
    }
    return 0;
}

static int parse_address(slice_t s, addr_t *a) {
    rd_t r = {s.p, s.p + s.n};
    while (r.p < r.end) {
        uint32_t f, wt;
        slice_t x;
        if (rd_tag(&r, &f, &wt) < 0) return -1;
        if (f == 1) {
            EXPECT(wt, WT_LEN);
            /* a second socket_address would merge into the first: left to the reference */
            if (a->has_sock || rd_len(&r, &x) < 0 || parse_socket(x, a) < 0) return -1;
        } else if (f == 2 || f == 3) {
            /* pipe / internal address: the other oneof members; they clear socket_address */
            EXPECT(wt, WT_LEN);
            if (rd_len(&r, &x) < 0) return -1;
            memset(a, 0, sizeof *a);
        } else if (rd_skip(&r, wt) < 0) {
            return -1;
        }
    }
    return 0;
}

static int parse_flags(slice_t s, entry_t *e) {
    rd_t r = {s.p, s.p + s.n};
    while (r.p < r.end) {
        uint32_t f, wt;
        uint64_t v;
        if (rd_tag(&r, &f, &wt) < 0) return -1;
        if (f == 13) { /* unauthorized_details: a message; present = flag set */
            slice_t x;
            EXPECT(wt, WT_LEN);
            if (rd_len(&r, &x) < 0) return -1;
            e->flags |= 1u << 12;
        } else if (f >= 1 && f <= 27) {
            EXPECT(wt, WT_VARINT);
            if (rd_varint(&r, &v) < 0) return -1;
            if (v)
                e->flags |= 1u << (f - 1);
            else
                e->flags &= ~(1u << (f - 1));
        } else if (rd_skip(&r, wt) < 0) {
            return -1;
        }
    }
    return 0;
}

static int parse_headers(slice_t s, headers_t *h) {
    rd_t r = {s.p, s.p + s.n};
    slice_t key = NOSLICE, value = NOSLICE;
    h->nonempty = 1;
    while (r.p < r.end) {
        uint32_t f, wt;
        slice_t x;
        if (rd_tag(&r, &f, &wt) < 0) return -1;
        if (f == 1 || f == 2) {
            EXPECT(wt, WT_LEN);
            if (rd_len(&r, &x) < 0 || !utf8_ok(x)) return -1;
            if (f == 1)
                key = x;
            else
                value = x;
        } else {
            /* any other field: upb keeps the whole entry as an unknown field of the parent
               message, out of the map; left to the reference */
            return -1;
        }
    }
#define HDR(name, have, field)     \
    if (slice_eq(key, name)) {     \
        h->have = 1;               \
        h->field = value;          \
        return 0;                  \
    }
    HDR("x-envoy-peer-metadata", have_mx, mx)
    HDR("content-type", have_ctype, ctype)
    HDR("grpc-status", have_grpc, grpc)
    HDR("x-request-id", have_xrid, xrid)
    HDR("traceparent", have_tp, tp)
    HDR("x-b3-traceid", have_b3tid, b3tid)
    HDR("b3", have_b3, b3)
#undef HDR
    return 0;
}

static int rd_str(rd_t *r, uint32_t wt, slice_t *out) {
    EXPECT(wt, WT_LEN);
    if (rd_len(r, out) < 0 || !utf8_ok(*out)) return -1;
    return 0;
}

static int parse_common(slice_t s, entry_t *e) {
    rd_t r = {s.p, s.p + s.n};
    while (r.p < r.end) {
        uint32_t f, wt;
        uint64_t v;
        slice_t x;
        const uint8_t *field_start = r.p;
        if (rd_tag(&r, &f, &wt) < 0) return -1;
        switch (f) {
        case 2:
            EXPECT(wt, WT_LEN);
            if (once(e, SEEN_DREMOTE) < 0 || rd_len(&r, &x) < 0 || parse_address(x, &e->dremote) < 0)
                return -1;
            break;
        case 3:
            EXPECT(wt, WT_LEN);
            if (once(e, SEEN_DLOCAL) < 0 || rd_len(&r, &x) < 0 || parse_address(x, &e->dlocal) < 0)
                return -1;
            break;
        case 4:
            EXPECT(wt, WT_LEN);
            if (once(e, SEEN_TLS) < 0 || rd_len(&r, &x) < 0) return -1;
            e->has_tls = 1;
            e->tls_raw = x;
            break;
        case 5:
            EXPECT(wt, WT_LEN);
            if (once(e, SEEN_START) < 0 || rd_len(&r, &x) < 0 || parse_time(x, &e->start) < 0)
                return -1;
            break;
        case 12:
            EXPECT(wt, WT_LEN);
            if (once(e, SEEN_TTLDTB) < 0 || rd_len(&r, &x) < 0 || parse_time(x, &e->ttldtb) < 0)
                return -1;
            break;
        case 13:
            EXPECT(wt, WT_LEN);
            if (once(e, SEEN_UREMOTE) < 0 || rd_len(&r, &x) < 0 || parse_address(x, &e->uremote) < 0)
                return -1;
            break;
        case 15:
            if (rd_str(&r, wt, &e->cluster) < 0) return -1;
            break;
        case 16:
            EXPECT(wt, WT_LEN);
            if (once(e, SEEN_FLAGS) < 0 || rd_len(&r, &x) < 0 || parse_flags(x, e) < 0) return -1;
            e->has_flags = 1;
            break;
        case 21: /* filter_state_objects: kept raw (from the first to the last entry) for the key */
            EXPECT(wt, WT_LEN);
            if (rd_len(&r, &x) < 0) return -1;
            if (!e->fso_first.p) e->fso_first.p = field_start;
            e->fso_last.p = field_start;
            e->fso_last.n = (size_t)(r.p - field_start);
            break;
        case 23:
            EXPECT(wt, WT_LEN);
            if (once(e, SEEN_DURATION) < 0 || rd_len(&r, &x) < 0 ||
                parse_time(x, &e->duration) < 0)
                return -1;
            break;
        case 25:
            if (rd_str(&r, wt, &e->term_details) < 0) return -1;
            break;
        case 26:
            EXPECT(wt, WT_VARINT);
            if (rd_varint(&r, &v) < 0) return -1;
            e->intermediate = v != 0;
            break;
        default:
            if (rd_skip(&r, wt) < 0) return -1;
        }
    }
    return 0;
}

static int parse_request(slice_t s, entry_t *e) {
    rd_t r = {s.p, s.p + s.n};
    while (r.p < r.end) {
        uint32_t f, wt;
        slice_t x;
        if (rd_tag(&r, &f, &wt) < 0) return -1;
        switch (f) {
        case 1:
            EXPECT(wt, WT_VARINT);
            if (rd_varint(&r, &e->method) < 0) return -1;
            break;
        case 3:
            if (rd_str(&r, wt, &e->authority) < 0) return -1;
            break;
        case 5:
            if (rd_str(&r, wt, &e->path) < 0) return -1;
            break;
        case 6:
            if (rd_str(&r, wt, &e->user_agent) < 0) return -1;
            break;
        case 9:
            if (rd_str(&r, wt, &e->request_id) < 0) return -1;
            break;
        case 10:
            if (rd_str(&r, wt, &e->orig_path) < 0) return -1;
            break;
        case 12:
            EXPECT(wt, WT_VARINT);
            if (rd_varint(&r, &e->req_body) < 0) return -1;
            break;
        case 13:
            EXPECT(wt, WT_LEN);
            if (rd_len(&r, &x) < 0 || parse_headers(x, &e->reqh) < 0) return -1;
            break;
        default:
            if (rd_skip(&r, wt) < 0) return -1;
        }
    }
    return 0;
}

static int parse_uint32_value(slice_t s, uint64_t *out) {
    rd_t r = {s.p, s.p + s.n};
    while (r.p < r.end) {
        uint32_t f, wt;
        uint64_t v;
        if (rd_tag(&r, &f, &wt) < 0) return -1;
        if (f == 1) {
            EXPECT(wt, WT_VARINT);
            if (rd_varint(&r, &v) < 0) return -1;
            *out = (uint32_t)v;
        } else if (rd_skip(&r, wt) < 0) {
            return -1;
        }
    }
    return 0;
}

static int parse_response(slice_t s, entry_t *e) {
    rd_t r = {s.p, s.p + s.n};
    while (r.p < r.end) {
        uint32_t f, wt;
        slice_t x;
        if (rd_tag(&r, &f, &wt) < 0) return -1;
        switch (f) {
        case 1:
            EXPECT(wt, WT_LEN);
            if (once(e, SEEN_RESP_CODE) < 0 || rd_len(&r, &x) < 0 ||
                parse_uint32_value(x, &e->resp_code) < 0)
                return -1;
            break;
        case 3:
            EXPECT(wt, WT_VARINT);
            if (rd_varint(&r, &e->resp_body) < 0) return -1;
            break;
        case 4:
            EXPECT(wt, WT_LEN);
            if (rd_len(&r, &x) < 0 || parse_headers(x, &e->resph) < 0) return -1;
            break;
        case 5:
            EXPECT(wt, WT_LEN);
            if (rd_len(&r, &x) < 0 || parse_headers(x, &e->trailers) < 0) return -1;
            break;
        case 6:
            if (rd_str(&r, wt, &e->code_details) < 0) return -1;
            break;
        default:
            if (rd_skip(&r, wt) < 0) return -1;
        }
    }
    return 0;
}

static int parse_conn(slice_t s, entry_t *e) {
    rd_t r = {s.p, s.p + s.n};
    while (r.p < r.end) {
        uint32_t f, wt;
        if (rd_tag(&r, &f, &wt) < 0) return -1;
        if (f == 1 || f == 2) {
            EXPECT(wt, WT_VARINT);
            if (rd_varint(&r, f == 1 ? &e->received : &e->sent) < 0) return -1;
        } else if (rd_skip(&r, wt) < 0) {
            return -1;
        }
    }
    return 0;
}

/* kind 0 = HTTPAccessLogEntry, 1 = TCPAccessLogEntry */
static int parse_entry(slice_t s, int kind, entry_t *e) {
    memset(e, 0, sizeof *e);
    rd_t r = {s.p, s.p + s.n};
    while (r.p < r.end) {
        uint32_t f, wt;
        slice_t x;
        if (rd_tag(&r, &f, &wt) < 0) return -1;
        if (f == 1) {
            EXPECT(wt, WT_LEN);
            if (once(e, SEEN_COMMON) < 0 || rd_len(&r, &x) < 0 || parse_common(x, e) < 0)
                return -1;
        } else if (kind == 0 && f == 3) {
            EXPECT(wt, WT_LEN);
            if (once(e, SEEN_REQUEST) < 0 || rd_len(&r, &x) < 0 || parse_request(x, e) < 0)
                return -1;
        } else if (kind == 0 && f == 4) {
            EXPECT(wt, WT_LEN);
            if (once(e, SEEN_RESPONSE) < 0 || rd_len(&r, &x) < 0 || parse_response(x, e) < 0)
                return -1;
        } else if (kind == 1 && f == 2) {
            EXPECT(wt, WT_LEN);
            if (once(e, SEEN_CONN) < 0 || rd_len(&r, &x) < 0 || parse_conn(x, e) < 0) return -1;
        } else if (kind == 0 && f == 2) {
            uint64_t v;
            EXPECT(wt, WT_VARINT);
            if (rd_varint(&r, &v) < 0) return -1;
        } else if (rd_skip(&r, wt) < 0) {
            return -1;
        }
    }
    return 0;
}

/* ---- identity keys: a small open-addressing hash table of distinct byte strings ------------ */

typedef struct {
    uint64_t hash;
    size_t off, len;
    int32_t id;
} slot_t;

typedef struct {
    slot_t *slots;
    size_t cap, used;
    buf_t arena;
} keys_t;

static uint64_t hash_bytes(const uint8_t *p, size_t n) {
    uint64_t h = 1469598103934665603ULL; /* FNV-1a, 8 bytes at a time for the bulk */
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 1099511628211ULL;
        h ^= h >> 29;
    }
    for (; i < n; i++) h = (h ^ p[i]) * 1099511628211ULL;
    return h ^ (h >> 32);
}

static int keys_grow(keys_t *k) {
    size_t cap = k->cap ? k->cap * 2 : 64;
    slot_t *slots = PyMem_Malloc(cap * sizeof(slot_t));
    if (!slots) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i < cap; i++) slots[i].id = -1; /* empty */
    for (size_t i = 0; i < k->cap; i++) {
        if (k->slots[i].id < 0) continue;
        size_t j = k->slots[i].hash & (cap - 1);
        while (slots[j].id >= 0) j = (j + 1) & (cap - 1);
        slots[j] = k->slots[i];
    }
    PyMem_Free(k->slots);
    k->slots = slots;
    k->cap = cap;
    return 0;
}

/* -> the key's id (new ids are consecutive from 0), *is_new set; -1 on memory error */
static int32_t keys_get(keys_t *k, const uint8_t *p, size_t n, int *is_new) {
    if ((k->used + 1) * 2 > k->cap && keys_grow(k) < 0) return -1;
    uint64_t h = hash_bytes(p, n);
    size_t j = h & (k->cap - 1);
    while (k->slots[j].id >= 0) {
        slot_t *s = &k->slots[j];
        if (s->hash == h && s->len == n && memcmp(k->arena.d + s->off, p, n) == 0) {
            *is_new = 0;
            return s->id;
        }
        j = (j + 1) & (k->cap - 1);
    }
    slot_t *s = &k->slots[j];
    s->hash = h;
    s->off = k->arena.len;
    s->len = n;
    s->id = (int32_t)k->used++;
    if (buf_put(&k->arena, p, n) < 0) return -1;
    *is_new = 1;
    return s->id;
}

static int key_part(buf_t *b, slice_t s) {
    uint32_t n = (uint32_t)s.n;
    if (buf_put(b, &n, 4) < 0) return -1;
    return buf_put(b, s.p, s.n);
}

/* ---- the batch ----------------------------------------------------------------------------- */

enum {
    S_RESPONSE_FLAGS,
    S_UPSTREAM_CLUSTER,
    S_SOURCE_ADDRESS,
    S_TERMINATION,
    S_PATH,
    S_AUTHORITY,
    S_GRPC_STATUS,
    S_REQUEST_ID,
    S_TRACE_ID,
    S_USER_AGENT,
    S_CODE_DETAILS,
    N_STR
};
static const char *STR_NAMES[N_STR] = {
    "response_flags", "upstream_cluster", "source_address", "connection_termination_details",
    "path", "authority", "grpc_status", "request_id", "trace_id", "user_agent",
    "response_code_details",
};
enum { F_TS, F_DURATION, F_LOCAL_PORT, F_RESPONSE_CODE, F_REQ_BYTES, F_RESP_BYTES, F_IDENT,
       F_PROTOCOL, F_METHOD, N_FIXED };
static const char *FIXED_NAMES[N_FIXED] = {
    "ts", "duration_ms", "local_port", "response_code", "request_bytes", "response_bytes",
    "ident", "protocol", "method",
};

static const char *FLAG_CODES[27] = {
    "LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX", "RLSE",
    "DC", "URX", "SI", "IH", "DPE", "UMSDR", "RFCF", "NFCF", "DT", "UPE", "NC", "OM", "DF",
};

typedef struct {
    col_t str[N_STR];
    col_t fixed[N_FIXED];
    keys_t keys;
    buf_t key, scratch, rows_per_record;
    PyObject *distinct; /* list of (record index, kind, entry offset, entry length) */
    Py_ssize_t rows;
} batch_t;

static void batch_free(batch_t *b) {
    for (int i = 0; i < N_STR; i++) {
        buf_free(&b->str[i].data);
        buf_free(&b->str[i].offsets);
        buf_free(&b->str[i].valid);
    }
    for (int i = 0; i < N_FIXED; i++) {
        buf_free(&b->fixed[i].data);
        buf_free(&b->fixed[i].valid);
    }
    PyMem_Free(b->keys.slots);
    buf_free(&b->keys.arena);
    buf_free(&b->key);
    buf_free(&b->scratch);
    buf_free(&b->rows_per_record);
    Py_XDECREF(b->distinct);
}

static inline int64_t floordiv(int64_t a, int64_t b) {
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
    return q;
}

/* Python's `value.lower().rjust(32, "0")` for an ASCII value. */
static int put_trace(batch_t *b, slice_t v) {
    b->scratch.len = 0;
    for (size_t i = v.n; i < 32; i++)
        if (buf_put(&b->scratch, "0", 1) < 0) return -1;
    for (size_t i = 0; i < v.n; i++) {
        char c = (char)v.p[i];
        if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
        if (buf_put(&b->scratch, &c, 1) < 0) return -1;
    }
    slice_t out = {(const uint8_t *)b->scratch.d, b->scratch.len};
    return col_str(&b->str[S_TRACE_ID], out, 1);
}

/* envoy_als._trace_id; returns 1 when the value is not ASCII (decline), -1 on memory error */
static int trace_id(batch_t *b, const headers_t *h) {
    if (h->have_tp && h->tp.n) {
        if (!ascii_only(h->tp)) return 1;
        /* parts = tp.split("-"); len(parts) >= 4 and len(parts[1]) == 32 */
        size_t dashes = 0, start1 = 0, end1 = 0;
        for (size_t i = 0; i < h->tp.n; i++) {
            if (h->tp.p[i] == '-') {
                dashes++;
                if (dashes == 1) start1 = i + 1;
                if (dashes == 2) end1 = i;
            }
        }
        if (dashes >= 3 && end1 - start1 == 32) {
            b->scratch.len = 0;
            slice_t part = {h->tp.p + start1, 32};
            return put_trace(b, part);
        }
    }
    if (h->have_b3tid && h->b3tid.n) {
        if (!ascii_only(h->b3tid)) return 1;
        return put_trace(b, h->b3tid);
    }
    if (h->have_b3 && h->b3.n) {
        if (!ascii_only(h->b3)) return 1;
        for (size_t i = 0; i < h->b3.n; i++) {
            if (h->b3.p[i] == '-') {
                slice_t first = {h->b3.p, i};
                return put_trace(b, first);
            }
        }
    }
    return col_str(&b->str[S_TRACE_ID], NOSLICE, 1);
}

static int starts_with(slice_t s, const char *lit) {
    size_t n = strlen(lit);
    return s.n >= n && memcmp(s.p, lit, n) == 0;
}

/* Append one entry's row; 1 = decline, -1 = error, 0 = ok. */
static int emit(batch_t *b, const entry_t *e, int kind, int32_t local_id, int64_t default_ts,
                Py_ssize_t rec, slice_t raw, const uint8_t *payload) {
    /* identity key */
    buf_t *k = &b->key;
    k->len = 0;
    uint8_t kb = (uint8_t)kind;
    slice_t fso = NOSLICE;
    if (e->fso_first.p) {
        fso.p = e->fso_first.p;
        fso.n = (size_t)(e->fso_last.p + e->fso_last.n - e->fso_first.p);
    }
    slice_t tls = e->has_tls ? e->tls_raw : NOSLICE;
    uint8_t has_tls = (uint8_t)e->has_tls;
    slice_t host = NOSLICE;
    if (slice_contains(e->cluster, "PassthroughCluster") || slice_contains(e->cluster, "BlackHoleCluster"))
        host = e->uremote.address;
    if (buf_put(k, &local_id, 4) < 0 || buf_put(k, &kb, 1) < 0 || buf_put(k, &has_tls, 1) < 0 ||
        key_part(k, e->cluster) < 0 || key_part(k, tls) < 0 || key_part(k, fso) < 0 ||
        key_part(k, host) < 0)
        return -1;
    if (kind == 0) {
        slice_t rmx = e->reqh.have_mx ? e->reqh.mx : NOSLICE;
        slice_t smx = e->resph.have_mx ? e->resph.mx : NOSLICE;
        if (key_part(k, e->authority) < 0 || key_part(k, rmx) < 0 || key_part(k, smx) < 0)
            return -1;
    }
    int is_new = 0;
    int32_t id = keys_get(&b->keys, (const uint8_t *)k->d, k->len, &is_new);
    if (id < 0) return -1;
    if (is_new) {
        PyObject *t = Py_BuildValue("(ninn)", rec, kind, (Py_ssize_t)(raw.p - payload), (Py_ssize_t)raw.n);
        if (!t || PyList_Append(b->distinct, t) < 0) {
            Py_XDECREF(t);
            return -1;
        }
        Py_DECREF(t);
    }
    if (col_fixed(&b->fixed[F_IDENT], &id, 4, 1) < 0) return -1;

    /* ts, duration */
    int64_t ts, us;
    if (__builtin_mul_overflow(e->start.s, (int64_t)1000000, &us) ||
        __builtin_add_overflow(us, floordiv(e->start.ns, 1000), &ts))
        return 1;
    if (ts == 0) ts = default_ts;
    if (col_fixed(&b->fixed[F_TS], &ts, 8, 1) < 0) return -1;
    double dur = 0.0;
    int has_dur = 1;
    if (e->duration.set)
        dur = (double)e->duration.s * 1000.0 + (double)e->duration.ns / 1e6;
    else if (e->ttldtb.set)
        dur = (double)e->ttldtb.s * 1000.0 + (double)e->ttldtb.ns / 1e6;
    else
        has_dur = 0;
    if (col_fixed(&b->fixed[F_DURATION], &dur, 8, has_dur) < 0) return -1;

    /* response flags */
    b->scratch.len = 0;
    if (e->has_flags)
        for (int i = 0; i < 27; i++)
            if (e->flags & (1u << i)) {
                if (b->scratch.len && buf_put(&b->scratch, ",", 1) < 0) return -1;
                if (buf_put(&b->scratch, FLAG_CODES[i], strlen(FLAG_CODES[i])) < 0) return -1;
            }
    if (!b->scratch.len && buf_put(&b->scratch, "-", 1) < 0) return -1;
    slice_t flags = {(const uint8_t *)b->scratch.d, b->scratch.len};
    if (col_str(&b->str[S_RESPONSE_FLAGS], flags, 1) < 0) return -1;

    static const uint8_t unknown[] = "unknown";
    slice_t cluster = e->cluster.n ? e->cluster : (slice_t){unknown, 7};
    if (col_str(&b->str[S_UPSTREAM_CLUSTER], cluster, 1) < 0) return -1;
    slice_t src = e->dremote.has_sock ? e->dremote.address : NOSLICE;
    if (col_str(&b->str[S_SOURCE_ADDRESS], src, src.n > 0) < 0) return -1;
    if (col_str(&b->str[S_TERMINATION], e->term_details, e->term_details.n > 0) < 0) return -1;

    int32_t lport = 0;
    int has_lport = e->dlocal.has_sock && e->dlocal.port_set;
    if (has_lport) {
        if (e->dlocal.port > INT32_MAX) return 1;
        lport = (int32_t)e->dlocal.port;
    }
    if (col_fixed(&b->fixed[F_LOCAL_PORT], &lport, 4, has_lport) < 0) return -1;

    int64_t req_bytes, resp_bytes;
    int32_t code = 0;
    int8_t proto, method = 0;
    if (kind == 0) {
        const headers_t *rh = &e->reqh, *sh = &e->resph, *tr = &e->trailers;
        slice_t grpc = NOSLICE;
        if (tr->have_grpc && tr->grpc.n)
            grpc = tr->grpc;
        else if (sh->have_grpc)
            grpc = sh->grpc;
        slice_t ctype = NOSLICE;
        if (rh->have_ctype && rh->ctype.n)
            ctype = rh->ctype;
        else if (sh->have_ctype)
            ctype = sh->ctype;
        proto = (grpc.n || starts_with(ctype, "application/grpc")) ? 1 : 0;
        int32_t m = (int32_t)(uint32_t)e->method; /* an int32 enum on the wire */
        method = (m >= 1 && m <= 9) ? (int8_t)m : 0;
        slice_t path = e->orig_path.n ? e->orig_path : e->path;
        if (col_str(&b->str[S_PATH], path, 1) < 0 ||
            col_str(&b->str[S_AUTHORITY], e->authority, 1) < 0)
            return -1;
        if (e->resp_code > INT32_MAX || e->req_body > INT64_MAX || e->resp_body > INT64_MAX)
            return 1;
        code = (int32_t)e->resp_code;
        req_bytes = (int64_t)e->req_body;
        resp_bytes = (int64_t)e->resp_body;
        if (col_str(&b->str[S_GRPC_STATUS], grpc, 1) < 0) return -1;
        slice_t rid = e->request_id.n ? e->request_id : (rh->have_xrid ? rh->xrid : NOSLICE);
        if (col_str(&b->str[S_REQUEST_ID], rid, 1) < 0) return -1;
        if (rh->nonempty) {
            int t = trace_id(b, rh);
            if (t) return t;
        } else if (col_str(&b->str[S_TRACE_ID], NOSLICE, 1) < 0) {
            return -1;
        }
        if (col_str(&b->str[S_USER_AGENT], e->user_agent, e->user_agent.n > 0) < 0 ||
            col_str(&b->str[S_CODE_DETAILS], e->code_details, e->code_details.n > 0) < 0)
            return -1;
    } else {
        proto = 2;
        if (e->received > INT64_MAX || e->sent > INT64_MAX) return 1;
        req_bytes = (int64_t)e->received;
        resp_bytes = (int64_t)e->sent;
        if (col_str(&b->str[S_PATH], NOSLICE, 0) < 0 ||
            col_str(&b->str[S_AUTHORITY], NOSLICE, 0) < 0 ||
            col_str(&b->str[S_GRPC_STATUS], NOSLICE, 1) < 0 ||
            col_str(&b->str[S_REQUEST_ID], NOSLICE, 1) < 0 ||
            col_str(&b->str[S_TRACE_ID], NOSLICE, 1) < 0 ||
            col_str(&b->str[S_USER_AGENT], NOSLICE, 0) < 0 ||
            col_str(&b->str[S_CODE_DETAILS], NOSLICE, 0) < 0)
            return -1;
    }
    if (col_fixed(&b->fixed[F_RESPONSE_CODE], &code, 4, 1) < 0 ||
        col_fixed(&b->fixed[F_REQ_BYTES], &req_bytes, 8, 1) < 0 ||
        col_fixed(&b->fixed[F_RESP_BYTES], &resp_bytes, 8, 1) < 0 ||
        col_fixed(&b->fixed[F_PROTOCOL], &proto, 1, 1) < 0 ||
        col_fixed(&b->fixed[F_METHOD], &method, 1, method != 0) < 0)
        return -1;
    b->rows++;
    return 0;
}

/* One StreamAccessLogsMessage; 1 = decline, -1 = error. */
static int decode_message(batch_t *b, const uint8_t *payload, size_t n, int32_t local_id,
                          int64_t default_ts, Py_ssize_t rec) {
    rd_t r = {payload, payload + n};
    int kind_seen = -1;
    int64_t before = (int64_t)b->rows;
    entry_t e;
    while (r.p < r.end) {
        uint32_t f, wt;
        slice_t x;
        if (rd_tag(&r, &f, &wt) < 0) return 1;
        if (f == 2 || f == 3) {
            int kind = f == 2 ? 0 : 1;
            if (wt != WT_LEN) return 1;
            /* http_logs and tcp_logs share a oneof: a switch (or a repeat, which merges)
               is left to the reference decoder */
            if (kind_seen != -1) return 1;
            kind_seen = kind;
            if (rd_len(&r, &x) < 0) return 1;
            rd_t lr = {x.p, x.p + x.n};
            while (lr.p < lr.end) {
                uint32_t lf, lwt;
                slice_t raw;
                if (rd_tag(&lr, &lf, &lwt) < 0) return 1;
                if (lf != 1) {
                    if (rd_skip(&lr, lwt) < 0) return 1;
                    continue;
                }
                if (lwt != WT_LEN || rd_len(&lr, &raw) < 0) return 1;
                if (parse_entry(raw, kind, &e) < 0) return 1;
                if (e.intermediate) continue;
                int rc = emit(b, &e, kind, local_id, default_ts, rec, raw, payload);
                if (rc) return rc;
            }
        } else if (rd_skip(&r, wt) < 0) {
            return 1;
        }
    }
    int64_t rows = (int64_t)b->rows - before;
    return buf_put(&b->rows_per_record, &rows, 8);
}

PyDoc_STRVAR(decode_doc,
"decode(payloads, local_ids, default_ts) -> dict | None\n\n"
"Columns of the requests rows of many serialized StreamAccessLogsMessages (one per record),\n"
"or None when the batch needs the reference decoder. local_ids[i] names record i's local\n"
"workload (identity keys include it); default_ts[i] is its receive time in microseconds.");

static PyObject *decode(PyObject *self, PyObject *args) {
    PyObject *payloads, *local_ids, *default_ts;
    if (!PyArg_ParseTuple(args, "O!O!O!", &PyList_Type, &payloads, &PyList_Type, &local_ids,
                          &PyList_Type, &default_ts))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(payloads);
    if (PyList_GET_SIZE(local_ids) != n || PyList_GET_SIZE(default_ts) != n) {
        PyErr_SetString(PyExc_ValueError, "payloads, local_ids and default_ts differ in length");
        return NULL;
    }
    batch_t b;
    memset(&b, 0, sizeof b);
    for (int i = 0; i < N_STR; i++) b.str[i].is_string = 1;
    PyObject *result = NULL;
    b.distinct = PyList_New(0);
    if (!b.distinct) goto done;
    for (int i = 0; i < N_STR; i++) {
        int32_t zero = 0;
        if (buf_put(&b.str[i].offsets, &zero, 4) < 0) goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *p = PyList_GET_ITEM(payloads, i);
        if (!PyBytes_Check(p)) {
            PyErr_Format(PyExc_TypeError, "payloads[%zd] is not bytes", i);
            goto done;
        }
        long lid = PyLong_AsLong(PyList_GET_ITEM(local_ids, i));
        long long dts = PyLong_AsLongLong(PyList_GET_ITEM(default_ts, i));
        if (PyErr_Occurred()) goto done;
        int rc = decode_message(&b, (const uint8_t *)PyBytes_AS_STRING(p),
                                (size_t)PyBytes_GET_SIZE(p), (int32_t)lid, (int64_t)dts, i);
        if (rc < 0) goto done;
        if (rc > 0) {
            result = Py_NewRef(Py_None);
            goto done;
        }
    }
    for (int i = 0; i < N_STR; i++)
        if (b.str[i].data.len > INT32_MAX) {
            result = Py_NewRef(Py_None); /* over Arrow's 32-bit string offsets: let Python split */
            goto done;
        }
    result = PyDict_New();
    if (!result) goto done;
    for (int i = 0; i < N_STR; i++) {
        PyObject *c = col_result(&b.str[i], b.rows);
        if (!c || PyDict_SetItemString(result, STR_NAMES[i], c) < 0) {
            Py_XDECREF(c);
            Py_CLEAR(result);
            goto done;
        }
        Py_DECREF(c);
    }
    for (int i = 0; i < N_FIXED; i++) {
        PyObject *c = col_result(&b.fixed[i], b.rows);
        if (!c || PyDict_SetItemString(result, FIXED_NAMES[i], c) < 0) {
            Py_XDECREF(c);
            Py_CLEAR(result);
            goto done;
        }
        Py_DECREF(c);
    }
    PyObject *rows = PyLong_FromSsize_t(b.rows);
    PyObject *per = buf_bytes(&b.rows_per_record);
    if (!rows || !per || PyDict_SetItemString(result, "rows", rows) < 0 ||
        PyDict_SetItemString(result, "rows_per_record", per) < 0 ||
        PyDict_SetItemString(result, "distinct", b.distinct) < 0)
        Py_CLEAR(result);
    Py_XDECREF(rows);
    Py_XDECREF(per);
done:
    batch_free(&b);
    return result;
}

static PyMethodDef methods[] = {
    {"decode", decode, METH_VARARGS, decode_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "_als_wire",
    .m_doc = "Envoy ALS v3 wire format -> requests column buffers (collector/decode/envoy_als_fast.py).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__als_wire(void) { return PyModule_Create(&module); }
