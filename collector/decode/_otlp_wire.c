/* OTLP ExportTraceServiceRequest wire format -> column buffers of the `spans` table.
 *
 * An accelerator for collector/decode/otlp_traces.py, which stays the reference: this module
 * reads the fields that decoder reads (through the shallow messages of otlp_wire.py and the real
 * AnyValue/KeyValue messages for attributes), derives the promoted semantic-convention columns
 * with the same rules, and writes the attributes and links JSON exactly as the reference's
 * canonical form (attributes.py: compact, keys sorted, Python's repr for doubles). It returns
 * None ("decline") for anything it does not reproduce exactly: malformed wire data, groups,
 * a known field with an unexpected wire type, invalid UTF-8, an AnyValue with more than one
 * value field or a string_value_strindex, KeyValue.key_strindex, a key or value sent twice,
 * AnyValue nesting deeper than MAX_NEST, more than MAX_ATTRS attributes in one set, non-ASCII
 * text where the reference would use Unicode rules (status code strings, URL hosts), URLs with
 * spaces, controls or brackets, a scope sent after spans of its ScopeSpans. The caller then
 * decodes the request in Python, which gives the same rows or the precise DecodeError.
 *
 * Resources are not decoded here: `resources()` lists each ResourceSpans' encoded Resource,
 * Python resolves each once (attributes.resource_for) and passes `decode()` the resulting
 * service columns, which it writes into every row of that ResourceSpans. Timestamps and
 * durations follow otlp_traces._table (no start: the receive time; no end: the start).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "_wire_read.h"

#define MAX_NEST 16   /* AnyValue arrays/kvlists inside an attribute value */
#define MAX_ATTRS 512 /* attributes of one span or entries of one kvlist (sorted by insertion) */

/* ---- growable byte buffers ---------------------------------------------------------------- */

/* Copied into exact-size bytes at the end: building the columns in bytes objects and
 * shrinking them (_PyBytes_Resize) measured slower, the allocator then maps fresh pages. */
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
        return FAIL;
    }
    b->d = d;
    b->cap = cap;
    return OK;
}

static inline int reserve(buf_t *b, size_t n) {
    if (__builtin_expect(b->len + n > b->cap, 0)) return buf_grow(b, n);
    return OK;
}

/* memcpy for the many short pieces (keys, names, ids): no call, overlapping word moves */
static inline void copy(char *d, const void *src, size_t n) {
    const uint8_t *s = src;
    if (n <= 32) {
        if (n > 16) {
            uint64_t a[2], z[2];
            memcpy(a, s, 16);
            memcpy(z, s + n - 16, 16);
            memcpy(d, a, 16);
            memcpy(d + n - 16, z, 16);
        } else if (n >= 8) {
            uint64_t a, z;
            memcpy(&a, s, 8);
            memcpy(&z, s + n - 8, 8);
            memcpy(d, &a, 8);
            memcpy(d + n - 8, &z, 8);
        } else if (n >= 4) {
            uint32_t a, z;
            memcpy(&a, s, 4);
            memcpy(&z, s + n - 4, 4);
            memcpy(d, &a, 4);
            memcpy(d + n - 4, &z, 4);
        } else if (n) {
            d[0] = (char)s[0];
            d[n >> 1] = (char)s[n >> 1];
            d[n - 1] = (char)s[n - 1];
        }
    } else {
        memcpy(d, s, n);
    }
}

static inline int put(buf_t *b, const void *p, size_t n) {
    TRY(reserve(b, n));
    copy(b->d + b->len, p, n);
    b->len += n;
    return OK;
}

static inline int putc1(buf_t *b, char c) {
    TRY(reserve(b, 1));
    b->d[b->len++] = c;
    return OK;
}

static inline int puts0(buf_t *b, const char *s) { return put(b, s, strlen(s)); }

static void buf_free(buf_t *b) {
    PyMem_Free(b->d);
    b->d = NULL;
    b->len = b->cap = 0;
}

static PyObject *buf_bytes(const buf_t *b) {
    return PyBytes_FromStringAndSize(b->d ? b->d : "", (Py_ssize_t)b->len);
}

/* A column with a validity byte per row (packed into an Arrow bitmap at the end). Room for
 * each row's offset and validity byte is reserved once per row (rows_reserve). */
typedef struct {
    buf_t data, offsets, valid;
    Py_ssize_t nulls;
    int is_string;
} col_t;

static inline int col_str(col_t *c, const void *p, size_t n, int valid) {
    if (valid) {
        TRY(put(&c->data, p, n));
    } else {
        c->nulls++;
    }
    if (c->data.len > INT32_MAX) return DECLINE; /* over Arrow's 32-bit string offsets */
    int32_t off = (int32_t)c->data.len;
    memcpy(c->offsets.d + c->offsets.len, &off, 4);
    c->offsets.len += 4;
    c->valid.d[c->valid.len++] = (char)(valid != 0);
    return OK;
}

static inline int col_i32(col_t *c, int32_t value, int valid) {
    if (!valid) c->nulls++;
    memcpy(c->data.d + c->data.len, &value, 4);
    c->data.len += 4;
    c->valid.d[c->valid.len++] = (char)(valid != 0);
    return OK;
}

/* (validity bitmap or None, offsets or None, data, null count) as a Python tuple. */
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

/* ---- JSON text, as json.JSONEncoder(ensure_ascii=False, separators=(",", ":")) writes it -- */

static const char HEX[] = "0123456789abcdef";

static int json_str(buf_t *out, const uint8_t *p, size_t n) {
    if (out->len + n + 2 > out->cap) TRY(buf_grow(out, n + 2));
    out->d[out->len++] = '"';
    size_t run = 0, i = 0;
    /* 8 bytes at a time while none needs an escape (< 0x20, '"', '\\') */
    for (; i + 8 <= n; i += 8) {
        uint64_t x;
        memcpy(&x, p + i, 8);
        const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
        uint64_t q = x ^ (ones * '"'), bs = x ^ (ones * '\\');
        uint64_t hit = ((x - ones * 0x20) | (q - ones) | (bs - ones)) & ~x & highs;
        if (hit) break;
    }
    for (; i < n; i++) {
        uint8_t c = p[i];
        if (__builtin_expect(c >= 0x20 && c != '"' && c != '\\', 1)) continue;
        TRY(put(out, p + run, i - run));
        run = i + 1;
        char esc[6] = {'\\', 0, 0, 0, 0, 0};
        size_t len = 2;
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = HEX[c >> 4];
            esc[5] = HEX[c & 15];
            len = 6;
        }
        TRY(put(out, esc, len));
    }
    TRY(put(out, p + run, n - run));
    return putc1(out, '"');
}

/* Bytes of the first `cut` code points of valid UTF-8 (cut 0: all), like str[:cut]. */
static size_t cut_len(const uint8_t *p, size_t n, size_t cut) {
    if (!cut || n <= cut) return n;
    size_t cps = 0;
    for (size_t i = 0; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            if (cps == cut) return i;
            cps++;
        }
    }
    return n;
}

