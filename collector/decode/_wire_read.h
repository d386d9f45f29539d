/* Protobuf wire reading shared by the OTLP C walkers (_otlp_wire.c decodes spans, _otlp_check.c
 * checks requests on the receive path). Every reader returns OK or DECLINE: DECLINE means "not
 * something we reproduce exactly", and the caller hands the request to the Python reference.
 * FAIL is a Python error (set) and propagates. utf8_ok is as strict as upb's validator
 * (no overlongs, no surrogates, nothing above U+10FFFF).
 */
#ifndef MESHLENS_WIRE_READ_H
#define MESHLENS_WIRE_READ_H

#include <stdint.h>
#include <string.h>

#include "_utf8_valid.h"

#define OK 0
#define DECLINE 1
#define FAIL (-1)
#define TRY(x)                     \
    do {                           \
        int rc_ = (x);             \
        if (rc_) return rc_;       \
    } while (0)

typedef struct {
    const uint8_t *p;
    size_t n;
} slice_t;

/* ---- wire reading (every reader returns OK or DECLINE) ------------------------------------- */

typedef struct {
    const uint8_t *p, *end;
} rd_t;

static inline rd_t reader(slice_t s) {
    rd_t r = {s.p, s.p + s.n};
    return r;
}

static inline int rd_varint(rd_t *r, uint64_t *out) {
    if (__builtin_expect(r->p < r->end && *r->p < 0x80, 1)) { /* tags, most lengths */
        *out = *r->p++;
        return OK;
    }
    uint64_t v = 0;
    for (int i = 0; i < 10; i++) {
        if (r->p >= r->end) return DECLINE;
        uint8_t b = *r->p++;
        if (i == 9 && b > 1) return DECLINE; /* over 64 bits: upb's business */
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *out = v;
            return OK;
        }
    }
    return DECLINE;
}

static inline int rd_tag(rd_t *r, uint32_t *field, uint32_t *wt) {
    uint64_t t;
    TRY(rd_varint(r, &t));
    if (t > UINT32_MAX || (t >> 3) == 0) return DECLINE;
    *field = (uint32_t)(t >> 3);
    *wt = (uint32_t)(t & 7);
    return OK;
}

static inline int rd_len(rd_t *r, slice_t *s) {
    uint64_t n;
    TRY(rd_varint(r, &n));
    if (n > (uint64_t)(r->end - r->p)) return DECLINE;
    s->p = r->p;
    s->n = (size_t)n;
    r->p += n;
    return OK;
}

static inline int rd_fixed64(rd_t *r, uint64_t *out) {
    if (r->end - r->p < 8) return DECLINE;
    memcpy(out, r->p, 8); /* little-endian hosts only (x86-64, aarch64) */
    r->p += 8;
    return OK;
}

static inline int rd_skip(rd_t *r, uint32_t wt) {
    uint64_t v;
    slice_t s;
    switch (wt) {
    case 0:
        return rd_varint(r, &v);
    case 1:
        return rd_fixed64(r, &v);
    case 2:
        return rd_len(r, &s);
    case 5:
        if (r->end - r->p < 4) return DECLINE;
        r->p += 4;
        return OK;
    default: /* groups and invalid wire types: the reference decides */
        return DECLINE;
    }
}

#define WT_VARINT 0
#define WT_I64 1
#define WT_LEN 2
#define EXPECT(wt_, want)                      \
    do {                                       \
        if ((wt_) != (want)) return DECLINE;   \
    } while (0)

static inline int utf8_ok(slice_t s) { return utf8_valid(s.p, s.n); }

static inline int rd_str(rd_t *r, uint32_t wt, slice_t *s) {
    EXPECT(wt, WT_LEN);
    TRY(rd_len(r, s));
    return utf8_ok(*s) ? OK : DECLINE;
}

#endif
