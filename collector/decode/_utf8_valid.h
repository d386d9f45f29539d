/* UTF-8 validation as strict as upb's (no overlongs, no surrogates, nothing above U+10FFFF),
 * ASCII runs eight bytes at a time. Shared by the C wire decoders (_wire_read.h, _als_wire.c). */
#ifndef MESHLENS_UTF8_VALID_H
#define MESHLENS_UTF8_VALID_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline int utf8_valid(const uint8_t *p, size_t len) {
    const uint8_t *e = p + len;
    while (p < e) {
        uint8_t c = *p;
        if (c < 0x80) {
            /* ASCII runs (most text) eight bytes at a time */
            uint64_t x;
            while (e - p >= 8 && (memcpy(&x, p, 8), (x & 0x8080808080808080ULL) == 0)) p += 8;
            while (p < e && *p < 0x80) p++;
            continue;
        }
        int n;
        uint32_t cp;
        if ((c & 0xe0) == 0xc0) {
            n = 1;
            cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2;
            cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            n = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (e - p <= n) return 0;
        for (int i = 1; i <= n; i++) {
            if ((p[i] & 0xc0) != 0x80) return 0;
            cp = (cp << 6) | (p[i] & 0x3f);
        }
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        p += n + 1;
    }
    return 1;
}

#endif