static int base64(buf_t *out, slice_t s) {
    static const char A[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i = 0;
    for (; i + 3 <= s.n; i += 3) {
        uint32_t v = (uint32_t)s.p[i] << 16 | (uint32_t)s.p[i + 1] << 8 | s.p[i + 2];
        char q[4] = {A[v >> 18], A[(v >> 12) & 63], A[(v >> 6) & 63], A[v & 63]};
        TRY(put(out, q, 4));
    }
    if (s.n - i == 1) {
        uint32_t v = (uint32_t)s.p[i] << 16;
        char q[4] = {A[v >> 18], A[(v >> 12) & 63], '=', '='};
        TRY(put(out, q, 4));
    } else if (s.n - i == 2) {
        uint32_t v = (uint32_t)s.p[i] << 16 | (uint32_t)s.p[i + 1] << 8;
        char q[4] = {A[v >> 18], A[(v >> 12) & 63], A[(v >> 6) & 63], '='};
        TRY(put(out, q, 4));
    }
    return OK;
}

/* ---- attribute values ---------------------------------------------------------------------- */

enum { V_NONE, V_STR, V_INT, V_BOOL, V_DBL, V_ARR, V_KV };

typedef struct {
    int type, truthy;
    int64_t i;
    double d;
    /* V_STR: the text itself, in the payload or a constant (txt_p), else in walker.txt */
    const uint8_t *txt_p;
    size_t txt_off, txt_len;
} val_t;

typedef struct {
    slice_t key, value;
    int has_value;
    size_t index;
} kv_t;

typedef struct {
    size_t cut;          /* attribute value length limit in code points (0: none) */
    buf_t frag, txt, tmp; /* per span: "key":value fragments, texts of string values, base64 */
    buf_t attrs, links;   /* per span: raw attribute slices; links JSON */
} walker_t;

/* check_key 0: the caller checks the key's UTF-8 itself */
static inline __attribute__((always_inline)) int parse_kv(slice_t s, kv_t *kv, int check_key) {
    rd_t r = reader(s);
    int have_key = 0;
    kv->key.p = s.p;
    kv->key.n = 0;
    kv->has_value = 0;
    while (r.p < r.end) {
        uint32_t f, wt;
        TRY(rd_tag(&r, &f, &wt));
        if (f == 1) {
            if (have_key++) return DECLINE;
            EXPECT(wt, WT_LEN);
            TRY(rd_len(&r, &kv->key));
            if (check_key && !utf8_ok(kv->key)) return DECLINE;
        } else if (f == 2) {
            EXPECT(wt, WT_LEN);
            if (kv->has_value++) return DECLINE; /* a second value would merge */
            TRY(rd_len(&r, &kv->value));
        } else if (f == 3) {
            return DECLINE; /* key_strindex */
        } else {
            TRY(rd_skip(&r, wt));
        }
    }
    return OK;
}

static int key_cmp(const kv_t *a, const kv_t *b) {
    size_t n = a->key.n < b->key.n ? a->key.n : b->key.n;
    int c = n ? memcmp(a->key.p, b->key.p, n) : 0;
    if (c) return c;
    if (a->key.n != b->key.n) return a->key.n < b->key.n ? -1 : 1;
    return a->index < b->index ? -1 : (a->index > b->index);
}

static int any_value(walker_t *w, slice_t s, int depth, int cut_on, buf_t *out, val_t *v);

/* `stable`: p stays valid for the whole call (payload bytes, constants), else it is copied. */
static int write_text_value(walker_t *w, const uint8_t *p, size_t n, int cut_on, int stable,
                            buf_t *out, val_t *v) {
    if (cut_on) n = cut_len(p, n, w->cut);
    if (v) {
        v->type = V_STR;
        v->truthy = n > 0;
        v->txt_len = n;
        if (stable) {
            v->txt_p = p;
        } else {
            v->txt_p = NULL;
            v->txt_off = w->txt.len;
            TRY(put(&w->txt, p, n));
        }
    }
    return json_str(out, p, n);
}

/* 1 when every byte is ASCII and needs no JSON escape (no control, '"' or '\\'): then the
 * text is valid UTF-8, its JSON is itself in quotes, and a cut is a byte count. */
static inline int plain_ascii(const uint8_t *p, size_t n) {
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t x;
        memcpy(&x, p + i, 8);
        uint64_t q = x ^ (ones * '"'), bs = x ^ (ones * '\\');
        if (((x - ones * 0x20) | (q - ones) | (bs - ones) | x) & highs) return 0;
    }
    for (; i < n; i++)
        if (p[i] < 0x20 || p[i] >= 0x80 || p[i] == '"' || p[i] == '\\') return 0;
    return 1;
}

static int kvlist(walker_t *w, slice_t s, int depth, buf_t *out, size_t *distinct) {
    rd_t r = reader(s);
    kv_t *items = NULL;
    size_t n = 0, cap = 0;
    int rc = OK;
    while (r.p < r.end) {
        uint32_t f, wt;
        slice_t x;
        if ((rc = rd_tag(&r, &f, &wt))) goto done;
        if (f != 1) {
            if ((rc = rd_skip(&r, wt))) goto done;
            continue;
        }
        if (wt != WT_LEN || n >= MAX_ATTRS) {
            rc = DECLINE;
            goto done;
        }
        if ((rc = rd_len(&r, &x))) goto done;
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            kv_t *grown = PyMem_Realloc(items, cap * sizeof *items);
            if (!grown) {
                PyErr_NoMemory();
                rc = FAIL;
                goto done;
            }
            items = grown;
        }
        if ((rc = parse_kv(x, &items[n], 1))) goto done;
        items[n].index = n;
        n++;
    }
    for (size_t i = 1; i < n; i++) { /* insertion sort by (key, position) */
        kv_t t = items[i];
        size_t j = i;
        for (; j > 0 && key_cmp(&items[j - 1], &t) > 0; j--) items[j] = items[j - 1];
        items[j] = t;
    }
    if ((rc = putc1(out, '{'))) goto done;
    size_t written = 0;
    for (size_t i = 0; i < n; i++) {
        /* a repeated key keeps its last value (a dict built in order) */
        if (i + 1 < n && items[i + 1].key.n == items[i].key.n &&
            memcmp(items[i + 1].key.p, items[i].key.p, items[i].key.n) == 0)
            continue;
        if (written++ && (rc = putc1(out, ','))) goto done;
        if ((rc = json_str(out, items[i].key.p, items[i].key.n))) goto done;
        if ((rc = putc1(out, ':'))) goto done;
        if (items[i].has_value) {
            if ((rc = any_value(w, items[i].value, depth + 1, 0, out, NULL))) goto done;
        } else if ((rc = puts0(out, "null"))) {
            goto done;
        }
    }
    rc = putc1(out, '}');
    *distinct = written;
done:
    PyMem_Free(items);
    return rc;
}

/* The JSON of an AnyValue into `out`; `v` (top-level values only) gets what the promoted
 * columns need. `cut_on`: string values are cut to the length limit (not inside kvlists). */
