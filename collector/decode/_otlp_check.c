/* The receive path's check of an OTLP Export*ServiceRequest, without building protobuf objects.
 *
 * An accelerator for collector/receivers/otlp.py `check`, which stays the reference: it parses
 * the request with upb and counts the items (spans, data points, log records), rejecting those
 * the decoders cannot repair later. `count(signal, payload)` walks the wire format once against
 * the message schemas below (the installed opentelemetry-proto's; a test holds the two equal)
 * and returns the number of items when it is sure that the reference would accept the whole
 * request as it is: upb would parse it (well-formed wire data, valid UTF-8 in every string
 * field) and no item would be rejected. For anything else it returns None ("decline") and the
 * caller runs the reference, which gives the precise error or the partial success: malformed
 * or truncated data, groups, a field number the schema does not know, a known field with an
 * unexpected wire type, invalid UTF-8, nesting deeper than MAX_DEPTH, an invalid span or log
 * record id, a metric without a name or with more than one data field.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "_wire_read.h"

#define MAX_DEPTH 48 /* message levels; upb's own limit is 100 */

/* Field kinds: how a field may appear on the wire. */
enum {
    K_VARINT,        /* int32/64, uint32/64, sint32/64, bool, enum */
    K_I64,           /* fixed64, sfixed64, double */
    K_I32,           /* fixed32, sfixed32, float */
    K_BYTES,         /* bytes: any content */
    K_STR,           /* string: valid UTF-8 */
    K_MSG,           /* a message, walked */
    K_PACKED_I64,    /* repeated fixed64/double: packed (LEN, a multiple of 8) or one I64 each */
    K_PACKED_VARINT, /* repeated varint: packed (LEN of varints) or one VARINT each */
};

/* What a field means to the count. */
enum { R_NONE, R_TRACE_ID, R_SPAN_ID, R_PARENT_ID, R_METRIC_NAME, R_METRIC_DATA, R_POINT };

/* Messages. */
enum {
    M_TRACES_REQ, M_RESOURCE_SPANS, M_SCOPE_SPANS, M_SPAN, M_EVENT, M_LINK, M_STATUS,
    M_RESOURCE, M_KEY_VALUE, M_ANY_VALUE, M_ARRAY_VALUE, M_KV_LIST, M_ENTITY_REF, M_SCOPE,
    M_LOGS_REQ, M_RESOURCE_LOGS, M_SCOPE_LOGS, M_LOG_RECORD,
    M_METRICS_REQ, M_RESOURCE_METRICS, M_SCOPE_METRICS, M_METRIC, M_GAUGE, M_SUM, M_HISTOGRAM,
    M_EXP_HISTOGRAM, M_SUMMARY, M_NUMBER_POINT, M_EXEMPLAR, M_HISTOGRAM_POINT,
    M_EXP_HISTOGRAM_POINT, M_BUCKETS, M_SUMMARY_POINT, M_QUANTILE,
    N_MESSAGES
};

/* What a message is to the count: nothing, a span, a log record or a metric. */
enum { I_NONE, I_SPAN, I_LOG, I_METRIC };

typedef struct {
    uint32_t num;
    uint8_t kind, sub, role;
} fdef_t;

typedef struct {
    const char *name; /* full protobuf name (for the schema test) */
    const fdef_t *fields;
    int n, item;
} mdef_t;