static int any_value(walker_t *w, slice_t s, int depth, int cut_on, buf_t *out, val_t *v) {
    rd_t r = reader(s);
    uint32_t which = 0;
    uint64_t num = 0;
    slice_t x = {NULL, 0};
    if (s.n >= 2 && s.p[0] == 0x0a && s.p[1] < 0x80 && (size_t)s.p[1] + 2 == s.n) {
        /* the usual value: string_value alone, a one-byte length (what the loop would read) */
        which = 1;
        x.p = s.p + 2;
        x.n = s.p[1];
        r.p = r.end;
    }
    while (r.p < r.end) {
        uint32_t f, wt;
        TRY(rd_tag(&r, &f, &wt));
        if (f >= 1 && f <= 8) {
            if (which) return DECLINE; /* oneof switches and merges: the reference decides */
            which = f;
        }
        switch (f) {
        case 1:
            EXPECT(wt, WT_LEN);
            TRY(rd_len(&r, &x)); /* UTF-8 checked below */
            break;
        case 2:
        case 3:
            EXPECT(wt, WT_VARINT);
            TRY(rd_varint(&r, &num));
            break;
        case 4:
            EXPECT(wt, WT_I64);
            TRY(rd_fixed64(&r, &num));
            break;
        case 5:
        case 6:
        case 7:
            EXPECT(wt, WT_LEN);
            TRY(rd_len(&r, &x));
            break;
        case 8:
            return DECLINE; /* string_value_strindex */
        default:
            TRY(rd_skip(&r, wt));
        }
    }
    if (v) memset(v, 0, sizeof *v);
    char tmp[32];
    switch (which) {
    case 0:
        return puts0(out, "null");
    case 1: {
        if (!plain_ascii(x.p, x.n)) {
            if (!utf8_ok(x)) return DECLINE;
            return write_text_value(w, x.p, x.n, cut_on, 1, out, v);
        }
        size_t n = cut_on && w->cut && x.n > w->cut ? w->cut : x.n;
        if (v) {
            v->type = V_STR;
            v->truthy = n > 0;
            v->txt_p = x.p;
            v->txt_len = n;
        }
        TRY(reserve(out, n + 2));
        char *q = out->d + out->len;
        q[0] = '"';
        copy(q + 1, x.p, n);
        q[n + 1] = '"';
        out->len += n + 2;
        return OK;
    }
    case 2:
        if (v) {
            v->type = V_BOOL;
            v->truthy = num != 0;
        }
        return puts0(out, num ? "true" : "false");
    case 3: {
        int64_t i = (int64_t)num;
        if (v) {
            v->type = V_INT;
            v->i = i;
            v->truthy = i != 0;
        }
        /* str(int): digits of the magnitude, built from the end */
        uint64_t m = i < 0 ? (uint64_t)0 - (uint64_t)i : (uint64_t)i;
        char *q = tmp + sizeof tmp;
        do {
            *--q = (char)('0' + m % 10);
            m /= 10;
        } while (m);
        if (i < 0) *--q = '-';
        return put(out, q, (size_t)(tmp + sizeof tmp - q));
    }
    case 4: {
        double d;
        memcpy(&d, &num, 8);
        if (isnan(d)) return write_text_value(w, (const uint8_t *)"NaN", 3, cut_on, 1, out, v);
        if (isinf(d)) {
            const char *t = d > 0 ? "Infinity" : "-Infinity";
            return write_text_value(w, (const uint8_t *)t, strlen(t), cut_on, 1, out, v);
        }
        if (v) {
            v->type = V_DBL;
            v->d = d;
            v->truthy = d != 0.0;
        }
        char *repr = PyOS_double_to_string(d, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
        if (!repr) return FAIL;
        int rc = puts0(out, repr);
        PyMem_Free(repr);
        return rc;
    }
    case 7: {
        w->tmp.len = 0;
        TRY(base64(&w->tmp, x));
        /* tmp is not touched again before this copy: base64 values are leaves */
        return write_text_value(w, (const uint8_t *)w->tmp.d, w->tmp.len, cut_on, 0, out, v);
    }
    case 5: {
        if (depth >= MAX_NEST) return DECLINE;
        TRY(putc1(out, '['));
        rd_t a = reader(x);
        size_t count = 0;
        while (a.p < a.end) {
            uint32_t f, wt;
            slice_t e;
            TRY(rd_tag(&a, &f, &wt));
            if (f != 1) {
                TRY(rd_skip(&a, wt));
                continue;
            }
            EXPECT(wt, WT_LEN);
            TRY(rd_len(&a, &e));
            if (count++) TRY(putc1(out, ','));
            TRY(any_value(w, e, depth + 1, cut_on, out, NULL));
        }
        if (v) {
            v->type = V_ARR;
            v->truthy = count > 0;
        }
        return putc1(out, ']');
    }
    default: { /* 6: kvlist */
        if (depth >= MAX_NEST) return DECLINE;
        size_t distinct = 0;
        TRY(kvlist(w, x, depth, out, &distinct));
        if (v) {
            v->type = V_KV;
            v->truthy = distinct > 0;
        }
        return OK;
    }
    }
}

/* ---- promoted attributes ------------------------------------------------------------------- */

enum {
    K_HTTP_REQUEST_METHOD, K_HTTP_METHOD, K_HTTP_RESPONSE_STATUS, K_HTTP_STATUS, K_HTTP_ROUTE,
    K_SERVER_ADDRESS, K_NET_HOST_NAME, K_NET_PEER_NAME, K_UPSTREAM_CLUSTER, K_URL_FULL,
    K_HTTP_URL, K_ERROR, K_RPC_SERVICE, K_RPC_METHOD, K_RPC_GRPC_STATUS, K_GRPC_STATUS,
    K_PEER_SERVICE, K_DB_SYSTEM, K_DB_SYSTEM_NAME, K_DB_NAME, K_DB_NAMESPACE, K_MESSAGING,
    N_KEYS
};

static const char *KEYS[N_KEYS] = {
    "http.request.method", "http.method", "http.response.status_code", "http.status_code",
    "http.route", "server.address", "net.host.name", "net.peer.name", "upstream_cluster",
    "url.full", "http.url", "error", "rpc.service", "rpc.method", "rpc.grpc.status_code",
    "grpc.status_code", "peer.service", "db.system", "db.system.name", "db.name",
    "db.namespace", "messaging.system",
};
static size_t KEY_LEN[N_KEYS];

typedef struct {
    slice_t key, value;
    int has_value, promoted; /* promoted: K_* of the key, -1: none */
    val_t val;
    size_t frag_off, frag_len; /* in walker.frag: '"key":value' (cache misses only) */
    size_t val_off, val_len;   /* the value's JSON in span_attrs_t.vbase */
    uint64_t prefix;           /* bytes 1..8 of the fragment, big-endian, 0-padded */
} attr_t;

typedef struct {
    walker_t *w;
    attr_t *ents;
    const char *vbase; /* where the values' JSON is (walker.frag or the attributes column) */
    int found[N_KEYS]; /* index of the key's last entry, -1: absent */
} span_attrs_t;

/* d.get(key): NULL for absent keys and for values that are None */
static const attr_t *get(const span_attrs_t *a, int k) {
    int i = a->found[k];
    if (i < 0 || a->ents[i].val.type == V_NONE) return NULL;
    return &a->ents[i];
}

/* text(value): strings as they are, other values as their JSON (str() of numbers is the same) */
static slice_t text_of(const span_attrs_t *a, const attr_t *e) {
    slice_t s;
    if (e->val.type == V_STR) {
        s.p = e->val.txt_p ? e->val.txt_p : (const uint8_t *)a->w->txt.d + e->val.txt_off;
        s.n = e->val.txt_len;
    } else {
        s.p = (const uint8_t *)a->vbase + e->val_off;
        s.n = e->val_len;
    }
    return s;
}

static int col_text(col_t *c, const span_attrs_t *a, const attr_t *e) {
    if (!e) return col_str(c, "", 0, 0);
    slice_t s = text_of(a, e);
    return col_str(c, s.p, s.n, 1);
}

static int is_py_space(uint8_t c) { return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20); }

/* otlp_traces.int32: (1, n) for an int32 value, (0, _) for none; DECLINE where Python's
 * Unicode rules (str.strip, str.isdigit) would matter. */
static int int32_of(const span_attrs_t *a, const attr_t *e, int *valid, int32_t *out) {
    *valid = 0;
    *out = 0;
    if (!e) return OK;
    if (e->val.type == V_INT) {
        if (e->val.i >= INT32_MIN && e->val.i <= INT32_MAX) {
            *valid = 1;
            *out = (int32_t)e->val.i;
        }
    } else if (e->val.type == V_DBL) {
        double d = e->val.d;
        if (floor(d) == d && d >= -2147483648.0 && d <= 2147483647.0) {
            *valid = 1;
            *out = (int32_t)d;
        }
    } else if (e->val.type == V_STR) {
        slice_t s = text_of(a, e);
        for (size_t i = 0; i < s.n; i++)
            if (s.p[i] & 0x80) return DECLINE;
        while (s.n && is_py_space(s.p[0])) s.p++, s.n--;
        while (s.n && is_py_space(s.p[s.n - 1])) s.n--;
        if (s.n == 0 || s.n > 10) return OK;
        int64_t n = 0;
        for (size_t i = 0; i < s.n; i++) {
            if (s.p[i] < '0' || s.p[i] > '9') return OK;
            n = n * 10 + (s.p[i] - '0');
        }
        if (n <= INT32_MAX) {
            *valid = 1;
            *out = (int32_t)n;
        }
    }
    return OK;
}

/* urlsplit(url).hostname for plain ASCII URLs (DECLINE otherwise); host.n == 0: None. */
static int url_host(slice_t u, buf_t *tmp, slice_t *host) {
    host->n = 0;
    for (size_t i = 0; i < u.n; i++)
        if (u.p[i] <= 0x20 || u.p[i] >= 0x7f || u.p[i] == '[' || u.p[i] == ']') return DECLINE;
    const uint8_t *p = u.p, *e = u.p + u.n;
    const uint8_t *colon = memchr(p, ':', u.n);
    if (colon && colon > p && ((*p | 0x20) >= 'a' && (*p | 0x20) <= 'z')) {
        const uint8_t *q = p;
        for (; q < colon; q++)
            if (!((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9') ||
                  *q == '+' || *q == '-' || *q == '.'))
                break;
        if (q == colon) p = colon + 1;
    }
    if (e - p < 2 || p[0] != '/' || p[1] != '/') return OK;
    p += 2;
    const uint8_t *end = p;
    while (end < e && *end != '/' && *end != '?' && *end != '#') end++;
    const uint8_t *h = p;
    for (const uint8_t *q = p; q < end; q++)
        if (*q == '@') h = q + 1;
    const uint8_t *he = h;
    while (he < end && *he != ':') he++;
    if (he == h) return OK;
    tmp->len = 0;
    int lower = 1;
    for (const uint8_t *q = h; q < he; q++) {
        uint8_t c = *q;
        if (c == '%') lower = 0; /* a scoped zone keeps its case */
        if (lower && c >= 'A' && c <= 'Z') c = (uint8_t)(c + 32);
        TRY(putc1(tmp, (char)c));
    }
    host->p = (const uint8_t *)tmp->d;
    host->n = tmp->len;
    return OK;
}

/* ---- the batch ----------------------------------------------------------------------------- */

enum {
    C_TRACE_ID, C_SPAN_ID, C_PARENT, C_NAME, C_KIND, C_STATUS_CODE, C_STATUS_MESSAGE,
    C_HTTP_METHOD, C_HTTP_ROUTE, C_RPC_SERVICE, C_RPC_METHOD, C_PEER_SERVICE, C_SERVER_ADDRESS,
    C_ATTRIBUTES, C_DB_SYSTEM, C_DB_NAME, C_MESSAGING, C_LINKS, C_SCOPE_NAME,
    C_SERVICE_NAME, C_SERVICE_NAMESPACE, C_SERVICE_VERSION, C_RESOURCE_ATTRIBUTES,
    C_HTTP_STATUS, C_RPC_STATUS, N_COLS
};
#define N_STR_COLS C_HTTP_STATUS

static const char *COL_NAMES[N_COLS] = {
    "trace_id", "span_id", "parent_span_id", "name", "kind", "status_code", "status_message",
    "http_method", "http_route", "rpc_service", "rpc_method", "peer_service", "server_address",
    "attributes", "db_system", "db_name", "messaging_system", "links", "scope_name",
    "service_name", "service_namespace", "service_version", "resource_attributes",
    "http_status_code", "rpc_grpc_status_code",
};

static const char *KINDS[6] = {"internal", "internal", "server", "client", "producer", "consumer"};
static const char *STATUSES[3] = {"unset", "ok", "error"};
static size_t KIND_LEN[6], STATUS_LEN[3];

/* Key shapes: spans of one source repeat the same attribute keys in the same order, so the
 * per-key work (UTF-8 check, JSON escape, promoted-key lookup) and the sort are done once per
 * shape. The output order depends on the keys alone (distinct keys are ordered by their
 * '"key"' text; repeated keys by key and position), so a span whose keys equal a cached
 * shape's byte for byte writes its values straight into the attributes column. */
#define SHAPE_WAYS 4
#define SHAPE_N 64      /* attributes of a cacheable shape, at most */
#define SHAPE_KEYS 2048 /* raw key bytes */
#define SHAPE_FRAGS 4096 /* '"key":' bytes */

typedef struct {
    size_t n, n_out; /* n 0: empty; n_out: entries written (a repeated key writes its last) */
    uint64_t used;
    uint16_t key_off[SHAPE_N + 1], frag_off[SHAPE_N + 1]; /* by position */
    int8_t promoted[SHAPE_N];                             /* by position: K_* or -1 */
    uint8_t written[SHAPE_N];                             /* by position */
    uint16_t ord[SHAPE_N];                                /* positions in output order */
    uint8_t keys[SHAPE_KEYS];
    char frags[SHAPE_FRAGS];
} shape_t;

typedef struct {
    walker_t w;
    col_t cols[N_COLS];
    buf_t start_us, end_us, duration_ms, ents, order, hostbuf, rows_per_record, dropped_per;
    shape_t *shapes; /* SHAPE_WAYS */
    int shape_last;
    uint64_t shape_clock;
    Py_ssize_t row_cap; /* rows with room reserved in every column's fixed-size buffers */
    size_t bytes_total, bytes_done; /* payload bytes of the call; of the requests before */
    const uint8_t *request;          /* the request being decoded */
    Py_ssize_t rows;
    uint64_t count_limit, dropped, received_ns;
    Py_ssize_t resource, n_resources;
    slice_t (*res_cols)[4]; /* per ResourceSpans: service name, namespace, version, attributes */
} batch_t;

static void batch_free(batch_t *b) {
    for (int i = 0; i < N_COLS; i++) {
        buf_free(&b->cols[i].data);
        buf_free(&b->cols[i].offsets);
        buf_free(&b->cols[i].valid);
    }
    buf_free(&b->start_us);
    buf_free(&b->end_us);
    buf_free(&b->duration_ms);
    buf_free(&b->rows_per_record);
    buf_free(&b->dropped_per);
    PyMem_Free(b->res_cols);
    PyMem_Free(b->shapes);
    buf_free(&b->ents);
    buf_free(&b->order);
    buf_free(&b->hostbuf);
    buf_free(&b->w.frag);
    buf_free(&b->w.txt);
    buf_free(&b->w.tmp);
    buf_free(&b->w.attrs);
    buf_free(&b->w.links);
}

static int hold(buf_t *b, size_t total) {
    return total > b->cap ? buf_grow(b, total - b->len) : OK;
}

/* Room for one more row's offsets, validity bytes, ints and timestamps, for all columns.
 * Past the first rows, room for the rows the rest of the payload bytes should hold (the
 * string columns too, at their bytes per row so far): growing by doubling would copy. */
static int rows_reserve(batch_t *b, const uint8_t *at) {
    if (__builtin_expect(b->rows < b->row_cap, 1)) return OK;
    size_t rows = (size_t)b->rows, cap = rows ? rows * 2 : 32;
    size_t done = b->bytes_done + (size_t)(at - b->request);
    if (rows && done) {
        double expect = (double)rows * ((double)b->bytes_total / (double)done) * 1.1 + 16;
        if (expect > (double)rows * 64) expect = (double)rows * 64; /* a bounded guess */
        if (expect > (double)cap) cap = (size_t)expect;
        for (int i = 0; i < N_STR_COLS; i++) {
            buf_t *d = &b->cols[i].data;
            TRY(hold(d, (size_t)((double)d->len / (double)rows * (double)cap) + 64));
        }
    }
    for (int i = 0; i < N_COLS; i++) {
        col_t *c = &b->cols[i];
        TRY(hold(&c->valid, cap));
        TRY(hold(c->is_string ? &c->offsets : &c->data, (cap + 1) * 4));
    }
    TRY(hold(&b->start_us, cap * 8));
    TRY(hold(&b->end_us, cap * 8));
    TRY(hold(&b->duration_ms, cap * 8));
    b->row_cap = (Py_ssize_t)cap;
    return OK;
}

static uint16_t HEX2[256]; /* a byte's two hex digits, as stored */

static int hex_col(col_t *c, slice_t s) {
    buf_t *d = &c->data;
    TRY(reserve(d, 2 * s.n));
    char *q = d->d + d->len;
    size_t i = 0;
    for (; i + 4 <= s.n; i += 4) { /* 4 bytes -> 8 digits in one word (little-endian) */
        uint32_t v;
        memcpy(&v, s.p + i, 4);
        uint64_t t = v;
        t = (t | t << 16) & 0x0000ffff0000ffffULL;
        t = (t | t << 8) & 0x00ff00ff00ff00ffULL; /* byte k at byte 2k */
        uint64_t nib = (t >> 4 & 0x000f000f000f000fULL) | (t & 0x000f000f000f000fULL) << 8;
        uint64_t hex = nib + 0x3030303030303030ULL +
                       ((nib + 0x0606060606060606ULL) >> 4 & 0x0101010101010101ULL) * 39;
        memcpy(q + 2 * i, &hex, 8);
    }
    for (; i < s.n; i++) memcpy(q + 2 * i, &HEX2[s.p[i]], 2);
    d->len += 2 * s.n;
    return col_str(c, "", 0, 1);
}

/* a == b for n bytes, without a call: keys are short */
static inline int same_bytes(const uint8_t *a, const uint8_t *b, size_t n) {
    if (n >= 8) {
        uint64_t x, y;
        for (size_t i = 0; i + 8 <= n; i += 8) {
            memcpy(&x, a + i, 8);
            memcpy(&y, b + i, 8);
            if (x != y) return 0;
        }
        memcpy(&x, a + n - 8, 8);
        memcpy(&y, b + n - 8, 8);
        return x == y;
    }
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i]) return 0;
    return 1;
}