#define F(num, kind) {num, kind, 0, R_NONE}
#define FM(num, sub) {num, K_MSG, sub, R_NONE}
#define FR(num, kind, sub, role) {num, kind, sub, role}
#define MSG(id, name, item, ...)                                                      \
    static const fdef_t FIELDS_##id[] = {__VA_ARGS__};                                \
    static const mdef_t DEF_##id = {name, FIELDS_##id,                                \
                                    (int)(sizeof FIELDS_##id / sizeof(fdef_t)), item};

#define NS_C "opentelemetry.proto.common.v1."
#define NS_T "opentelemetry.proto.trace.v1."
#define NS_L "opentelemetry.proto.logs.v1."
#define NS_M "opentelemetry.proto.metrics.v1."

MSG(M_TRACES_REQ, "opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest", I_NONE,
    FM(1, M_RESOURCE_SPANS))
MSG(M_RESOURCE_SPANS, NS_T "ResourceSpans", I_NONE, FM(1, M_RESOURCE), FM(2, M_SCOPE_SPANS),
    F(3, K_STR))
MSG(M_SCOPE_SPANS, NS_T "ScopeSpans", I_NONE, FM(1, M_SCOPE), FM(2, M_SPAN), F(3, K_STR))
MSG(M_SPAN, NS_T "Span", I_SPAN, FR(1, K_BYTES, 0, R_TRACE_ID), FR(2, K_BYTES, 0, R_SPAN_ID),
    F(3, K_STR), FR(4, K_BYTES, 0, R_PARENT_ID), F(5, K_STR), F(6, K_VARINT), F(7, K_I64),
    F(8, K_I64), FM(9, M_KEY_VALUE), F(10, K_VARINT), FM(11, M_EVENT), F(12, K_VARINT),
    FM(13, M_LINK), F(14, K_VARINT), FM(15, M_STATUS), F(16, K_I32))
MSG(M_EVENT, NS_T "Span.Event", I_NONE, F(1, K_I64), F(2, K_STR), FM(3, M_KEY_VALUE),
    F(4, K_VARINT))
MSG(M_LINK, NS_T "Span.Link", I_NONE, F(1, K_BYTES), F(2, K_BYTES), F(3, K_STR),
    FM(4, M_KEY_VALUE), F(5, K_VARINT), F(6, K_I32))
MSG(M_STATUS, NS_T "Status", I_NONE, F(2, K_STR), F(3, K_VARINT))
MSG(M_RESOURCE, "opentelemetry.proto.resource.v1.Resource", I_NONE, FM(1, M_KEY_VALUE),
    F(2, K_VARINT), FM(3, M_ENTITY_REF))
MSG(M_KEY_VALUE, NS_C "KeyValue", I_NONE, F(1, K_STR), FM(2, M_ANY_VALUE), F(3, K_VARINT))
MSG(M_ANY_VALUE, NS_C "AnyValue", I_NONE, F(1, K_STR), F(2, K_VARINT), F(3, K_VARINT),
    F(4, K_I64), FM(5, M_ARRAY_VALUE), FM(6, M_KV_LIST), F(7, K_BYTES), F(8, K_VARINT))
MSG(M_ARRAY_VALUE, NS_C "ArrayValue", I_NONE, FM(1, M_ANY_VALUE))
MSG(M_KV_LIST, NS_C "KeyValueList", I_NONE, FM(1, M_KEY_VALUE))
MSG(M_ENTITY_REF, NS_C "EntityRef", I_NONE, F(1, K_STR), F(2, K_STR), F(3, K_STR), F(4, K_STR))
MSG(M_SCOPE, NS_C "InstrumentationScope", I_NONE, F(1, K_STR), F(2, K_STR), FM(3, M_KEY_VALUE),
    F(4, K_VARINT))

MSG(M_LOGS_REQ, "opentelemetry.proto.collector.logs.v1.ExportLogsServiceRequest", I_NONE,
    FM(1, M_RESOURCE_LOGS))
MSG(M_RESOURCE_LOGS, NS_L "ResourceLogs", I_NONE, FM(1, M_RESOURCE), FM(2, M_SCOPE_LOGS),
    F(3, K_STR))
MSG(M_SCOPE_LOGS, NS_L "ScopeLogs", I_NONE, FM(1, M_SCOPE), FM(2, M_LOG_RECORD), F(3, K_STR))
MSG(M_LOG_RECORD, NS_L "LogRecord", I_LOG, F(1, K_I64), F(2, K_VARINT), F(3, K_STR),
    FM(5, M_ANY_VALUE), FM(6, M_KEY_VALUE), F(7, K_VARINT), F(8, K_I32),
    FR(9, K_BYTES, 0, R_TRACE_ID), FR(10, K_BYTES, 0, R_SPAN_ID), F(11, K_I64), F(12, K_STR))

MSG(M_METRICS_REQ, "opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceRequest",
    I_NONE, FM(1, M_RESOURCE_METRICS))
MSG(M_RESOURCE_METRICS, NS_M "ResourceMetrics", I_NONE, FM(1, M_RESOURCE),
    FM(2, M_SCOPE_METRICS), F(3, K_STR))
MSG(M_SCOPE_METRICS, NS_M "ScopeMetrics", I_NONE, FM(1, M_SCOPE), FM(2, M_METRIC), F(3, K_STR))
MSG(M_METRIC, NS_M "Metric", I_METRIC, FR(1, K_STR, 0, R_METRIC_NAME), F(2, K_STR), F(3, K_STR),
    FR(5, K_MSG, M_GAUGE, R_METRIC_DATA), FR(7, K_MSG, M_SUM, R_METRIC_DATA),
    FR(9, K_MSG, M_HISTOGRAM, R_METRIC_DATA), FR(10, K_MSG, M_EXP_HISTOGRAM, R_METRIC_DATA),
    FR(11, K_MSG, M_SUMMARY, R_METRIC_DATA), FM(12, M_KEY_VALUE))
MSG(M_GAUGE, NS_M "Gauge", I_NONE, FR(1, K_MSG, M_NUMBER_POINT, R_POINT))
MSG(M_SUM, NS_M "Sum", I_NONE, FR(1, K_MSG, M_NUMBER_POINT, R_POINT), F(2, K_VARINT),
    F(3, K_VARINT))
MSG(M_HISTOGRAM, NS_M "Histogram", I_NONE, FR(1, K_MSG, M_HISTOGRAM_POINT, R_POINT),
    F(2, K_VARINT))
MSG(M_EXP_HISTOGRAM, NS_M "ExponentialHistogram", I_NONE,
    FR(1, K_MSG, M_EXP_HISTOGRAM_POINT, R_POINT), F(2, K_VARINT))
MSG(M_SUMMARY, NS_M "Summary", I_NONE, FR(1, K_MSG, M_SUMMARY_POINT, R_POINT))
MSG(M_NUMBER_POINT, NS_M "NumberDataPoint", I_NONE, F(2, K_I64), F(3, K_I64), F(4, K_I64),
    FM(5, M_EXEMPLAR), F(6, K_I64), FM(7, M_KEY_VALUE), F(8, K_VARINT))
MSG(M_EXEMPLAR, NS_M "Exemplar", I_NONE, F(2, K_I64), F(3, K_I64), F(4, K_BYTES), F(5, K_BYTES),
    F(6, K_I64), FM(7, M_KEY_VALUE))
MSG(M_HISTOGRAM_POINT, NS_M "HistogramDataPoint", I_NONE, F(2, K_I64), F(3, K_I64), F(4, K_I64),
    F(5, K_I64), F(6, K_PACKED_I64), F(7, K_PACKED_I64), FM(8, M_EXEMPLAR), FM(9, M_KEY_VALUE),
    F(10, K_VARINT), F(11, K_I64), F(12, K_I64))
MSG(M_EXP_HISTOGRAM_POINT, NS_M "ExponentialHistogramDataPoint", I_NONE, FM(1, M_KEY_VALUE),
    F(2, K_I64), F(3, K_I64), F(4, K_I64), F(5, K_I64), F(6, K_VARINT), F(7, K_I64),
    FM(8, M_BUCKETS), FM(9, M_BUCKETS), F(10, K_VARINT), FM(11, M_EXEMPLAR), F(12, K_I64),
    F(13, K_I64), F(14, K_I64))
MSG(M_BUCKETS, NS_M "ExponentialHistogramDataPoint.Buckets", I_NONE, F(1, K_VARINT),
    F(2, K_PACKED_VARINT))
MSG(M_SUMMARY_POINT, NS_M "SummaryDataPoint", I_NONE, F(2, K_I64), F(3, K_I64), F(4, K_I64),
    F(5, K_I64), FM(6, M_QUANTILE), FM(7, M_KEY_VALUE), F(8, K_VARINT))
MSG(M_QUANTILE, NS_M "SummaryDataPoint.ValueAtQuantile", I_NONE, F(1, K_I64), F(2, K_I64))

static const mdef_t *const DEFS[N_MESSAGES] = {
    [M_TRACES_REQ] = &DEF_M_TRACES_REQ,
    [M_RESOURCE_SPANS] = &DEF_M_RESOURCE_SPANS,
    [M_SCOPE_SPANS] = &DEF_M_SCOPE_SPANS,
    [M_SPAN] = &DEF_M_SPAN,
    [M_EVENT] = &DEF_M_EVENT,
    [M_LINK] = &DEF_M_LINK,
    [M_STATUS] = &DEF_M_STATUS,
    [M_RESOURCE] = &DEF_M_RESOURCE,
    [M_KEY_VALUE] = &DEF_M_KEY_VALUE,
    [M_ANY_VALUE] = &DEF_M_ANY_VALUE,
    [M_ARRAY_VALUE] = &DEF_M_ARRAY_VALUE,
    [M_KV_LIST] = &DEF_M_KV_LIST,
    [M_ENTITY_REF] = &DEF_M_ENTITY_REF,
    [M_SCOPE] = &DEF_M_SCOPE,
    [M_LOGS_REQ] = &DEF_M_LOGS_REQ,
    [M_RESOURCE_LOGS] = &DEF_M_RESOURCE_LOGS,
    [M_SCOPE_LOGS] = &DEF_M_SCOPE_LOGS,
    [M_LOG_RECORD] = &DEF_M_LOG_RECORD,
    [M_METRICS_REQ] = &DEF_M_METRICS_REQ,
    [M_RESOURCE_METRICS] = &DEF_M_RESOURCE_METRICS,
    [M_SCOPE_METRICS] = &DEF_M_SCOPE_METRICS,
    [M_METRIC] = &DEF_M_METRIC,
    [M_GAUGE] = &DEF_M_GAUGE,
    [M_SUM] = &DEF_M_SUM,
    [M_HISTOGRAM] = &DEF_M_HISTOGRAM,
    [M_EXP_HISTOGRAM] = &DEF_M_EXP_HISTOGRAM,
    [M_SUMMARY] = &DEF_M_SUMMARY,
    [M_NUMBER_POINT] = &DEF_M_NUMBER_POINT,
    [M_EXEMPLAR] = &DEF_M_EXEMPLAR,
    [M_HISTOGRAM_POINT] = &DEF_M_HISTOGRAM_POINT,
    [M_EXP_HISTOGRAM_POINT] = &DEF_M_EXP_HISTOGRAM_POINT,
    [M_BUCKETS] = &DEF_M_BUCKETS,
    [M_SUMMARY_POINT] = &DEF_M_SUMMARY_POINT,
    [M_QUANTILE] = &DEF_M_QUANTILE,
};

/* FIELD_AT[message][number]: 1 + the field's index in its definition, 0 for none (filled at
 * import). Every field number in the schemas is at most MAX_FIELD. */
#define MAX_FIELD 16
static uint8_t FIELD_AT[N_MESSAGES][MAX_FIELD + 1];

static int index_fields(void) {
    for (int i = 0; i < N_MESSAGES; i++)
        for (int j = 0; j < DEFS[i]->n; j++) {
            uint32_t num = DEFS[i]->fields[j].num;
            if (num > MAX_FIELD) {
                PyErr_Format(PyExc_SystemError, "%s: field %u over MAX_FIELD", DEFS[i]->name, num);
                return -1;
            }
            FIELD_AT[i][num] = (uint8_t)(j + 1);
        }
    return 0;
}

/* The request message of each signal, in collector.receivers.otlp.SIGNALS order. */
static const int REQUESTS[3] = {M_TRACES_REQ, M_METRICS_REQ, M_LOGS_REQ};

/* ---- the walk ------------------------------------------------------------------------------ */

/* One id field's last value (the wire's last occurrence wins, as in upb). */
typedef struct {
    size_t len;
    int zero; /* all bytes 0 */
} wire_id_t;

typedef struct {
    uint64_t items;
    uint64_t points; /* data_points fields seen inside the current metric */
} count_t;

static inline int wire_fits(int kind, uint32_t wt) {
    switch (kind) {
    case K_VARINT: return wt == WT_VARINT;
    case K_I64: return wt == WT_I64;
    case K_I32: return wt == 5;
    case K_PACKED_I64: return wt == WT_LEN || wt == WT_I64;
    case K_PACKED_VARINT: return wt == WT_LEN || wt == WT_VARINT;
    default: return wt == WT_LEN; /* bytes, string, message */
    }
}

static inline wire_id_t id_of(slice_t s) {
    wire_id_t id = {s.n, 1};
    for (size_t i = 0; i < s.n; i++)
        if (s.p[i]) {
            id.zero = 0;
            break;
        }
    return id;
}

static int walk(count_t *c, int msg, slice_t s, int depth);

/* A KeyValue (the bulk of every request: attributes), its AnyValue checked in line; arrays and
 * kvlists go through `walk`. Same rules as `walk` on the M_KEY_VALUE / M_ANY_VALUE schemas. */
static int key_value(count_t *c, slice_t s, int depth) {
    rd_t r = reader(s);
    while (r.p < r.end) {
        uint32_t num, wt;
        slice_t v;
        TRY(rd_tag(&r, &num, &wt));
        if (num == 1 && wt == WT_LEN) {
            TRY(rd_len(&r, &v));
            if (!utf8_ok(v)) return DECLINE;
        } else if (num == 2 && wt == WT_LEN) {
            TRY(rd_len(&r, &v));
            rd_t a = reader(v);
            while (a.p < a.end) {
                uint32_t an, awt;
                slice_t x;
                TRY(rd_tag(&a, &an, &awt));
                if (an == 1 && awt == WT_LEN) {
                    TRY(rd_len(&a, &x));
                    if (!utf8_ok(x)) return DECLINE;
                } else if ((an == 2 || an == 3 || an == 8) && awt == WT_VARINT) {
                    TRY(rd_skip(&a, awt));
                } else if (an == 4 && awt == WT_I64) {
                    TRY(rd_skip(&a, awt));
                } else if (an == 7 && awt == WT_LEN) {
                    TRY(rd_len(&a, &x));
                } else if ((an == 5 || an == 6) && awt == WT_LEN) {
                    TRY(rd_len(&a, &x));
                    TRY(walk(c, an == 5 ? M_ARRAY_VALUE : M_KV_LIST, x, depth + 2));
                } else {
                    return DECLINE;
                }
            }
        } else if (num == 3 && wt == WT_VARINT) {
            TRY(rd_skip(&r, wt));
        } else {
            return DECLINE;
        }
    }
    return OK;
}

static int walk(count_t *c, int msg, slice_t s, int depth) {
    if (depth > MAX_DEPTH) return DECLINE;
    const mdef_t *m = DEFS[msg];
    wire_id_t trace = {0, 1}, span = {0, 1}, parent = {0, 1};
    size_t name_len = 0;
    int data_fields = 0;
    if (m->item == I_METRIC) c->points = 0;
    rd_t r = reader(s);
    while (r.p < r.end) {
        uint32_t num, wt;
        TRY(rd_tag(&r, &num, &wt));
        int at = num <= MAX_FIELD ? FIELD_AT[msg][num] : 0;
        if (!at) return DECLINE; /* a field the schema does not know: the reference decides */
        const fdef_t *f = &m->fields[at - 1];
        if (!wire_fits(f->kind, wt)) return DECLINE;
        slice_t v;
        if (wt != WT_LEN) {
            TRY(rd_skip(&r, wt));
            continue;
        }
        TRY(rd_len(&r, &v));
        switch (f->kind) {
        case K_STR:
            if (!utf8_ok(v)) return DECLINE;
            if (f->role == R_METRIC_NAME) name_len = v.n;
            break;
        case K_BYTES:
            if (f->role == R_TRACE_ID) trace = id_of(v);
            else if (f->role == R_SPAN_ID) span = id_of(v);
            else if (f->role == R_PARENT_ID) parent = id_of(v);
            break;
        case K_MSG:
            if (f->role == R_METRIC_DATA) data_fields++;
            if (f->role == R_POINT) c->points++;
            if (f->sub == M_KEY_VALUE) TRY(key_value(c, v, depth + 1));
            else TRY(walk(c, f->sub, v, depth + 1));
            break;
        case K_PACKED_I64:
            if (v.n % 8) return DECLINE;
            break;
        case K_PACKED_VARINT: {
            rd_t pr = reader(v);
            uint64_t x;
            while (pr.p < pr.end) TRY(rd_varint(&pr, &x));
            break;
        }
        default:
            return DECLINE;
        }
    }
    switch (m->item) {
    case I_SPAN: /* otlp._span_ok */
        if (trace.len != 16 || trace.zero || span.len != 8 || span.zero ||
            (parent.len != 0 && parent.len != 8))
            return DECLINE;
        c->items++;
        break;
    case I_LOG: /* otlp._log_ok */
        if ((trace.len != 0 && trace.len != 16) || (span.len != 0 && span.len != 8))
            return DECLINE;
        c->items++;
        break;
    case I_METRIC: /* otlp._check_metrics: named, one data field (a second one replaces it) */
        if (name_len == 0 || data_fields > 1) return DECLINE;
        c->items += c->points;
        c->points = 0;
        break;
    }
    return OK;
}

/* ---- Python ---------------------------------------------------------------------------------- */

PyDoc_STRVAR(count_doc,
"count(signal, payload) -> int | None\n\n"
"The items (spans, data points, log records) of a serialized Export*ServiceRequest of signal\n"
"0 (traces), 1 (metrics) or 2 (logs) when the reference check (collector.receivers.otlp)\n"
"would accept all of them as they are; None when the reference must decide.");

static PyObject *count(PyObject *self, PyObject *args) {
    int signal;
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "iy*", &signal, &view)) return NULL;
    if (signal < 0 || signal > 2) {
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_ValueError, "signal must be 0, 1 or 2, not %d", signal);
        return NULL;
    }
    count_t c = {0, 0};
    slice_t s = {(const uint8_t *)view.buf, (size_t)view.len};
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = walk(&c, REQUESTS[signal], s, 0);
    Py_END_ALLOW_THREADS PyBuffer_Release(&view);
    if (rc) Py_RETURN_NONE;
    return PyLong_FromUnsignedLongLong(c.items);
}