static const shape_t *shape_find(batch_t *b, const attr_t *ents, size_t n) {
    if (!b->shapes || n > SHAPE_N) return NULL;
    for (int t = 0; t < SHAPE_WAYS; t++) {
        int k = (b->shape_last + t) % SHAPE_WAYS;
        shape_t *sh = &b->shapes[k];
        if (sh->n != n) continue;
        size_t i = 0;
        for (; i < n; i++) {
            size_t off = sh->key_off[i], len = sh->key_off[i + 1] - off;
            if (ents[i].key.n != len || !same_bytes(ents[i].key.p, sh->keys + off, len)) break;
        }
        if (i < n) continue;
        b->shape_last = k;
        sh->used = ++b->shape_clock;
        return sh;
    }
    return NULL;
}

/* Remember the shape of entries ents[0..n) (their fragments in walker.frag), written in the
 * order ord[0..n_out). */
static void shape_store(batch_t *b, const attr_t *ents, size_t n, const size_t *ord,
                        size_t n_out) {
    if (!b->shapes || n == 0 || n > SHAPE_N) return;
    size_t kb = 0, fb = 0;
    for (size_t i = 0; i < n; i++) {
        kb += ents[i].key.n;
        fb += ents[i].val_off - ents[i].frag_off;
    }
    if (kb > SHAPE_KEYS || fb > SHAPE_FRAGS) return;
    shape_t *sh = &b->shapes[0];
    for (int k = 1; k < SHAPE_WAYS; k++)
        if (b->shapes[k].used < sh->used) sh = &b->shapes[k];
    kb = fb = 0;
    for (size_t i = 0; i < n; i++) {
        const attr_t *e = &ents[i];
        size_t flen = e->val_off - e->frag_off;
        sh->key_off[i] = (uint16_t)kb;
        sh->frag_off[i] = (uint16_t)fb;
        if (e->key.n) memcpy(sh->keys + kb, e->key.p, e->key.n);
        memcpy(sh->frags + fb, b->w.frag.d + e->frag_off, flen);
        kb += e->key.n;
        fb += flen;
        sh->promoted[i] = (int8_t)e->promoted;
        sh->written[i] = 0;
    }
    sh->key_off[n] = (uint16_t)kb;
    sh->frag_off[n] = (uint16_t)fb;
    for (size_t j = 0; j < n_out; j++) {
        sh->ord[j] = (uint16_t)ord[j];
        sh->written[ord[j]] = 1;
    }
    sh->n = n;
    sh->n_out = n_out;
    sh->used = ++b->shape_clock;
}

static int frag_cmp(const batch_t *b, const attr_t *x, const attr_t *y) {
    if (x->prefix != y->prefix) return x->prefix < y->prefix ? -1 : 1;
    const char *f = b->w.frag.d;
    size_t n = x->frag_len < y->frag_len ? x->frag_len : y->frag_len;
    int c = memcmp(f + x->frag_off, f + y->frag_off, n);
    if (c) return c;
    return x->frag_len < y->frag_len ? -1 : (x->frag_len > y->frag_len);
}

static int raw_key_cmp(const attr_t *x, const attr_t *y) {
    size_t n = x->key.n < y->key.n ? x->key.n : y->key.n;
    int c = n ? memcmp(x->key.p, y->key.p, n) : 0;
    if (c) return c;
    return x->key.n < y->key.n ? -1 : (x->key.n > y->key.n);
}

/* The attributes JSON (attributes.entries_json) of entries ents[0..n) into `out`; the
 * positions written, in order, are left in b->order[0..*n_out). */
static int attrs_json(batch_t *b, attr_t *ents, size_t n, buf_t *out, size_t *n_out) {
    b->order.len = 0;
    for (size_t i = 0; i < n; i++) TRY(put(&b->order, &i, sizeof i));
    size_t *ord = (size_t *)b->order.d;
    /* fragments sorted as text (UTF-8 byte order is code point order, as Python compares) */
    for (size_t i = 1; i < n; i++) {
        size_t t = ord[i], j = i;
        for (; j > 0 && frag_cmp(b, &ents[ord[j - 1]], &ents[t]) > 0; j--) ord[j] = ord[j - 1];
        ord[j] = t;
    }
    int dup = 0;
    for (size_t i = 1; i < n; i++) /* equal keys sort next to each other ('"key":' prefix) */
        if (raw_key_cmp(&ents[ord[i - 1]], &ents[ord[i]]) == 0) dup = 1;
    if (dup) {
        /* a repeated key: json.dumps of the dict (last value wins, sorted by key) */
        for (size_t i = 1; i < n; i++) {
            size_t t = ord[i], j = i;
            for (; j > 0 && (raw_key_cmp(&ents[ord[j - 1]], &ents[t]) > 0 ||
                             (raw_key_cmp(&ents[ord[j - 1]], &ents[t]) == 0 && ord[j - 1] > t));
                 j--)
                ord[j] = ord[j - 1];
            ord[j] = t;
        }
    }
    TRY(putc1(out, '{'));
    size_t written = 0;
    for (size_t i = 0; i < n; i++) {
        if (dup && i + 1 < n && raw_key_cmp(&ents[ord[i]], &ents[ord[i + 1]]) == 0) continue;
        if (written) TRY(putc1(out, ','));
        const attr_t *e = &ents[ord[i]];
        TRY(put(out, b->w.frag.d + e->frag_off, e->frag_len));
        ord[written++] = ord[i]; /* compacted in place: written <= i */
    }
    *n_out = written;
    return putc1(out, '}');
}

typedef struct {
    slice_t trace_id, span_id, parent, name, status;
    uint64_t kind, start, end;
    size_t n_attrs, n_links;
} span_t;

static int parse_link(slice_t s, slice_t *tid, slice_t *sid) {
    rd_t r = reader(s);
    tid->n = sid->n = 0;
    tid->p = sid->p = s.p;
    while (r.p < r.end) {
        uint32_t f, wt;
        TRY(rd_tag(&r, &f, &wt));
        if (f == 1 || f == 2) {
            EXPECT(wt, WT_LEN);
            TRY(rd_len(&r, f == 1 ? tid : sid));
        } else {
            TRY(rd_skip(&r, wt));
        }
    }
    return OK;
}

static int put_hex(buf_t *out, slice_t s) {
    for (size_t i = 0; i < s.n; i++) {
        char h[2] = {HEX[s.p[i] >> 4], HEX[s.p[i] & 15]};
        TRY(put(out, h, 2));
    }
    return OK;
}

static int parse_span(batch_t *b, slice_t s, span_t *sp) {
    walker_t *w = &b->w;
    rd_t r = reader(s);
    static const span_t zero; /* a copy, not memset's rep stos */
    *sp = zero;
    w->attrs.len = 0;
    w->links.len = 0;
    TRY(putc1(&w->links, '['));
    while (r.p < r.end) {
        uint32_t f, wt;
        slice_t x;
        TRY(rd_tag(&r, &f, &wt));
        switch (f) {
        case 1:
        case 2:
        case 4:
        case 15:
            EXPECT(wt, WT_LEN);
            TRY(rd_len(&r, f == 1 ? &sp->trace_id : f == 2 ? &sp->span_id
                                   : f == 4 ? &sp->parent : &sp->status));
            break;
        case 5:
            TRY(rd_str(&r, wt, &sp->name));
            break;
        case 6:
            EXPECT(wt, WT_VARINT);
            TRY(rd_varint(&r, &sp->kind));
            break;
        case 7:
        case 8:
            EXPECT(wt, WT_I64);
            TRY(rd_fixed64(&r, f == 7 ? &sp->start : &sp->end));
            break;
        case 9:
            EXPECT(wt, WT_LEN);
            TRY(rd_len(&r, &x));
            TRY(put(&w->attrs, &x, sizeof x));
            sp->n_attrs++;
            break;
        case 13: {
            slice_t tid, sid;
            EXPECT(wt, WT_LEN);
            TRY(rd_len(&r, &x));
            TRY(parse_link(x, &tid, &sid));
            if (sp->n_links++) TRY(putc1(&w->links, ','));
            TRY(puts0(&w->links, "{\"span_id\":\""));
            TRY(put_hex(&w->links, sid));
            TRY(puts0(&w->links, "\",\"trace_id\":\""));
            TRY(put_hex(&w->links, tid));
            TRY(puts0(&w->links, "\"}"));
            break;
        }
        default:
            TRY(rd_skip(&r, wt));
        }
    }
    return putc1(&w->links, ']');
}

static int parse_status(slice_t s, int *code, slice_t *message) {
    rd_t r = reader(s);
    uint64_t c = 0;
    message->p = s.p;
    message->n = 0;
    while (r.p < r.end) {
        uint32_t f, wt;
        TRY(rd_tag(&r, &f, &wt));
        if (f == 2) {
            TRY(rd_str(&r, wt, message));
        } else if (f == 3) {
            EXPECT(wt, WT_VARINT);
            TRY(rd_varint(&r, &c));
        } else {
            TRY(rd_skip(&r, wt));
        }
    }
    int32_t c32 = (int32_t)(uint32_t)c;
    *code = c32 >= 0 && c32 < 3 ? c32 : 0;
    return OK;
}

static int emit_span(batch_t *b, slice_t s, slice_t scope_name) {
    walker_t *w = &b->w;
    col_t *c = b->cols;
    span_t sp;
    TRY(parse_span(b, s, &sp));
    int32_t k32 = (int32_t)(uint32_t)sp.kind;
    int kind = k32 >= 0 && k32 < 6 ? k32 : 0;
    int status = 0;
    slice_t message = {s.p, 0};
    if (sp.status.n) TRY(parse_status(sp.status, &status, &message));

    size_t n = sp.n_attrs;
    if (b->count_limit && n > b->count_limit) {
        b->dropped += n - b->count_limit;
        n = (size_t)b->count_limit;
    }
    if (n > MAX_ATTRS) return DECLINE;
    TRY(rows_reserve(b, s.p));
    span_attrs_t a;
    a.w = w;
    for (int k = 0; k < N_KEYS; k++) a.found[k] = -1;
    w->frag.len = w->txt.len = 0;
    b->ents.len = 0;
    TRY(reserve(&b->ents, n * sizeof(attr_t)));
    attr_t *ents = (attr_t *)b->ents.d;
    a.ents = ents;
    const slice_t *raws = (const slice_t *)w->attrs.d;
    for (size_t i = 0; i < n; i++) {
        kv_t kv;
        TRY(parse_kv(raws[i], &kv, 0)); /* keys: checked below or equal to checked ones */
        ents[i].key = kv.key;
        ents[i].value = kv.value;
        ents[i].has_value = kv.has_value;
    }
    buf_t *out = &c[C_ATTRIBUTES].data;
    const shape_t *sh = n ? shape_find(b, ents, n) : NULL;
    if (sh) {
        /* the keys' fragments and order are known: values go straight to the column */
        TRY(putc1(out, '{'));
        for (size_t j = 0; j < sh->n_out; j++) {
            attr_t *e = &ents[sh->ord[j]];
            size_t fo = sh->frag_off[sh->ord[j]], fl = sh->frag_off[sh->ord[j] + 1] - fo;
            TRY(reserve(out, fl + 1));
            if (j) out->d[out->len++] = ',';
            copy(out->d + out->len, sh->frags + fo, fl);
            out->len += fl;
            e->val_off = out->len;
            if (e->has_value) {
                TRY(any_value(w, e->value, 0, 1, out, &e->val));
            } else {
                memset(&e->val, 0, sizeof e->val);
                TRY(put(out, "null", 4));
            }
            e->val_len = out->len - e->val_off;
        }
        TRY(putc1(out, '}'));
        for (size_t i = 0; i < n; i++) {
            if (!sh->written[i] && ents[i].has_value) { /* a repeated key's earlier value */
                w->frag.len = 0;
                TRY(any_value(w, ents[i].value, 0, 1, &w->frag, NULL));
            }
            if (sh->promoted[i] >= 0) a.found[sh->promoted[i]] = (int)i;
        }
        a.vbase = out->d;
    } else if (n) {
        for (size_t i = 0; i < n; i++) {
            attr_t *e = &ents[i];
            if (!utf8_ok(e->key)) return DECLINE;
            e->frag_off = w->frag.len;
            TRY(json_str(&w->frag, e->key.p, e->key.n));
            TRY(putc1(&w->frag, ':'));
            e->val_off = w->frag.len;
            if (e->has_value) {
                TRY(any_value(w, e->value, 0, 1, &w->frag, &e->val));
            } else {
                memset(&e->val, 0, sizeof e->val);
                TRY(puts0(&w->frag, "null"));
            }
            e->frag_len = w->frag.len - e->frag_off;
            e->val_len = w->frag.len - e->val_off;
            e->prefix = 0;
            for (size_t j = 1; j < 9; j++)
                e->prefix =
                    e->prefix << 8 | (j < e->frag_len ? (uint8_t)w->frag.d[e->frag_off + j] : 0);
            e->promoted = -1;
            /* promoted keys: 5..25 bytes, first letters among "hsnuerpdmg" (a cheap pre-filter) */
            if (e->key.n >= 5 && e->key.n <= 25 && strchr("hsnuerpdmg", e->key.p[0])) {
                for (int k = 0; k < N_KEYS; k++)
                    if (KEY_LEN[k] == e->key.n && memcmp(KEYS[k], e->key.p, e->key.n) == 0) {
                        a.found[k] = (int)i; /* the last one wins, as in the reference's dict */
                        e->promoted = k;
                        break;
                    }
            }
        }
        size_t n_out;
        TRY(attrs_json(b, ents, n, out, &n_out));
        shape_store(b, ents, n, (const size_t *)b->order.d, n_out);
        a.vbase = w->frag.d;
    }

    TRY(hex_col(&c[C_TRACE_ID], sp.trace_id));
    TRY(hex_col(&c[C_SPAN_ID], sp.span_id));
    TRY(hex_col(&c[C_PARENT], sp.parent));
    TRY(col_str(&c[C_NAME], sp.name.p, sp.name.n, 1));
    TRY(col_str(&c[C_KIND], KINDS[kind], KIND_LEN[kind], 1));
    TRY(col_str(&c[C_STATUS_MESSAGE], message.p, message.n, 1));
    TRY(col_str(&c[C_LINKS], w->links.d, w->links.len, 1));
    TRY(col_str(&c[C_SCOPE_NAME], scope_name.p, scope_name.n, 1));
    /* as otlp_traces._table: no start time -> the receive time; no end -> the start */
    uint64_t start = sp.start ? sp.start : b->received_ns;
    uint64_t end = sp.end ? sp.end : start;
    double duration = end >= start ? (double)(end - start) / 1e6 : 0.0;
    int64_t start_us = (int64_t)(start / 1000), end_us = (int64_t)(end / 1000);
    memcpy(b->start_us.d + b->start_us.len, &start_us, 8); /* room: rows_reserve */
    memcpy(b->end_us.d + b->end_us.len, &end_us, 8);
    memcpy(b->duration_ms.d + b->duration_ms.len, &duration, 8);
    b->start_us.len += 8;
    b->end_us.len += 8;
    b->duration_ms.len += 8;
    if (b->resource >= b->n_resources) return DECLINE;
    for (int i = 0; i < 4; i++) {
        slice_t r = b->res_cols[b->resource][i];
        TRY(col_str(&c[C_SERVICE_NAME + i], r.p, r.n, 1));
    }

    if (n == 0) {
        TRY(col_str(&c[C_ATTRIBUTES], "{}", 2, 1));
        TRY(col_str(&c[C_STATUS_CODE], STATUSES[status], STATUS_LEN[status], 1));
        static const int derived[] = {C_HTTP_METHOD, C_HTTP_ROUTE, C_RPC_SERVICE, C_RPC_METHOD,
                                      C_PEER_SERVICE, C_SERVER_ADDRESS, C_DB_SYSTEM, C_DB_NAME,
                                      C_MESSAGING};
        for (size_t i = 0; i < sizeof derived / sizeof derived[0]; i++)
            TRY(col_str(&c[derived[i]], "", 0, 0));
        TRY(col_i32(&c[C_HTTP_STATUS], 0, 0));
        TRY(col_i32(&c[C_RPC_STATUS], 0, 0));
        b->rows++;
        return OK;
    }
    TRY(col_str(&c[C_ATTRIBUTES], "", 0, 1)); /* the JSON is in the data already */

    const attr_t *v = get(&a, K_ERROR);
    if (status == 0 && v) {
        int err = (v->val.type == V_BOOL && v->val.truthy) || (v->val.type == V_INT && v->val.i == 1) ||
                  (v->val.type == V_DBL && v->val.d == 1.0) ||
                  (v->val.type == V_STR && v->val.txt_len == 4 &&
                   memcmp(text_of(&a, v).p, "true", 4) == 0);
        if (err) status = 2;
    }
    TRY(col_str(&c[C_STATUS_CODE], STATUSES[status], STATUS_LEN[status], 1));

    v = get(&a, K_HTTP_REQUEST_METHOD);
    if (!v || !v->val.truthy) v = get(&a, K_HTTP_METHOD);
    TRY(col_text(&c[C_HTTP_METHOD], &a, v));
    int valid;
    int32_t num;
    v = get(&a, K_HTTP_RESPONSE_STATUS);
    TRY(int32_of(&a, v ? v : get(&a, K_HTTP_STATUS), &valid, &num));
    TRY(col_i32(&c[C_HTTP_STATUS], num, valid));
    TRY(col_text(&c[C_HTTP_ROUTE], &a, get(&a, K_HTTP_ROUTE)));

    /* server.address, else net.host.name / net.peer.name, else Envoy's upstream cluster
     * host, else the URL's host */
    v = get(&a, K_SERVER_ADDRESS);
    if (!v) v = get(&a, kind == 2 ? K_NET_HOST_NAME : K_NET_PEER_NAME);
    if (v) {
        TRY(col_text(&c[C_SERVER_ADDRESS], &a, v));
    } else {
        slice_t host = {NULL, 0};
        const attr_t *cl = get(&a, K_UPSTREAM_CLUSTER);
        if (cl && cl->val.type == V_STR) {
            slice_t t = text_of(&a, cl);
            if (t.n >= 9 && memcmp(t.p, "outbound|", 9) == 0) {
                size_t i = t.n;
                while (i > 0 && t.p[i - 1] != '|') i--;
                host.p = t.p + i;
                host.n = t.n - i;
            }
        }
        if (host.n == 0) {
            const attr_t *u = get(&a, K_URL_FULL);
            if (!u || !u->val.truthy) u = get(&a, K_HTTP_URL);
            if (u && u->val.type == V_STR) TRY(url_host(text_of(&a, u), &b->hostbuf, &host));
        }
        TRY(col_str(&c[C_SERVER_ADDRESS], host.p, host.n, host.n > 0));
    }

    TRY(col_text(&c[C_RPC_SERVICE], &a, get(&a, K_RPC_SERVICE)));
    TRY(col_text(&c[C_RPC_METHOD], &a, get(&a, K_RPC_METHOD)));
    v = get(&a, K_RPC_GRPC_STATUS);
    TRY(int32_of(&a, v ? v : get(&a, K_GRPC_STATUS), &valid, &num));
    TRY(col_i32(&c[C_RPC_STATUS], num, valid));
    TRY(col_text(&c[C_PEER_SERVICE], &a, get(&a, K_PEER_SERVICE)));
    v = get(&a, K_DB_SYSTEM);
    TRY(col_text(&c[C_DB_SYSTEM], &a, v ? v : get(&a, K_DB_SYSTEM_NAME)));
    v = get(&a, K_DB_NAME);
    TRY(col_text(&c[C_DB_NAME], &a, v ? v : get(&a, K_DB_NAMESPACE)));
    TRY(col_text(&c[C_MESSAGING], &a, get(&a, K_MESSAGING)));
    b->rows++;
    return OK;
}