static const char *KIND_NAMES[] = {"varint", "i64",         "i32",          "bytes",
                                   "string", "message",     "packed_i64",   "packed_varint"};

PyDoc_STRVAR(schema_doc,
"schema() -> dict[str, dict[int, tuple[str, str | None]]]\n\n"
"The message schemas the walk knows: full message name -> field number -> (wire kind, full\n"
"name of the field's message or None). tests hold it equal to the installed descriptors.");

static PyObject *schema(PyObject *self, PyObject *noargs) {
    PyObject *out = PyDict_New();
    if (!out) return NULL;
    for (int i = 0; i < N_MESSAGES; i++) {
        const mdef_t *m = DEFS[i];
        PyObject *fields = PyDict_New();
        if (!fields || PyDict_SetItemString(out, m->name, fields) < 0) {
            Py_XDECREF(fields);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(fields);
        for (int j = 0; j < m->n; j++) {
            const fdef_t *f = &m->fields[j];
            PyObject *key = PyLong_FromUnsignedLong(f->num);
            PyObject *val = Py_BuildValue("(sz)", KIND_NAMES[f->kind],
                                          f->kind == K_MSG ? DEFS[f->sub]->name : NULL);
            int bad = !key || !val || PyDict_SetItem(fields, key, val) < 0;
            Py_XDECREF(key);
            Py_XDECREF(val);
            if (bad) {
                Py_DECREF(out);
                return NULL;
            }
        }
    }
    return out;
}

static PyMethodDef methods[] = {
    {"count", count, METH_VARARGS, count_doc},
    {"schema", schema, METH_NOARGS, schema_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "_otlp_check",
    .m_doc = "The receive path's OTLP request check, without protobuf objects "
             "(collector/receivers/otlp.py).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__otlp_check(void) {
    if (index_fields() < 0) return NULL;
    return PyModule_Create(&module);
}