static int parse_scope(slice_t s, slice_t *name) {
    rd_t r = reader(s);
    while (r.p < r.end) {
        uint32_t f, wt;
        slice_t x;
        TRY(rd_tag(&r, &f, &wt));
        if (f == 1) {
            TRY(rd_str(&r, wt, name)); /* a repeated scope merges: the last name wins */
        } else if (f == 2) {
            TRY(rd_str(&r, wt, &x));
        } else {
            TRY(rd_skip(&r, wt));
        }
    }
    return OK;
}

static int scope_spans(batch_t *b, slice_t s) {
    /* One pass: serializers write the scope (field 1) before the spans (field 2); a scope
     * after a span would rename rows already written, so that request is declined. */
    slice_t name = {s.p, 0}, x;
    int spans = 0;
    rd_t r = reader(s);
    while (r.p < r.end) {
        uint32_t f, wt;
        TRY(rd_tag(&r, &f, &wt));
        if (f == 1) {
            EXPECT(wt, WT_LEN);
            if (spans) return DECLINE;
            TRY(rd_len(&r, &x));
            TRY(parse_scope(x, &name));
        } else if (f == 2) {
            EXPECT(wt, WT_LEN);
            TRY(rd_len(&r, &x));
            TRY(emit_span(b, x, name));
            spans++;
        } else {
            TRY(rd_skip(&r, wt));
        }
    }
    return OK;
}

/* One ExportTraceServiceRequest; resources: a (offset, length) tuple per ResourceSpans
 * ((0, -1): no resource field), rows take their ResourceSpans' index. */
static int decode_request(batch_t *b, slice_t s, PyObject *resources) {
    /* resources != NULL: only list the resources (the `resources` function) */
    rd_t r = reader(s);
    while (r.p < r.end) {
        uint32_t f, wt;
        slice_t rs;
        TRY(rd_tag(&r, &f, &wt));
        if (f != 1) {
            TRY(rd_skip(&r, wt));
            continue;
        }
        EXPECT(wt, WT_LEN);
        TRY(rd_len(&r, &rs));
        slice_t res = {NULL, 0}, x;
        rd_t q = reader(rs);
        while (q.p < q.end) {
            uint32_t g, wt2;
            TRY(rd_tag(&q, &g, &wt2));
            if (g == 1 || g == 2) {
                EXPECT(wt2, WT_LEN);
                TRY(rd_len(&q, &x));
                if (g == 1)
                    res = x; /* declared as bytes in otlp_wire: the last one wins */
                else if (!resources)
                    TRY(scope_spans(b, x));
            } else {
                TRY(rd_skip(&q, wt2));
            }
        }
        b->resource++;
        if (!resources) continue;
        PyObject *t = res.p ? Py_BuildValue("(nn)", (Py_ssize_t)(res.p - s.p), (Py_ssize_t)res.n)
                            : Py_BuildValue("(nn)", (Py_ssize_t)0, (Py_ssize_t)-1);
        if (!t) return FAIL;
        int rc = PyList_Append(resources, t);
        Py_DECREF(t);
        if (rc < 0) return FAIL;
    }
    return OK;
}

PyDoc_STRVAR(resources_doc,
"resources(payload) -> list[tuple[int, int]] | None\n\n"
"(offset, length) of the encoded Resource of each ResourceSpans ((0, -1): none), or None\n"
"when the request needs the reference decoder.");

static PyObject *resources(PyObject *self, PyObject *args) {
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "y*", &view)) return NULL;
    batch_t b;
    memset(&b, 0, sizeof b);
    PyObject *result = PyList_New(0);
    if (result) {
        slice_t s = {(const uint8_t *)view.buf, (size_t)view.len};
        int rc = decode_request(&b, s, result);
        if (rc < 0) Py_CLEAR(result);
        if (rc > 0) Py_SETREF(result, Py_NewRef(Py_None));
    }
    PyBuffer_Release(&view);
    return result;
}

PyDoc_STRVAR(decode_doc,
"decode(payloads, received_ns, count_limit, value_length, resources) -> dict | None\n\n"
"Columns of the spans rows of many serialized ExportTraceServiceRequests (rows in order), or\n"
"None when one of them needs the reference decoder (otlp_traces.decode_traces). received_ns\n"
"holds each one's receive time; count_limit and value_length are the span attribute count\n"
"and value length limits (0: none); resources holds, per ResourceSpans of all requests in\n"
"order, the UTF-8 of its service name, namespace, version and attributes JSON.");

static PyObject *decode(PyObject *self, PyObject *args) {
    PyObject *payloads, *received, *res;
    unsigned long long count_limit, value_length;
    if (!PyArg_ParseTuple(args, "O!O!KKO!", &PyList_Type, &payloads, &PyList_Type, &received,
                          &count_limit, &value_length, &PyList_Type, &res))
        return NULL;
    Py_ssize_t n_payloads = PyList_GET_SIZE(payloads);
    if (PyList_GET_SIZE(received) != n_payloads) {
        PyErr_SetString(PyExc_ValueError, "payloads and received_ns differ in length");
        return NULL;
    }
    batch_t b;
    memset(&b, 0, sizeof b);
    b.count_limit = count_limit;
    PyObject *result = NULL;
    b.n_resources = PyList_GET_SIZE(res);
    b.res_cols = PyMem_Calloc((size_t)b.n_resources + 1, sizeof *b.res_cols);
    if (!b.res_cols) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < b.n_resources; i++) {
        PyObject *t = PyList_GET_ITEM(res, i);
        if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 4) {
            PyErr_SetString(PyExc_TypeError, "resources[i] must be a 4-tuple of bytes");
            goto done;
        }
        for (int j = 0; j < 4; j++) {
            PyObject *v = PyTuple_GET_ITEM(t, j);
            if (!PyBytes_Check(v)) {
                PyErr_SetString(PyExc_TypeError, "resources[i] must be a 4-tuple of bytes");
                goto done;
            }
            b.res_cols[i][j].p = (const uint8_t *)PyBytes_AS_STRING(v);
            b.res_cols[i][j].n = (size_t)PyBytes_GET_SIZE(v);
        }
    }
    b.w.cut = (size_t)value_length;
    b.shapes = PyMem_Calloc(SHAPE_WAYS, sizeof *b.shapes);
    if (!b.shapes) {
        PyErr_NoMemory();
        goto done;
    }
    for (int i = 0; i < N_COLS; i++) b.cols[i].is_string = i < N_STR_COLS;
    for (int i = 0; i < N_STR_COLS; i++) {
        int32_t zero = 0;
        if (put(&b.cols[i].offsets, &zero, 4) < 0) goto done;
    }
    for (Py_ssize_t i = 0; i < n_payloads; i++) {
        PyObject *p = PyList_GET_ITEM(payloads, i);
        if (PyBytes_Check(p)) b.bytes_total += (size_t)PyBytes_GET_SIZE(p);
    }
    for (Py_ssize_t i = 0; i < n_payloads; i++) {
        PyObject *p = PyList_GET_ITEM(payloads, i);
        if (!PyBytes_Check(p)) {
            PyErr_Format(PyExc_TypeError, "payloads[%zd] is not bytes", i);
            goto done;
        }
        b.received_ns = PyLong_AsUnsignedLongLong(PyList_GET_ITEM(received, i));
        if (PyErr_Occurred()) goto done;
        slice_t s = {(const uint8_t *)PyBytes_AS_STRING(p), (size_t)PyBytes_GET_SIZE(p)};
        b.request = s.p;
        Py_ssize_t rows_before = b.rows;
        uint64_t dropped_before = b.dropped;
        int rc = decode_request(&b, s, NULL);
        if (rc < 0) goto done;
        if (rc > 0) {
            result = Py_NewRef(Py_None);
            goto done;
        }
        b.bytes_done += s.n;
        int64_t rows = (int64_t)(b.rows - rows_before);
        uint64_t dropped = b.dropped - dropped_before;
        if (put(&b.rows_per_record, &rows, 8) < 0 || put(&b.dropped_per, &dropped, 8) < 0) goto done;
    }
    if (b.resource != b.n_resources) {
        PyErr_SetString(PyExc_ValueError, "resources: one 4-tuple per ResourceSpans expected");
        goto done;
    }
    result = PyDict_New();
    if (!result) goto done;
    for (int i = 0; i < N_COLS; i++) {
        PyObject *c = col_result(&b.cols[i], b.rows);
        if (!c || PyDict_SetItemString(result, COL_NAMES[i], c) < 0) {
            Py_XDECREF(c);
            Py_CLEAR(result);
            goto done;
        }
        Py_DECREF(c);
    }
    PyObject *rows = PyLong_FromSsize_t(b.rows);
    PyObject *start = buf_bytes(&b.start_us), *end = buf_bytes(&b.end_us);
    PyObject *duration = buf_bytes(&b.duration_ms);
    PyObject *dropped = buf_bytes(&b.dropped_per), *per = buf_bytes(&b.rows_per_record);
    if (!rows || !start || !end || !duration || !dropped || !per ||
        PyDict_SetItemString(result, "rows_per_record", per) < 0 ||
        PyDict_SetItemString(result, "rows", rows) < 0 ||
        PyDict_SetItemString(result, "start_ts", start) < 0 ||
        PyDict_SetItemString(result, "end_ts", end) < 0 ||
        PyDict_SetItemString(result, "duration_ms", duration) < 0 ||
        PyDict_SetItemString(result, "dropped", dropped) < 0)
        Py_CLEAR(result);
    Py_XDECREF(rows);
    Py_XDECREF(start);
    Py_XDECREF(end);
    Py_XDECREF(duration);
    Py_XDECREF(dropped);
    Py_XDECREF(per);
done:
    batch_free(&b);
    return result;
}

static PyMethodDef methods[] = {
    {"resources", resources, METH_VARARGS, resources_doc},
    {"decode", decode, METH_VARARGS, decode_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "_otlp_wire",
    .m_doc = "OTLP ExportTraceServiceRequest -> spans column buffers "
             "(collector/decode/otlp_traces_fast.py).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__otlp_wire(void) {
    for (int k = 0; k < N_KEYS; k++) KEY_LEN[k] = strlen(KEYS[k]);
    for (int k = 0; k < 6; k++) KIND_LEN[k] = strlen(KINDS[k]);
    for (int k = 0; k < 3; k++) STATUS_LEN[k] = strlen(STATUSES[k]);
    for (int i = 0; i < 256; i++) {
        char h[2] = {HEX[i >> 4], HEX[i & 15]};
        memcpy(&HEX2[i], h, 2);
    }
    return PyModule_Create(&module);
}
