/* oklog._fast: the per-record loops of the query path, in C.
 *
 * A buffer holds records "ULID SP TOPIC SP LINE LF". Python cannot walk
 * millions of records a second, so the three loops a query runs over every
 * byte it returns live here: finding a literal in the lines of a buffer,
 * cutting each matching record down to what the client asked for, and doing
 * the same for a list of records chosen elsewhere. Every function takes a
 * buffer (bytes, mmap, memoryview), a byte range of whole records and a mode,
 * releases the GIL while it works (two scans run on two cores) and returns
 * one bytes object.
 *
 * Modes: 0 whole records, 1 LINE LF, 2 ULID SP LINE LF, 3 candidates: three
 * native int64 per record (record start, line start, record end) relative to
 * the buffer, for a caller that decides each line itself (regex verification).
 * format() alone also takes 4 TIME SP LINE LF and 5 ULID SP TIME SP LINE LF,
 * TIME being the ULID's millisecond stamp as RFC 3339 UTC
 * (2026-11-23T12:34:56.789Z), and 6 one JSON object per record, byte for
 * byte what Python's json.dumps gives for {"ulid", "time", "topic", "line"}
 * with the line decoded as UTF-8 (errors replaced) and the topic as latin-1.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memrchr */
#endif
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define OKLOG_X86 1
#endif

#define ULID_LEN 26
#define HEADER_MIN (ULID_LEN + 1)

enum { MODE_RAW = 0, MODE_LINES = 1, MODE_ULID = 2, MODE_CANDIDATES = 3, MODE_MAX = 3 };
enum { MODE_TIME = 4, MODE_ULIDTIME = 5, MODE_JSON = 6, FORMAT_MODE_MAX = 6 };
#define TIME_LEN 25 /* "YYYY-MM-DDTHH:MM:SS.mmmZ " for years 0..9999 */

/* Where the line of the record [rs, re) begins: after the space that ends
 * the topic. A record without one (never written by oklog) has an empty line. */
static inline size_t line_start(const char *base, size_t rs, size_t re) {
    if (re <= rs + HEADER_MIN) return re;
    const char *sp = memchr(base + rs + HEADER_MIN, ' ', re - rs - HEADER_MIN);
    return sp ? (size_t)(sp - base) + 1 : re;
}

/* Append the record [rs, re) with line start ls in the given mode; returns the new end. */
static inline char *emit(char *out, const char *base, size_t rs, size_t ls, size_t re, int mode) {
    switch (mode) {
    case MODE_RAW:
        memcpy(out, base + rs, re - rs);
        return out + (re - rs);
    case MODE_LINES:
        memcpy(out, base + ls, re - ls);
        return out + (re - ls);
    case MODE_ULID: {
        size_t h = (rs + HEADER_MIN <= re) ? HEADER_MIN : re - rs;
        memcpy(out, base + rs, h);
        memcpy(out + h, base + ls, re - ls);
        return out + h + (re - ls);
    }
    default: {
        int64_t t[3] = {(int64_t)rs, (int64_t)ls, (int64_t)re};
        memcpy(out, t, sizeof t);
        return out + sizeof t;
    }
    }
}

/* -- times ------------------------------------------------------------------------
 * The ULID's first 10 characters are its 48-bit millisecond time (Crockford
 * base32; other bytes count as 0, as in oklog.query.format). Days to a civil
 * date by Howard Hinnant's algorithm; a record in the same second as the one
 * before reuses its date and time, so most records cost a decode and 4 digits. */

static signed char ulid_value[256];

static void init_ulid_value(void) {
    static const char alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    for (int i = 0; i < 32; i++) ulid_value[(unsigned char)alphabet[i]] = (signed char)i;
}

static inline int64_t ulid_ms(const char *p, size_t n) {
    int64_t ms = 0;
    for (size_t k = 0; k < 10; k++) ms = (ms << 5) | (k < n ? ulid_value[(unsigned char)p[k]] : 0);
    return ms;
}

static inline void put2(char *w, unsigned v) {
    w[0] = (char)('0' + v / 10);
    w[1] = (char)('0' + v % 10);
}

typedef struct {
    int64_t sec; /* second of the cached text, or -1 */
    char text[32];
    size_t len; /* bytes up to and including the '.' */
} time_cache;

static void civil_second(time_cache *c, int64_t sec) {
    int64_t days = sec / 86400, rem = sec % 86400;
    int64_t z = days + 719468;
    int64_t era = z / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    unsigned d = doy - (153 * mp + 2) / 5 + 1;
    unsigned m = mp < 10 ? mp + 3 : mp - 9;
    int64_t y = (int64_t)yoe + era * 400 + (m <= 2);
    char *w = c->text;
    w += snprintf(w, 8, "%04d", (int)y); /* 48-bit ms end in year 10889 */
    *w++ = '-';
    put2(w, m);
    w[2] = '-';
    put2(w + 3, d);
    w[5] = 'T';
    put2(w + 6, (unsigned)(rem / 3600));
    w[8] = ':';
    put2(w + 9, (unsigned)(rem / 60 % 60));
    w[11] = ':';
    put2(w + 12, (unsigned)(rem % 60));
    w[14] = '.';
    c->len = (size_t)(w + 15 - c->text);
    c->sec = sec;
}

/* Writes TIME SP for the record starting at p (n bytes); returns the new end. */
static inline char *put_time(char *w, time_cache *c, const char *p, size_t n) {
    int64_t ms = ulid_ms(p, n);
    if (ms / 1000 != c->sec) civil_second(c, ms / 1000);
    memcpy(w, c->text, c->len);
    w += c->len;
    unsigned f = (unsigned)(ms % 1000);
    w[0] = (char)('0' + f / 100);
    put2(w + 1, f % 100);
    w[3] = 'Z';
    w[4] = ' ';
    return w + 5;
}

/* -- JSON strings -----------------------------------------------------------------
 * As json.dumps with ensure_ascii: printable ASCII other than '"' and '\\' is
 * copied (in runs), the rest escaped; code points above the BMP as surrogate
 * pairs. UTF-8 is decoded as Python's "replace" handler does: one U+FFFD per
 * maximal invalid subpart. */

static unsigned char json_plain[256]; /* 1: copied as is */

static void init_json(void) {
    for (int c = 0x20; c < 0x7f; c++) json_plain[c] = 1;
    json_plain['"'] = json_plain['\\'] = 0;
}

static const char hexdigits[] = "0123456789abcdef";

static inline char *put_u(char *w, uint32_t v) {
    w[0] = '\\', w[1] = 'u';
    w[2] = hexdigits[(v >> 12) & 15], w[3] = hexdigits[(v >> 8) & 15];
    w[4] = hexdigits[(v >> 4) & 15], w[5] = hexdigits[v & 15];
    return w + 6;
}

static inline char *put_cp(char *w, uint32_t cp) {
    switch (cp) {
    case '"': *w++ = '\\', *w++ = '"'; return w;
    case '\\': *w++ = '\\', *w++ = '\\'; return w;
    case '\n': *w++ = '\\', *w++ = 'n'; return w;
    case '\r': *w++ = '\\', *w++ = 'r'; return w;
    case '\t': *w++ = '\\', *w++ = 't'; return w;
    case '\b': *w++ = '\\', *w++ = 'b'; return w;
    case '\f': *w++ = '\\', *w++ = 'f'; return w;
    }
    if (cp < 0x10000) return put_u(w, cp);
    cp -= 0x10000;
    w = put_u(w, 0xD800 | (cp >> 10));
    return put_u(w, 0xDC00 | (cp & 0x3FF));
}

/* One code point from p[0..n); returns the bytes it took (U+FFFD for an invalid subpart). */
static inline size_t utf8_next(const unsigned char *p, size_t n, uint32_t *cp) {
    unsigned char b = p[0];
    size_t need;
    unsigned lo = 0x80, hi = 0xBF;
    uint32_t c;
    if (b < 0x80) {
        *cp = b;
        return 1;
    } else if (b >= 0xC2 && b <= 0xDF) {
        need = 1, c = b & 0x1F;
    } else if (b >= 0xE0 && b <= 0xEF) {
        need = 2, c = b & 0x0F;
        if (b == 0xE0) lo = 0xA0;
        if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 3, c = b & 0x07;
        if (b == 0xF0) lo = 0x90;
        if (b == 0xF4) hi = 0x8F;
    } else {
        *cp = 0xFFFD;
        return 1;
    }
    for (size_t i = 1; i <= need; i++) {
        if (i >= n || p[i] < lo || p[i] > hi) {
            *cp = 0xFFFD;
            return i;
        }
        c = (c << 6) | (p[i] & 0x3F);
        lo = 0x80, hi = 0xBF;
    }
    *cp = c;
    return need + 1;
}

/* The JSON string body of p[0..n) (no quotes); utf8: decode, else latin-1. */
static char *put_json(char *w, const char *s, size_t n, int utf8) {
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    while (p < end) {
        const unsigned char *q = p;
        while (q < end && json_plain[*q]) q++;
        memcpy(w, p, (size_t)(q - p));
        w += q - p;
        p = q;
        if (p == end) break;
        uint32_t cp;
        if (utf8) {
            p += utf8_next(p, (size_t)(end - p), &cp);
        } else {
            cp = *p++;
        }
        w = put_cp(w, cp);
    }
    return w;
}

static char *put_lit(char *w, const char *lit) {
    size_t n = strlen(lit);
    memcpy(w, lit, n);
    return w + n;
}

/* -- literal search --------------------------------------------------------------
 * Two bytes of the needle, the rarest ones in log text, are compared at every
 * position 32 (AVX2) or 16 (SSE2) positions at a time; a candidate is then
 * checked with memcmp. This is the "generic SIMD" substring search; it beats
 * glibc's memmem several times over on long needles. */

typedef struct {
    const char *needle;
    size_t n, i1, i2;
} finder;

static unsigned char byte_rank[256]; /* higher: rarer in log text */

static void init_rank(void) {
    /* Most frequent first, roughly as in the loghub corpus. */
    static const char common[] =
        " eatoinsrlcdhumpgfbwy.:0-12=/_3v458k679x,()[]TSEACINROLDPMUFBGHqjzKVWXYJQZ\"';#@*+<>{}|!?$%&^~`\\";
    memset(byte_rank, 255, sizeof byte_rank);
    for (size_t i = 0; i < sizeof common - 1; i++) byte_rank[(unsigned char)common[i]] = (unsigned char)i;
}

static void finder_init(finder *f, const char *needle, size_t n) {
    f->needle = needle;
    f->n = n;
    f->i1 = 0;
    for (size_t i = 1; i < n; i++)
        if (byte_rank[(unsigned char)needle[i]] > byte_rank[(unsigned char)needle[f->i1]]) f->i1 = i;
    f->i2 = f->i1 == n - 1 ? 0 : n - 1;
    for (size_t i = 0; i < n; i++) {
        if (i == f->i1 || needle[i] == needle[f->i1]) continue;
        if (needle[f->i2] == needle[f->i1] ||
            byte_rank[(unsigned char)needle[i]] > byte_rank[(unsigned char)needle[f->i2]])
            f->i2 = i;
    }
}

static unsigned char fold_lower[256];

static void init_fold(void) {
    for (int c = 0; c < 256; c++) fold_lower[c] = (unsigned char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
}

static inline unsigned char fold_upper(unsigned char c) { return (c >= 'a' && c <= 'z') ? (unsigned char)(c - 32) : c; }

/* needle already folded */
static inline int eq_fold(const char *h, const char *nd, size_t n) {
    const unsigned char *a = (const unsigned char *)h, *b = (const unsigned char *)nd;
    for (size_t i = 0; i < n; i++)
        if (fold_lower[a[i]] != b[i]) return 0;
    return 1;
}

/* The first candidate of mask m (bit k: a match may start at at + k) that is a
 * whole match of the needle, folded (needle already folded) or exact; shared by
 * the SIMD searches of both widths and both kinds. */
static inline const char *first_match(uint32_t m, const char *at, const char *nd, size_t n, int fold) {
    for (; m; m &= m - 1) {
        size_t k = (size_t)__builtin_ctz(m);
        if (fold ? eq_fold(at + k, nd, n) : memcmp(at + k, nd, n) == 0) return at + k;
    }
    return NULL;
}

static const char *find_scalar(const finder *f, const char *h, size_t hn, size_t p) {
    const char *nd = f->needle;
    size_t n = f->n;
    for (size_t last = hn - n; p <= last; p++)
        if (h[p + f->i1] == nd[f->i1] && h[p + f->i2] == nd[f->i2] && memcmp(h + p, nd, n) == 0) return h + p;
    return NULL;
}

#ifdef OKLOG_X86
__attribute__((target("avx2"))) static const char *find_avx2(const finder *f, const char *h, size_t hn) {
    const char *nd = f->needle;
    size_t n = f->n, i1 = f->i1, i2 = f->i2, p = 0;
    const __m256i v1 = _mm256_set1_epi8(nd[i1]), v2 = _mm256_set1_epi8(nd[i2]);
    while (p + 32 + n <= hn + 1) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(h + p + i1));
        __m256i b = _mm256_loadu_si256((const __m256i *)(h + p + i2));
        uint32_t m = (uint32_t)_mm256_movemask_epi8(_mm256_and_si256(_mm256_cmpeq_epi8(a, v1), _mm256_cmpeq_epi8(b, v2)));
        const char *r = first_match(m, h + p, nd, n, 0);
        if (r) return r;
        p += 32;
    }
    return find_scalar(f, h, hn, p);
}

static const char *find_sse2(const finder *f, const char *h, size_t hn) {
    const char *nd = f->needle;
    size_t n = f->n, i1 = f->i1, i2 = f->i2, p = 0;
    const __m128i v1 = _mm_set1_epi8(nd[i1]), v2 = _mm_set1_epi8(nd[i2]);
    while (p + 16 + n <= hn + 1) {
        __m128i a = _mm_loadu_si128((const __m128i *)(h + p + i1));
        __m128i b = _mm_loadu_si128((const __m128i *)(h + p + i2));
        uint32_t m = (uint32_t)_mm_movemask_epi8(_mm_and_si128(_mm_cmpeq_epi8(a, v1), _mm_cmpeq_epi8(b, v2)));
        const char *r = first_match(m, h + p, nd, n, 0);
        if (r) return r;
        p += 16;
    }
    return find_scalar(f, h, hn, p);
}

static int have_avx2;
#endif

static const char *find(const finder *f, const char *h, size_t hn) {
    if (hn < f->n) return NULL;
    if (f->n == 1) return memchr(h, f->needle[0], hn);
#ifdef OKLOG_X86
    return have_avx2 ? find_avx2(f, h, hn) : find_sse2(f, h, hn);
#else
    return memmem(h, hn, f->needle, f->n);
#endif
}

/* -- case-insensitive literal search ----------------------------------------------
 * ASCII letters fold (as grep -i under LC_ALL=C); other bytes compare as they
 * are. The needle is kept folded to lower case; the two rare bytes are
 * compared in both cases at every position, SIMD-wide, and a candidate is
 * verified with a folded compare. No lower-case copy of the data is made. */

static const char *find_scalar_i(const finder *f, const char *h, size_t hn, size_t p) {
    const char *nd = f->needle;
    size_t n = f->n;
    unsigned char c1 = (unsigned char)nd[f->i1], c2 = (unsigned char)nd[f->i2];
    for (size_t last = hn - n; p <= last; p++)
        if (fold_lower[(unsigned char)h[p + f->i1]] == c1 && fold_lower[(unsigned char)h[p + f->i2]] == c2 &&
            eq_fold(h + p, nd, n))
            return h + p;
    return NULL;
}

#ifdef OKLOG_X86
__attribute__((target("avx2"))) static const char *find_avx2_i(const finder *f, const char *h, size_t hn) {
    const char *nd = f->needle;
    size_t n = f->n, i1 = f->i1, i2 = f->i2, p = 0;
    unsigned char c1 = (unsigned char)nd[i1], c2 = (unsigned char)nd[i2];
    const __m256i l1 = _mm256_set1_epi8((char)c1), u1 = _mm256_set1_epi8((char)fold_upper(c1));
    const __m256i l2 = _mm256_set1_epi8((char)c2), u2 = _mm256_set1_epi8((char)fold_upper(c2));
    while (p + 32 + n <= hn + 1) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(h + p + i1));
        __m256i b = _mm256_loadu_si256((const __m256i *)(h + p + i2));
        __m256i ma = _mm256_or_si256(_mm256_cmpeq_epi8(a, l1), _mm256_cmpeq_epi8(a, u1));
        __m256i mb = _mm256_or_si256(_mm256_cmpeq_epi8(b, l2), _mm256_cmpeq_epi8(b, u2));
        uint32_t m = (uint32_t)_mm256_movemask_epi8(_mm256_and_si256(ma, mb));
        const char *r = first_match(m, h + p, nd, n, 1);
        if (r) return r;
        p += 32;
    }
    return find_scalar_i(f, h, hn, p);
}

static const char *find_sse2_i(const finder *f, const char *h, size_t hn) {
    const char *nd = f->needle;
    size_t n = f->n, i1 = f->i1, i2 = f->i2, p = 0;
    unsigned char c1 = (unsigned char)nd[i1], c2 = (unsigned char)nd[i2];
    const __m128i l1 = _mm_set1_epi8((char)c1), u1 = _mm_set1_epi8((char)fold_upper(c1));
    const __m128i l2 = _mm_set1_epi8((char)c2), u2 = _mm_set1_epi8((char)fold_upper(c2));
    while (p + 16 + n <= hn + 1) {
        __m128i a = _mm_loadu_si128((const __m128i *)(h + p + i1));
        __m128i b = _mm_loadu_si128((const __m128i *)(h + p + i2));
        __m128i ma = _mm_or_si128(_mm_cmpeq_epi8(a, l1), _mm_cmpeq_epi8(a, u1));
        __m128i mb = _mm_or_si128(_mm_cmpeq_epi8(b, l2), _mm_cmpeq_epi8(b, u2));
        uint32_t m = (uint32_t)_mm_movemask_epi8(_mm_and_si128(ma, mb));
        const char *r = first_match(m, h + p, nd, n, 1);
        if (r) return r;
        p += 16;
    }
    return find_scalar_i(f, h, hn, p);
}
#endif

/* A finder over a folded copy of needle (written to `folded`, n bytes). The
 * rare bytes are ranked by their folded form: both cases occur in the data. */
static void finder_init_i(finder *f, char *folded, const char *needle, size_t n) {
    for (size_t i = 0; i < n; i++) folded[i] = (char)fold_lower[(unsigned char)needle[i]];
    finder_init(f, folded, n);
}

static const char *find_i(const finder *f, const char *h, size_t hn) {
    if (hn < f->n) return NULL;
#ifdef OKLOG_X86
    return have_avx2 ? find_avx2_i(f, h, hn) : find_sse2_i(f, h, hn);
#endif
    return find_scalar_i(f, h, hn, 0);
}

static inline const char *find_any(const finder *f, int icase, const char *h, size_t hn) {
    return icase ? find_i(f, h, hn) : find(f, h, hn);
}

/* -- argument handling ---------------------------------------------------------- */

typedef struct {
    Py_buffer view;
    Py_ssize_t start, end;
} region;

static int get_region(PyObject *obj, Py_ssize_t start, Py_ssize_t end, region *r) {
    if (PyObject_GetBuffer(obj, &r->view, PyBUF_SIMPLE) < 0) return -1;
    if (end < 0 || end > r->view.len) end = r->view.len;
    if (start < 0 || start > end) {
        PyBuffer_Release(&r->view);
        PyErr_SetString(PyExc_ValueError, "start must be within [0, end]");
        return -1;
    }
    r->start = start;
    r->end = end;
    return 0;
}

static PyObject *finish(PyObject *out, char *base, char *w) {
    if (_PyBytes_Resize(&out, w - base) < 0) return NULL;
    return out;
}

static int check_mode_max(int mode, int max) {
    if (mode < 0 || mode > max) {
        PyErr_Format(PyExc_ValueError, "mode must be 0..%d", max);
        return -1;
    }
    return 0;
}

static int check_mode(int mode) { return check_mode_max(mode, MODE_MAX); }

/* Output room for a mode: MODE_CANDIDATES writes 24 bytes (three int64) per
 * record, however short the record (hostile input may hold bare LFs), so the
 * records are counted; every other mode writes at most the input. */
static Py_ssize_t room(const region *r, int mode) {
    Py_ssize_t n = r->end - r->start;
    if (mode == MODE_CANDIDATES) {
        Py_ssize_t records = 1;
        const char *p = (const char *)r->view.buf + r->start, *e = (const char *)r->view.buf + r->end;
        while ((p = memchr(p, '\n', (size_t)(e - p))) != NULL) records++, p++;
        if (24 * records > n) n = 24 * records;
    }
    return n < 64 ? 64 : n;
}

/* grep(buf, start, end, needle, mode, icase=False) -> bytes */
static PyObject *fast_grep(PyObject *self, PyObject *args) {
    PyObject *obj;
    Py_ssize_t start, end, nlen;
    const char *needle;
    int mode, icase = 0;
    region r;
    if (!PyArg_ParseTuple(args, "Onny#i|p", &obj, &start, &end, &needle, &nlen, &mode, &icase)) return NULL;
    if (check_mode(mode) < 0) return NULL;
    if (nlen == 0 || memchr(needle, '\n', (size_t)nlen)) {
        PyErr_SetString(PyExc_ValueError, "needle must be non-empty and hold no LF");
        return NULL;
    }
    if (get_region(obj, start, end, &r) < 0) return NULL;
    PyObject *out = PyBytes_FromStringAndSize(NULL, room(&r, mode));
    if (!out) {
        PyBuffer_Release(&r.view);
        return NULL;
    }
    char *w0 = PyBytes_AS_STRING(out), *w = w0;
    const char *base = r.view.buf;
    finder f;
    char *folded = NULL;
    if (icase) {
        folded = PyMem_Malloc((size_t)nlen);
        if (!folded) {
            Py_DECREF(out);
            PyBuffer_Release(&r.view);
            return PyErr_NoMemory();
        }
        finder_init_i(&f, folded, needle, (size_t)nlen);
    } else {
        finder_init(&f, needle, (size_t)nlen);
    }
    Py_BEGIN_ALLOW_THREADS
    size_t lo = (size_t)r.start, hi = (size_t)r.end, pos = lo;
    while (pos < hi) {
        const char *p = find_any(&f, icase, base + pos, hi - pos);
        if (!p) break;
        size_t hp = (size_t)(p - base);
        const char *nl = hp > lo ? memrchr(base + lo, '\n', hp - lo) : NULL;
        size_t rs = nl ? (size_t)(nl - base) + 1 : lo;
        const char *e = memchr(p, '\n', hi - hp);
        size_t re = e ? (size_t)(e - base) + 1 : hi;
        size_t ls = line_start(base, rs, re);
        if (hp >= ls && hp + (size_t)nlen <= re) {
            w = emit(w, base, rs, ls, re, mode);
            pos = re;
        } else {
            pos = hp + 1; /* the hit starts in the ULID or topic; look further */
        }
    }
    Py_END_ALLOW_THREADS
    PyMem_Free(folded);
    PyBuffer_Release(&r.view);
    return finish(out, w0, w);
}

/* format(buf, start, end, mode) -> bytes: every record of the range */
static PyObject *fast_format(PyObject *self, PyObject *args) {
    PyObject *obj;
    Py_ssize_t start, end;
    int mode;
    region r;
    if (!PyArg_ParseTuple(args, "Onni", &obj, &start, &end, &mode)) return NULL;
    if (check_mode_max(mode, FORMAT_MODE_MAX) < 0) return NULL;
    if (get_region(obj, start, end, &r) < 0) return NULL;
    Py_ssize_t size = room(&r, mode);
    if (mode >= MODE_TIME) {
        /* each record grows by at most ULID SP + TIME (JSON: the keys and
         * quotes, and six bytes per input byte escaped); count them first */
        Py_ssize_t records = 1;
        const char *p = (const char *)r.view.buf + r.start, *e = (const char *)r.view.buf + r.end;
        while ((p = memchr(p, '\n', (size_t)(e - p))) != NULL) records++, p++;
        size += records * (HEADER_MIN + TIME_LEN + 8);
        if (mode == MODE_JSON) size = 6 * (r.end - r.start) + records * 128;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, size);
    if (!out) {
        PyBuffer_Release(&r.view);
        return NULL;
    }
    char *w0 = PyBytes_AS_STRING(out), *w = w0;
    const char *base = r.view.buf;
    Py_BEGIN_ALLOW_THREADS
    size_t pos = (size_t)r.start, hi = (size_t)r.end;
    if (mode == MODE_RAW) {
        memcpy(w, base + pos, hi - pos);
        w += hi - pos;
    } else if (mode == MODE_JSON) {
        time_cache c = {.sec = -1};
        while (pos < hi) {
            const char *e = memchr(base + pos, '\n', hi - pos);
            size_t re = e ? (size_t)(e - base) : hi, ls = line_start(base, pos, re);
            size_t ue = pos + ULID_LEN < re ? pos + ULID_LEN : re;
            size_t ts = pos + HEADER_MIN < re ? pos + HEADER_MIN : re, te = ls > ts ? ls - 1 : ts;
            w = put_lit(w, "{\"ulid\": \"");
            w = put_json(w, base + pos, ue - pos, 0);
            w = put_lit(w, "\", \"time\": \"");
            w = put_time(w, &c, base + pos, re - pos) - 1; /* drop the SP */
            w = put_lit(w, "\", \"topic\": \"");
            w = put_json(w, base + ts, te - ts, 0);
            w = put_lit(w, "\", \"line\": \"");
            w = put_json(w, base + ls, re - ls, 1);
            w = put_lit(w, "\"}\n");
            pos = e ? re + 1 : hi;
        }
    } else if (mode >= MODE_TIME) {
        time_cache c = {.sec = -1};
        while (pos < hi) {
            const char *e = memchr(base + pos, '\n', hi - pos);
            size_t re = e ? (size_t)(e - base) + 1 : hi, ls = line_start(base, pos, re);
            if (mode == MODE_ULIDTIME) {
                size_t h = (pos + HEADER_MIN <= re) ? HEADER_MIN : re - pos;
                memcpy(w, base + pos, h);
                w += h;
            }
            w = put_time(w, &c, base + pos, re - pos);
            memcpy(w, base + ls, re - ls);
            w += re - ls;
            if (ls == re && e) *w++ = '\n'; /* a record cut short keeps its own line */
            pos = re;
        }
    } else {
        while (pos < hi) {
            const char *e = memchr(base + pos, '\n', hi - pos);
            size_t re = e ? (size_t)(e - base) + 1 : hi;
            w = emit(w, base, pos, line_start(base, pos, re), re, mode);
            pos = re;
        }
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&r.view);
    return finish(out, w0, w);
}

/* pick(buf, candidates, keep, mode) -> bytes: the records of ``candidates``
 * (mode-3 triples) whose ``keep`` byte is non-zero, in the given mode. */
static PyObject *fast_pick(PyObject *self, PyObject *args) {
    PyObject *obj, *cobj, *kobj;
    int mode;
    Py_buffer buf, cand, keep;
    if (!PyArg_ParseTuple(args, "OOOi", &obj, &cobj, &kobj, &mode)) return NULL;
    if (check_mode(mode) < 0) return NULL;
    if (PyObject_GetBuffer(obj, &buf, PyBUF_SIMPLE) < 0) return NULL;
    if (PyObject_GetBuffer(cobj, &cand, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    if (PyObject_GetBuffer(kobj, &keep, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&cand);
        PyBuffer_Release(&buf);
        return NULL;
    }
    PyObject *out = NULL;
    Py_ssize_t n = cand.len / (Py_ssize_t)(3 * sizeof(int64_t));
    const int64_t *t = cand.buf;
    const char *k = keep.buf;
    if (cand.len % (Py_ssize_t)(3 * sizeof(int64_t)) || keep.len != n) {
        PyErr_SetString(PyExc_ValueError, "candidates must be int64 triples, keep one byte per triple");
        goto done;
    }
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t rs = t[3 * i], ls = t[3 * i + 1], re = t[3 * i + 2];
        if (rs < 0 || rs > ls || ls > re || re > buf.len) {
            PyErr_SetString(PyExc_ValueError, "candidate outside the buffer");
            goto done;
        }
        if (!k[i]) continue;
        /* exactly what emit() writes for this triple, whatever ls is */
        if (mode == MODE_CANDIDATES) total += 24;
        else if (mode == MODE_RAW) total += (Py_ssize_t)(re - rs);
        else if (mode == MODE_LINES) total += (Py_ssize_t)(re - ls);
        else total += (Py_ssize_t)((rs + HEADER_MIN <= re ? HEADER_MIN : re - rs) + (re - ls));
    }
    out = PyBytes_FromStringAndSize(NULL, total);
    if (!out) goto done;
    char *w = PyBytes_AS_STRING(out);
    const char *base = buf.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++)
        if (k[i]) w = emit(w, base, (size_t)t[3 * i], (size_t)t[3 * i + 1], (size_t)t[3 * i + 2], mode);
    Py_END_ALLOW_THREADS
    out = finish(out, PyBytes_AS_STRING(out), w);
done:
    PyBuffer_Release(&keep);
    PyBuffer_Release(&cand);
    PyBuffer_Release(&buf);
    return out;
}

/* merge(bufs, mode) -> bytes
 * Sorted record buffers merged into ULID order, a record whose ULID was
 * already emitted dropped (the copy from the earliest buffer is kept), cut to
 * the mode (0-2) on the way out. The head of every buffer is compared at each
 * step: for the few buffers a query or a consumer batch merges that beats a
 * heap, and it is a pass over the bytes without the GIL. */
/* A record's key: its first ULID_LEN bytes, or fewer up to its LF or the end. */
static inline size_t key_len(const char *p, size_t n) {
    if (n > ULID_LEN) n = ULID_LEN;
    const char *nl = memchr(p, '\n', n);
    return nl ? (size_t)(nl - p) : n;
}

static inline int key_cmp(const char *a, size_t an, const char *b, size_t bn) {
    int c = memcmp(a, b, an < bn ? an : bn);
    return c ? c : (an < bn ? -1 : an > bn);
}

/* After merge emitted key bk from buffer `best` (and dropped its copies):
 * the records of `best` that sort below every other buffer's head go out as
 * a run, without comparing each with all k heads again (buffers of topics
 * interleaved in time come in runs; per record that was 2k key reads). A
 * record equal to the one before it is a copy and is dropped. */
static char *merge_run(char *w, const Py_buffer *v, size_t *p, const Py_buffer *views, const size_t *pos,
                       Py_ssize_t k, Py_ssize_t best, const char *bk, size_t bkn, int mode) {
    const char *sk = NULL;
    size_t skn = 0;
    for (Py_ssize_t i = 0; i < k; i++) {
        if (i == best || pos[i] >= (size_t)views[i].len) continue;
        const char *h = (const char *)views[i].buf + pos[i];
        size_t hn = key_len(h, (size_t)views[i].len - pos[i]);
        if (!sk || key_cmp(h, hn, sk, skn) < 0) sk = h, skn = hn;
    }
    const char *base = v->buf;
    size_t n = (size_t)v->len;
    while (*p < n) {
        size_t rs = *p;
        const char *h = base + rs;
        size_t hn = key_len(h, n - rs);
        if (sk && key_cmp(h, hn, sk, skn) >= 0) break; /* another head comes first (or is equal) */
        const char *e = memchr(h, '\n', n - rs);
        size_t re = e ? (size_t)(e - base) + 1 : n;
        if (key_cmp(h, hn, bk, bkn) != 0) {
            w = emit(w, base, rs, line_start(base, rs, re), re, mode);
            bk = h, bkn = hn;
        }
        *p = re;
    }
    return w;
}

static PyObject *fast_merge(PyObject *self, PyObject *args) {
    PyObject *list, *seq, *out = NULL;
    int mode;
    if (!PyArg_ParseTuple(args, "Oi", &list, &mode)) return NULL;
    if (check_mode(mode) < 0) return NULL;
    if (mode == MODE_CANDIDATES) {
        PyErr_SetString(PyExc_ValueError, "merge: modes 0-2");
        return NULL;
    }
    seq = PySequence_Fast(list, "merge: a sequence of buffers");
    if (!seq) return NULL;
    Py_ssize_t k = PySequence_Fast_GET_SIZE(seq), got = 0, total = 0;
    Py_buffer *views = PyMem_Calloc((size_t)(k ? k : 1), sizeof(Py_buffer));
    size_t *pos = PyMem_Calloc((size_t)(k ? k : 1), sizeof(size_t));
    if (!views || !pos) {
        PyErr_NoMemory();
        goto done;
    }
    for (; got < k; got++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, got), &views[got], PyBUF_SIMPLE) < 0) goto done;
        total += views[got].len;
    }
    out = PyBytes_FromStringAndSize(NULL, total);
    if (!out) goto done;
    char *w0 = PyBytes_AS_STRING(out), *w = w0;
    Py_BEGIN_ALLOW_THREADS
    for (;;) {
        Py_ssize_t best = -1;
        const char *bk = NULL;
        size_t bkn = 0;
        for (Py_ssize_t i = 0; i < k; i++) {
            if (pos[i] >= (size_t)views[i].len) continue;
            const char *h = (const char *)views[i].buf + pos[i];
            size_t hn = key_len(h, (size_t)views[i].len - pos[i]);
            if (best < 0 || key_cmp(h, hn, bk, bkn) < 0) best = i, bk = h, bkn = hn;
        }
        if (best < 0) break;
        const char *base = views[best].buf;
        size_t rs = pos[best], n = (size_t)views[best].len;
        const char *e = memchr(base + rs, '\n', n - rs);
        size_t re = e ? (size_t)(e - base) + 1 : n;
        w = emit(w, base, rs, line_start(base, rs, re), re, mode);
        pos[best] = re;
        /* the same ULID at the head of any buffer (this one included) is a copy */
        for (Py_ssize_t i = 0; i < k; i++) {
            while (pos[i] < (size_t)views[i].len) {
                const char *h = (const char *)views[i].buf + pos[i];
                size_t hn = (size_t)views[i].len - pos[i];
                if (key_cmp(h, key_len(h, hn), bk, bkn) != 0) break;
                const char *he = memchr(h, '\n', hn);
                pos[i] += he ? (size_t)(he - h) + 1 : hn;
            }
        }
        w = merge_run(w, &views[best], &pos[best], views, pos, k, best, bk, bkn, mode);
    }
    Py_END_ALLOW_THREADS
    out = finish(out, w0, w);
done:
    for (Py_ssize_t i = 0; i < got; i++) PyBuffer_Release(&views[i]);
    PyMem_Free(pos);
    PyMem_Free(views);
    Py_DECREF(seq);
    return out;
}

/* split_topics(buf, max_topics) -> None | [(topic, bytes), ...]
 * None when every record has the first one's topic (or the buffer is empty);
 * otherwise the records of each topic, in their order, topics in order of
 * first appearance; an empty list when there are more than max_topics of
 * them (the caller keeps such a buffer whole). Records are ULID SP TOPIC SP LINE LF,
 * already validated. */
static PyObject *fast_split_topics(PyObject *self, PyObject *args) {
    PyObject *obj, *out = NULL;
    int max_topics;
    Py_buffer buf;
    if (!PyArg_ParseTuple(args, "Oi", &obj, &max_topics)) return NULL;
    if (max_topics < 1 || max_topics > 4096) {
        PyErr_SetString(PyExc_ValueError, "max_topics must be 1..4096");
        return NULL;
    }
    if (PyObject_GetBuffer(obj, &buf, PyBUF_SIMPLE) < 0) return NULL;
    const char *base = buf.buf;
    size_t n = (size_t)buf.len;
    const char **tp = PyMem_Malloc(sizeof(char *) * (size_t)max_topics);
    size_t *tl = PyMem_Malloc(sizeof(size_t) * (size_t)max_topics);
    size_t *sizes = PyMem_Calloc((size_t)max_topics, sizeof(size_t));
    char **w = PyMem_Calloc((size_t)max_topics, sizeof(char *));
    char **wend = PyMem_Calloc((size_t)max_topics, sizeof(char *));
    PyObject **parts = PyMem_Calloc((size_t)max_topics, sizeof(PyObject *));
    int ntop = 0, overflow = 0, changed = 0;
    if (!tp || !tl || !sizes || !w || !wend || !parts) {
        PyErr_NoMemory();
        goto done;
    }
    /* Pass 1: the topics and their byte counts (the topic of the record
     * before is tried first: records come in runs). */
    for (int pass = 0; pass < 2 && !overflow; pass++) {
        int cur = -1;
        size_t pos = 0;
        Py_BEGIN_ALLOW_THREADS
        while (pos < n) {
            const char *e = memchr(base + pos, '\n', n - pos);
            size_t re = e ? (size_t)(e - base) + 1 : n;
            size_t ts = pos + HEADER_MIN < re ? pos + HEADER_MIN : re;
            const char *sp = memchr(base + ts, ' ', re - ts);
            size_t te = sp ? (size_t)(sp - base) : ts, len = te - ts;
            if (!(cur >= 0 && tl[cur] == len && memcmp(tp[cur], base + ts, len) == 0)) {
                cur = -1;
                for (int i = 0; i < ntop; i++)
                    if (tl[i] == len && memcmp(tp[i], base + ts, len) == 0) {
                        cur = i;
                        break;
                    }
                if (cur < 0) {
                    if (pass == 1) { /* a topic pass 0 did not see: the buffer changed */
                        changed = 1;
                        break;
                    }
                    if (ntop == max_topics) {
                        overflow = 1;
                        break;
                    }
                    tp[ntop] = base + ts, tl[ntop] = len, cur = ntop++;
                }
            }
            if (pass == 0) {
                sizes[cur] += re - pos;
            } else {
                if ((size_t)(wend[cur] - w[cur]) < re - pos) { /* the buffer changed since pass 0 */
                    changed = 1;
                    break;
                }
                memcpy(w[cur], base + pos, re - pos);
                w[cur] += re - pos;
            }
            pos = re;
        }
        Py_END_ALLOW_THREADS
        if (pass == 0 && !overflow) {
            if (ntop <= 1) break;
            for (int i = 0; i < ntop; i++) {
                parts[i] = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)sizes[i]);
                if (!parts[i]) goto done;
                w[i] = PyBytes_AS_STRING(parts[i]);
                wend[i] = w[i] + sizes[i];
            }
        }
    }
    if (changed) {
        PyErr_SetString(PyExc_ValueError, "buffer changed while being split");
        goto done;
    }
    if (overflow || ntop <= 1) {
        out = overflow ? PyList_New(0) : Py_NewRef(Py_None);
        goto done;
    }
    out = PyList_New(ntop);
    if (!out) goto done;
    for (int i = 0; i < ntop; i++) {
        PyObject *t = Py_BuildValue("(y#N)", tp[i], (Py_ssize_t)tl[i], parts[i]);
        parts[i] = NULL;
        if (!t) {
            Py_CLEAR(out);
            goto done;
        }
        PyList_SET_ITEM(out, i, t);
    }
done:
    if (parts)
        for (int i = 0; i < max_topics; i++) Py_XDECREF(parts[i]);
    PyMem_Free(parts);
    PyMem_Free(wend);
    PyMem_Free(w);
    PyMem_Free(sizes);
    PyMem_Free(tl);
    PyMem_Free(tp);
    PyBuffer_Release(&buf);
    return out;
}

/* Block summaries of store segments: a bloom filter of the trigrams of the
 * lines (not the ULID or topic) of a buffer of records. The trigrams are first
 * collected exactly in a 2^24-bit map (every possible trigram has its bit) and
 * listed as first seen, so the filter is sized from the true number of
 * distinct trigrams: m = bits_per
 * * distinct bits (rounded up to whole bytes), one hash (k = 1) reduced to m by
 * multiply-shift. A literal of L bytes needs all of its L-2 trigrams, so even
 * a high single-trigram false positive rate gives a small combined one. */
#define TRI_BITS (1u << 24)

static inline uint32_t tri_hash(uint32_t t, uint64_t m) {
    return (uint32_t)(((uint64_t)(uint32_t)(t * 0x9E3779B1u) * m) >> 32);
}

/* The filter of the distinct keys ``seen`` (a trigram is its own key): bits_per
 * bits per key, one hash each. Frees seen and releases view; ok == 0 means
 * collecting the keys ran out of memory. Shared by trigram_bloom and gram_bloom. */
static PyObject *bloom_of_keys(uint32_t *seen, size_t distinct, int bits_per, int ok, Py_buffer *view) {
    if (!ok) {
        PyMem_RawFree(seen);
        PyBuffer_Release(view);
        return PyErr_NoMemory();
    }
    uint64_t nbytes = ((uint64_t)distinct * (uint64_t)bits_per + 7) / 8;
    if (nbytes < 8) nbytes = 8;
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)nbytes);
    if (!out) {
        PyMem_RawFree(seen);
        PyBuffer_Release(view);
        return NULL;
    }
    unsigned char *bloom = (unsigned char *)PyBytes_AS_STRING(out);
    uint64_t m = nbytes * 8;
    Py_BEGIN_ALLOW_THREADS
    memset(bloom, 0, nbytes);
    for (size_t i = 0; i < distinct; i++) {
        uint32_t h = tri_hash(seen[i], m);
        bloom[h >> 3] |= (unsigned char)(1u << (h & 7));
    }
    Py_END_ALLOW_THREADS
    PyMem_RawFree(seen);
    PyBuffer_Release(view);
    return out;
}

/* A 5-gram's 24-bit key (a trigram is its own key); see gram_bloom below. */
static inline uint32_t gram5_key(uint64_t g) {
    return (uint32_t)(((g & 0xFFFFFFFFFFull) * 0x9E3779B97F4A7C15ull) >> 40);
}

/* The filter of the distinct trigram keys of the lines of buf[start:end],
 * plus their 5-gram keys when five: the body of trigram_bloom and gram_bloom. */
static PyObject *grams_bloom(PyObject *args, int five) {
    PyObject *obj;
    Py_ssize_t start, end;
    int bits_per;
    region r;
    if (!PyArg_ParseTuple(args, "Onni", &obj, &start, &end, &bits_per)) return NULL;
    if (bits_per < 1 || bits_per > 64) {
        PyErr_SetString(PyExc_ValueError, "bits_per must be 1..64");
        return NULL;
    }
    if (get_region(obj, start, end, &r) < 0) return NULL;
    size_t span = (size_t)(r.end - r.start);
    size_t cap = span < (1u << 16) ? span + 1 : (1u << 16); /* grown as needed */
    uint64_t *map = PyMem_RawCalloc(TRI_BITS / 64, sizeof(uint64_t));
    uint32_t *seen = PyMem_RawMalloc(cap * sizeof(uint32_t));
    if (!map || !seen) {
        PyMem_RawFree(map);
        PyMem_RawFree(seen);
        PyBuffer_Release(&r.view);
        return PyErr_NoMemory();
    }
    const unsigned char *b = r.view.buf;
    size_t distinct = 0;
    int ok = 0;
    Py_BEGIN_ALLOW_THREADS
    size_t pos = (size_t)r.start, hi = (size_t)r.end;
#define GRAM_ADD(key)                                                              \
    do {                                                                           \
        uint32_t k_ = (key);                                                       \
        uint64_t bit_ = 1ull << (k_ & 63), *w_ = &map[k_ >> 6];                   \
        if (!(*w_ & bit_)) {                                                       \
            if (distinct == cap) {                                                 \
                uint32_t *more = PyMem_RawRealloc(seen, 2 * cap * sizeof(uint32_t)); \
                if (!more) goto oom;                                               \
                seen = more;                                                       \
                cap *= 2;                                                          \
            }                                                                      \
            *w_ |= bit_;                                                           \
            seen[distinct++] = k_;                                                 \
        }                                                                          \
    } while (0)
    while (pos < hi) {
        const unsigned char *e = memchr(b + pos, '\n', hi - pos);
        size_t re = e ? (size_t)(e - b) : hi;
        size_t ts = pos + ULID_LEN + 1;
        if (ts < re) {
            const unsigned char *sp = memchr(b + ts, ' ', re - ts);
            size_t ls = sp ? (size_t)(sp - b) + 1 : re;
            if (re >= ls + 3) {
                uint64_t g = ((uint64_t)b[ls] << 8) | b[ls + 1];
                for (size_t i = ls + 2; i < re; i++) {
                    g = (g << 8) | b[i];
                    GRAM_ADD((uint32_t)g & 0xFFFFFFu);
                    if (five && i >= ls + 4) GRAM_ADD(gram5_key(g));
                }
            }
        }
        pos = re + 1;
    }
#undef GRAM_ADD
    ok = 1;
oom:
    Py_END_ALLOW_THREADS
    PyMem_RawFree(map);
    return bloom_of_keys(seen, distinct, bits_per, ok, &r.view);
}

static PyObject *fast_trigram_bloom(PyObject *self, PyObject *args) {
    return grams_bloom(args, 0);
}

static PyObject *fast_bloom_may_contain(PyObject *self, PyObject *args) {
    const unsigned char *bloom, *lit;
    Py_ssize_t blen, llen;
    if (!PyArg_ParseTuple(args, "y#y#", &bloom, &blen, &lit, &llen)) return NULL;
    if (blen <= 0 || blen > ((Py_ssize_t)1 << 28)) Py_RETURN_TRUE; /* no filter: cannot rule out */
    uint64_t m = (uint64_t)blen * 8;
    for (Py_ssize_t i = 0; i + 3 <= llen; i++) {
        uint32_t t = ((uint32_t)lit[i] << 16) | ((uint32_t)lit[i + 1] << 8) | lit[i + 2];
        uint32_t h = tri_hash(t, m);
        if (!(bloom[h >> 3] & (1u << (h & 7)))) Py_RETURN_FALSE;
    }
    Py_RETURN_TRUE;
}

/* What count() and zcount() count: records whose line holds every one of
 * the nt terms fs[0..nt) and none of the nn terms fs[nt..nt+nn), and with
 * step_ms > 0 the buckets counts[0..nb) of (ms - origin_ms) / step_ms. */
typedef struct {
    const finder *fs;
    Py_ssize_t nt, nn;
    int icase;
    int64_t step_ms, origin_ms;
    int64_t *counts;
    Py_ssize_t nb;
} count_spec;

/* Count the matching records of base[lo:hi) (whole records) into *matched
 * and *outside (matches whose bucket is not in counts). No GIL needed. */
static void count_range(const count_spec *cs, const char *base, size_t lo, size_t hi, unsigned long long *matched,
                        unsigned long long *outside) {
    const finder *fs = cs->fs;
    Py_ssize_t nt = cs->nt, nn = cs->nn;
    int icase = cs->icase;
    size_t pos = lo;
    while (pos < hi) {
        size_t rs, re;
        if (nt) { /* jump to the next hit of the first term */
            const char *p = find_any(&fs[0], icase, base + pos, hi - pos);
            if (!p) break;
            size_t hp = (size_t)(p - base);
            const char *nl = hp > lo ? memrchr(base + lo, '\n', hp - lo) : NULL;
            rs = nl ? (size_t)(nl - base) + 1 : lo;
            const char *e = memchr(p, '\n', hi - hp);
            re = e ? (size_t)(e - base) + 1 : hi;
            size_t ls = line_start(base, rs, re);
            if (!(hp >= ls && hp + fs[0].n <= re)) {
                pos = hp + 1; /* the hit starts in the ULID or topic; look further */
                continue;
            }
        } else {
            rs = pos;
            const char *e = memchr(base + pos, '\n', hi - pos);
            re = e ? (size_t)(e - base) + 1 : hi;
        }
        pos = re;
        size_t ls = line_start(base, rs, re), ln = re - ls;
        int ok = 1;
        for (Py_ssize_t i = 1; ok && i < nt; i++) ok = find_any(&fs[i], icase, base + ls, ln) != NULL;
        for (Py_ssize_t i = nt; ok && i < nt + nn; i++) ok = find_any(&fs[i], icase, base + ls, ln) == NULL;
        if (!ok) continue;
        (*matched)++;
        if (cs->step_ms > 0) {
            int64_t ms = ulid_ms(base + rs, re - rs);
            if (ms < cs->origin_ms || (ms - cs->origin_ms) / cs->step_ms >= cs->nb) {
                (*outside)++;
            } else {
                cs->counts[(ms - cs->origin_ms) / cs->step_ms]++;
            }
        }
    }
}

/* count(buf, start, end, terms, nots, icase, step_ms, origin_ms, counts) -> (matched, outside)
 *
 * Records of buf[start:end] whose line holds every one of `terms` and none of
 * `nots` (literals; ASCII case folded when icase), counted without copying
 * anything out. With step_ms > 0, each match is also added to the writable
 * native-int64 array `counts` at index (ms - origin_ms) // step_ms, ms being
 * its ULID's 48-bit time; matches whose index falls outside the array are
 * counted in `outside` (and in `matched`) only, so the caller can tell. */
#define COUNT_MAX_TERMS 64

/* count()'s and zcount()'s terms, -v terms and buckets, read from their
 * arguments; count_args_free releases what count_args_read took, also after
 * it failed part way. */
typedef struct {
    finder fs[2 * COUNT_MAX_TERMS];
    char *folded[2 * COUNT_MAX_TERMS];
    Py_ssize_t nf;
    Py_buffer cview;
    int have_counts;
    count_spec spec;
} count_args;

static int count_terms_read(count_args *ca, PyObject *tseq, PyObject *nseq, int icase) {
    Py_ssize_t nt = PySequence_Fast_GET_SIZE(tseq), nn = PySequence_Fast_GET_SIZE(nseq);
    if (nt > COUNT_MAX_TERMS || nn > COUNT_MAX_TERMS) {
        PyErr_Format(PyExc_ValueError, "count: at most %d terms and %d excluded terms", COUNT_MAX_TERMS, COUNT_MAX_TERMS);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nt + nn; i++) {
        PyObject *t = i < nt ? PySequence_Fast_GET_ITEM(tseq, i) : PySequence_Fast_GET_ITEM(nseq, i - nt);
        char *p;
        Py_ssize_t n;
        if (PyBytes_AsStringAndSize(t, &p, &n) < 0) return -1;
        if (n == 0 || memchr(p, '\n', (size_t)n)) {
            PyErr_SetString(PyExc_ValueError, "count: terms must be non-empty and hold no LF");
            return -1;
        }
        /* a copy either way: the bytes objects are not held once the GIL is released */
        ca->folded[i] = PyMem_Malloc((size_t)n);
        if (!ca->folded[i]) {
            PyErr_NoMemory();
            return -1;
        }
        ca->nf = i + 1;
        if (icase) {
            finder_init_i(&ca->fs[i], ca->folded[i], p, (size_t)n);
        } else {
            memcpy(ca->folded[i], p, (size_t)n);
            finder_init(&ca->fs[i], ca->folded[i], (size_t)n);
        }
    }
    ca->spec.fs = ca->fs;
    ca->spec.nt = nt;
    ca->spec.nn = nn;
    ca->spec.icase = icase;
    return 0;
}

static int count_args_read(count_args *ca, PyObject *terms_o, PyObject *nots_o, int icase, long long step_ms,
                           long long origin_ms, PyObject *counts_o) {
    memset(ca, 0, sizeof *ca);
    if (step_ms < 0) {
        PyErr_SetString(PyExc_ValueError, "step_ms must be >= 0");
        return -1;
    }
    ca->spec.step_ms = step_ms;
    ca->spec.origin_ms = origin_ms;
    PyObject *tseq = PySequence_Fast(terms_o, "count: terms must be a sequence of bytes");
    if (!tseq) return -1;
    PyObject *nseq = PySequence_Fast(nots_o, "count: nots must be a sequence of bytes");
    if (!nseq) {
        Py_DECREF(tseq);
        return -1;
    }
    int rc = count_terms_read(ca, tseq, nseq, icase);
    Py_DECREF(nseq);
    Py_DECREF(tseq);
    if (rc < 0 || step_ms == 0 || counts_o == Py_None) return rc;
    if (PyObject_GetBuffer(counts_o, &ca->cview, PyBUF_WRITABLE) < 0) {
        PyErr_Clear();
        PyErr_SetString(PyExc_TypeError, "count: counts must be a writable array of int64 (or None)");
        return -1;
    }
    ca->have_counts = 1;
    if (ca->cview.len % (Py_ssize_t)sizeof(int64_t) || ((uintptr_t)ca->cview.buf % sizeof(int64_t))) {
        PyErr_SetString(PyExc_ValueError, "count: counts must be an aligned array of int64");
        return -1;
    }
    ca->spec.counts = ca->cview.buf;
    ca->spec.nb = ca->cview.len / (Py_ssize_t)sizeof(int64_t);
    return 0;
}

static void count_args_free(count_args *ca) {
    for (Py_ssize_t i = 0; i < ca->nf; i++) PyMem_Free(ca->folded[i]);
    if (ca->have_counts) PyBuffer_Release(&ca->cview);
}

static PyObject *fast_count(PyObject *self, PyObject *args) {
    PyObject *obj, *terms_o, *nots_o, *counts_o, *result = NULL;
    Py_ssize_t start, end;
    int icase;
    long long step_ms, origin_ms;
    region r;
    count_args ca;
    if (!PyArg_ParseTuple(args, "OnnOOpLLO", &obj, &start, &end, &terms_o, &nots_o, &icase, &step_ms, &origin_ms,
                          &counts_o))
        return NULL;
    if (count_args_read(&ca, terms_o, nots_o, icase, step_ms, origin_ms, counts_o) < 0) goto done;
    if (get_region(obj, start, end, &r) < 0) goto done;
    unsigned long long matched = 0, outside = 0;
    Py_BEGIN_ALLOW_THREADS
    count_range(&ca.spec, r.view.buf, (size_t)r.start, (size_t)r.end, &matched, &outside);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&r.view);
    result = Py_BuildValue("(KK)", matched, outside);
done:
    count_args_free(&ca);
    return result;
}

/* logfmt_eq(buf, start, end, key, value, kind=2) -> (candidates, verdicts)
 *
 * For a -where KEY=VALUE over logfmt lines: the records of buf[start:end]
 * whose line holds KEY (int64 triples as MODE_CANDIDATES), each with a
 * verdict byte: 1 the line certainly satisfies KEY=VALUE, 0 it certainly does
 * not, 2 undecided here (the caller parses it). The line's pairs are found as
 * oklog.query.fields finds them (_PAIR.findall: leftmost, non-overlapping,
 * ``(?:^|[\s,;])([^\s="',;]+)=("(?:[^"\\]|\\.)*"|[^\s,;]*)``), the first
 * pair of the key deciding: 1 when its value is bare and VALUE byte for byte
 * (equal text is equal whether or not both read as numbers), 0 when the line
 * has pairs but none of the key, or its value certainly differs (see
 * bare_differs; kind tells what VALUE reads as: 0 text, 1 an integer, 2 else). A line that may be JSON (first non-space
 * byte '{'), a quoted or different value, or a line without pairs: 2. */
static inline int py_space(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }
static inline int pair_sep(unsigned char c) { return py_space(c) || c == ',' || c == ';'; }
static inline int key_char(unsigned char c) { return !(pair_sep(c) || c == '=' || c == '"' || c == '\''); }

/* A pair whose key starts at k (line ends at le): its end, or 0; sets the key
 * end, the value span and whether it was quoted. */
static size_t try_pair(const unsigned char *b, size_t k, size_t le, size_t *ke, size_t *vs, size_t *ve, int *quoted) {
    size_t j = k;
    while (j < le && key_char(b[j])) j++;
    if (j == k || j >= le || b[j] != '=') return 0;
    *ke = j;
    size_t v = j + 1;
    *vs = v;
    if (v < le && b[v] == '"') {
        size_t q = v + 1;
        while (q < le) {
            if (b[q] == '\\') {
                if (q + 1 >= le || b[q + 1] == '\n') break;
                q += 2;
            } else if (b[q] == '"') {
                *ve = q + 1;
                *quoted = 1;
                return q + 1;
            } else {
                q++;
            }
        }
    }
    size_t w = v;
    while (w < le && !pair_sep(b[w])) w++;
    *ve = w;
    *quoted = 0;
    return w > j ? w : j + 1; /* never 0: the key is at least one byte */
}

/* Whether a bare value other than VALUE's bytes certainly fails KEY=VALUE:
 * kind 0 (VALUE is no number: compared as text) when the value is ASCII;
 * kind 1 (VALUE is 1-15 decimal digits) when the value is 1-15 decimal
 * digits too (exact as floats) and another number, or holds no byte any
 * float literal could hold (so it compares as text, and differs). */
static int bare_differs(const unsigned char *p, size_t n, const char *val, size_t vn, int kind) {
    if (kind == 0) {
        for (size_t i = 0; i < n; i++)
            if (p[i] >= 0x80) return 0;
        return 1;
    }
    if (kind != 1) return 0;
    size_t digits = 0;
    for (size_t i = 0; i < n; i++) digits += p[i] >= '0' && p[i] <= '9';
    if (n && digits == n) {
        while (n > 1 && *p == '0') p++, n--;
        while (vn > 1 && *val == '0') val++, vn--;
        if (n > 15) return 0;
        return n != vn || memcmp(p, val, n) != 0;
    }
    static const char floaty[] = "0123456789+-._eEiInNfFtTyYaA";
    for (size_t i = 0; i < n; i++)
        if (p[i] >= 0x80 || memchr(floaty, p[i], sizeof floaty - 1)) return 0;
    return 1;
}

static unsigned char logfmt_verdict(const unsigned char *b, size_t ls, size_t le, const char *key, size_t kn,
                                    const char *val, size_t vn, int kind) {
    size_t p = ls;
    while (p < le && py_space(b[p])) p++;
    if (p < le && b[p] == '{') return 2;
    int pairs = 0;
    size_t pos = ls;
    while (pos < le) {
        size_t ke = 0, vs = 0, ve = 0, end = 0;
        int quoted = 0;
        size_t k = pos;
        if (pos == ls) end = try_pair(b, pos, le, &ke, &vs, &ve, &quoted);
        if (!end && pair_sep(b[pos])) {
            k = pos + 1;
            end = try_pair(b, k, le, &ke, &vs, &ve, &quoted);
        }
        if (!end) {
            pos++;
            continue;
        }
        pairs = 1;
        if (ke - k == kn && memcmp(b + k, key, kn) == 0)
        {
            if (quoted) return 2;
            if (ve - vs == vn && memcmp(b + vs, val, vn) == 0) return 1;
            return bare_differs(b + vs, ve - vs, val, vn, kind) ? 0 : 2;
        }
        pos = end;
    }
    return pairs ? 0 : 2;
}

static PyObject *fast_logfmt_eq(PyObject *self, PyObject *args) {
    PyObject *obj;
    Py_ssize_t start, end, kn, vn;
    const char *key, *val;
    int kind = 2;
    region r;
    if (!PyArg_ParseTuple(args, "Onny#y#|i", &obj, &start, &end, &key, &kn, &val, &vn, &kind)) return NULL;
    if (kind == 1) { /* 1-15 decimal digits, as promised */
        Py_ssize_t i = 0;
        while (i < vn && val[i] == '0') i++;
        if (vn - i > 15) kind = 2;
        for (i = 0; i < vn; i++)
            if (val[i] < '0' || val[i] > '9') kind = 2;
    }
    if (kn == 0 || vn == 0) {
        PyErr_SetString(PyExc_ValueError, "logfmt_eq: key and value must be non-empty");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < kn; i++)
        if (!key_char((unsigned char)key[i])) {
            PyErr_SetString(PyExc_ValueError, "logfmt_eq: key holds a byte no logfmt key holds");
            return NULL;
        }
    for (Py_ssize_t i = 0; i < vn; i++)
        if (pair_sep((unsigned char)val[i]) || val[i] == '"') {
            PyErr_SetString(PyExc_ValueError, "logfmt_eq: value must be a bare logfmt value");
            return NULL;
        }
    if (get_region(obj, start, end, &r) < 0) return NULL;
    Py_ssize_t room_c = room(&r, MODE_CANDIDATES), records = room_c / 24 + 1;
    PyObject *cand = PyBytes_FromStringAndSize(NULL, room_c);
    PyObject *verd = cand ? PyBytes_FromStringAndSize(NULL, records) : NULL;
    if (!cand || !verd) {
        Py_XDECREF(cand);
        PyBuffer_Release(&r.view);
        return NULL;
    }
    char *w0 = PyBytes_AS_STRING(cand), *w = w0;
    unsigned char *v0 = (unsigned char *)PyBytes_AS_STRING(verd), *v = v0;
    char *kcopy = PyMem_Malloc((size_t)kn + (size_t)vn);
    if (!kcopy) {
        Py_DECREF(cand);
        Py_DECREF(verd);
        PyBuffer_Release(&r.view);
        return PyErr_NoMemory();
    }
    memcpy(kcopy, key, (size_t)kn);
    memcpy(kcopy + kn, val, (size_t)vn);
    const char *base = r.view.buf;
    const unsigned char *ub = r.view.buf;
    finder f;
    finder_init(&f, kcopy, (size_t)kn);
    Py_BEGIN_ALLOW_THREADS
    size_t lo = (size_t)r.start, hi = (size_t)r.end, pos = lo;
    while (pos < hi) {
        const char *p = find(&f, base + pos, hi - pos);
        if (!p) break;
        size_t hp = (size_t)(p - base);
        const char *nl = hp > lo ? memrchr(base + lo, '\n', hp - lo) : NULL;
        size_t rs = nl ? (size_t)(nl - base) + 1 : lo;
        const char *e = memchr(p, '\n', hi - hp);
        size_t re = e ? (size_t)(e - base) + 1 : hi;
        size_t ls = line_start(base, rs, re);
        if (!(hp >= ls && hp + (size_t)kn <= re)) {
            pos = hp + 1;
            continue;
        }
        pos = re;
        size_t le = e ? re - 1 : re;
        unsigned char verdict = logfmt_verdict(ub, ls, le, kcopy, (size_t)kn, kcopy + kn, (size_t)vn, kind);
        if (verdict == 0) continue;
        w = emit(w, base, rs, ls, re, MODE_CANDIDATES);
        *v++ = verdict;
    }
    Py_END_ALLOW_THREADS
    PyMem_Free(kcopy);
    PyBuffer_Release(&r.view);
    cand = finish(cand, w0, w);
    if (!cand) {
        Py_DECREF(verd);
        return NULL;
    }
    verd = finish(verd, (char *)v0, (char *)v);
    if (!verd) {
        Py_DECREF(cand);
        return NULL;
    }
    return Py_BuildValue("(NN)", cand, verd);
}

/* Block summaries, second kind: one bloom filter of the trigrams and the
 * 5-grams of the lines. Trigrams alone cannot rule out a rare identifier in
 * log lines: every digit trigram occurs in any megabyte of lines with
 * numbers, so "blk_-6952295868487656571" passes every block's trigram
 * filter. Of the 10^5 digit 5-grams a block holds only a part, so a literal
 * with a dozen of them is ruled out almost everywhere it is absent.
 * Each gram is reduced to a 24-bit key (a trigram is its own key, a 5-gram
 * is hashed), keys are collected exactly in a 2^24-bit map, and the filter
 * has bits_per bits per distinct key with one hash of the key. Two grams
 * sharing a key share a bit: false positives only, never a false negative.
 * The trigram keys are those of trigram_bloom, so a reader that checks only
 * trigrams (bloom_may_contain) stays correct on these filters. */
static PyObject *fast_gram_bloom(PyObject *self, PyObject *args) {
    return grams_bloom(args, 1);
}

/* False if some trigram or 5-gram of literal is surely absent from a
 * gram_bloom filter. */
static PyObject *fast_gram_bloom_may_contain(PyObject *self, PyObject *args) {
    const unsigned char *bloom, *lit;
    Py_ssize_t blen, llen;
    if (!PyArg_ParseTuple(args, "y#y#", &bloom, &blen, &lit, &llen)) return NULL;
    if (blen <= 0 || blen > ((Py_ssize_t)1 << 28)) Py_RETURN_TRUE; /* no filter: cannot rule out */
    uint64_t m = (uint64_t)blen * 8;
    uint64_t g = 0;
    for (Py_ssize_t i = 0; i < llen; i++) {
        g = (g << 8) | lit[i];
        if (i >= 4) {
            uint32_t h = tri_hash(gram5_key(g), m);
            if (!(bloom[h >> 3] & (1u << (h & 7)))) Py_RETURN_FALSE;
        }
    }
    for (Py_ssize_t i = 0; i + 3 <= llen; i++) {
        uint32_t t = ((uint32_t)lit[i] << 16) | ((uint32_t)lit[i + 1] << 8) | lit[i + 2];
        uint32_t h = tri_hash(t, m);
        if (!(bloom[h >> 3] & (1u << (h & 7)))) Py_RETURN_FALSE;
    }
    Py_RETURN_TRUE;
}

/* -- compressed blocks ------------------------------------------------------------
 * zscan decompresses the zstd frames of store segment blocks and cuts, greps
 * and formats their records in one call without the GIL, a whole query unit
 * (several blocks) at a time: the worker thread takes the GIL once per unit,
 * not three times per block, and no decompressed block becomes a Python
 * object. libzstd is the system's (the one the zstandard binding also
 * wraps, found with dlopen at first use, so building needs no zstd headers
 * and a host without it still runs: zscan_available() is then False and the
 * caller decompresses through the binding). A frame whose index entry
 * carries the CRC-32 of its bytes (index version 2) is checked by that CRC
 * (zlib's crc32, over a tenth of the bytes) and decoded without hashing its
 * output (ZSTD_d_forceIgnoreChecksum): the same guarantee, about a tenth
 * faster. A frame without one (version 1), or any frame when zlib or that
 * parameter is missing, is decoded verifying its content checksum. */
#include <dlfcn.h>

typedef void *(*zstd_create_fn)(void);
typedef size_t (*zstd_free_fn)(void *);
typedef size_t (*zstd_dec_fn)(void *, void *, size_t, const void *, size_t);
typedef unsigned (*zstd_iserr_fn)(size_t);
typedef size_t (*zstd_setp_fn)(void *, int, int);
typedef unsigned long (*crc32_fn)(unsigned long, const unsigned char *, unsigned);
static struct {
    int tried, ok;
    zstd_create_fn create;
    zstd_free_fn free_;
    zstd_dec_fn dec;
    zstd_iserr_fn iserr;
    zstd_setp_fn setp; /* NULL: every frame is decoded verifying its checksum */
    crc32_fn crc32;    /* zlib's; NULL likewise */
} zlib_;
#define ZSTD_D_FORCE_IGNORE_CHECKSUM 1002 /* ZSTD_d_experimentalParam3, libzstd >= 1.4.7 */

static int zstd_load(void) { /* called with the GIL held */
    if (zlib_.tried) return zlib_.ok;
    zlib_.tried = 1;
    void *h = dlopen("libzstd.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h) h = dlopen("libzstd.so", RTLD_NOW | RTLD_LOCAL);
    if (!h) return 0;
    zlib_.create = (zstd_create_fn)dlsym(h, "ZSTD_createDCtx");
    zlib_.free_ = (zstd_free_fn)dlsym(h, "ZSTD_freeDCtx");
    zlib_.dec = (zstd_dec_fn)dlsym(h, "ZSTD_decompressDCtx");
    zlib_.iserr = (zstd_iserr_fn)dlsym(h, "ZSTD_isError");
    zlib_.ok = zlib_.create && zlib_.free_ && zlib_.dec && zlib_.iserr;
    zlib_.setp = (zstd_setp_fn)dlsym(h, "ZSTD_DCtx_setParameter");
    void *z = dlopen("libz.so.1", RTLD_NOW | RTLD_LOCAL);
    if (z) zlib_.crc32 = (crc32_fn)dlsym(z, "crc32");
    if (!zlib_.crc32) zlib_.setp = NULL;
    return zlib_.ok;
}

/* Working memory of zscan and zcount (a decompressed block, and zscan's
 * output) kept between calls. Fresh, a unit's 16 MiB are about 4,000 page
 * faults and as many pages cleared and unmapped again, a quarter of the
 * node's CPU in a query for a common term; glibc maps allocations this
 * large anew (in a worker thread's arena, a heap trimmed when they are
 * freed). At most ZBUF_SLOTS buffers (one per query worker) of at most
 * ZBUF_MAX bytes are kept: taken and given back with the GIL held, so they
 * need no lock of their own. */
#define ZBUF_SLOTS 2
#define ZBUF_MAX ((size_t)40 << 20)
static struct {
    char *buf;
    size_t cap;
} zbufs[ZBUF_SLOTS];

static char *zbuf_take(size_t n, size_t *cap) {
    for (int i = 0; i < ZBUF_SLOTS; i++)
        if (zbufs[i].buf && zbufs[i].cap >= n) {
            char *b = zbufs[i].buf;
            *cap = zbufs[i].cap;
            zbufs[i].buf = NULL;
            return b;
        }
    *cap = n;
    return PyMem_RawMalloc(n);
}

static void zbuf_give(char *b, size_t cap) {
    if (!b) return;
    int slot = -1; /* an empty slot, else the smallest kept buffer if smaller than this one */
    for (int i = 0; i < ZBUF_SLOTS && cap <= ZBUF_MAX; i++)
        if (!zbufs[i].buf) {
            slot = i;
            break;
        } else if (zbufs[i].cap < cap && (slot < 0 || zbufs[i].cap < zbufs[slot].cap)) {
            slot = i;
        }
    if (slot < 0) {
        PyMem_RawFree(b);
        return;
    }
    PyMem_RawFree(zbufs[slot].buf);
    zbufs[slot].buf = b;
    zbufs[slot].cap = cap;
}

/* The decompression contexts of one zscan or zcount call: check verifies
 * content checksums; trust (NULL if unavailable) skips them, for frames
 * whose bytes matched their CRC. check is made only if a frame of the call
 * (nf quads fr) needs it: one without a CRC, or any when trust is NULL. */
typedef struct {
    void *check, *trust;
} zdctx;

static int zdctx_open(zdctx *z, const int64_t *fr, size_t nf) {
    z->trust = zlib_.setp ? zlib_.create() : NULL;
    if (z->trust && zlib_.iserr(zlib_.setp(z->trust, ZSTD_D_FORCE_IGNORE_CHECKSUM, 1))) {
        zlib_.free_(z->trust);
        z->trust = NULL;
    }
    int need_check = z->trust == NULL;
    for (size_t i = 0; i < nf && !need_check; i++) need_check = fr[4 * i + 3] < 0;
    z->check = need_check ? zlib_.create() : NULL;
    return need_check ? z->check != NULL : 1;
}

static void zdctx_close(zdctx *z) {
    if (z->check) zlib_.free_(z->check);
    if (z->trust) zlib_.free_(z->trust);
}

/* Frame q (offset, compressed length, raw length, CRC-32 or -1) of src into
 * data (room for raw + 1 bytes): 1 if it decoded to exactly its raw length
 * and passed its CRC or its content checksum, 0 if damaged. */
static int zframe(const zdctx *z, char *data, const char *src, const int64_t *q) {
    const unsigned char *f = (const unsigned char *)src + q[0];
    size_t clen = (size_t)q[1], raw = (size_t)q[2];
    void *d = z->check;
    if (q[3] >= 0 && z->trust) {
        if (zlib_.crc32(0UL, f, (unsigned)clen) != (unsigned long)q[3]) return 0;
        d = z->trust;
    }
    size_t got = zlib_.dec(d, data, raw + 1, f, clen);
    return !zlib_.iserr(got) && got == raw;
}

/* -- a regex's candidate lines decided in C: Hyperscan (libhs.so.5) -----------
 * The matcher (oklog.query.engine) trusts Hyperscan alone for a regex whose
 * hits are of bounded width and cannot cross an LF. Through the Python
 * binding each hit is a Python callback holding the GIL (a third of a regex
 * query's CPU at 2.6 % of lines matching); here each candidate line is one
 * hs_scan that stops at its first hit, off the GIL. The library is found
 * with dlopen at first use (Debian's libhyperscan5, installed by
 * `make deps`); without it hs_compile() is None and the binding decides. */
typedef int (*hs_compile_fn)(const char *, unsigned, unsigned, const void *, void **, void **);
typedef int (*hs_free_fn)(void *);
typedef int (*hs_alloc_scratch_fn)(const void *, void **);
typedef int (*hs_event_fn)(unsigned, unsigned long long, unsigned long long, unsigned, void *);
typedef int (*hs_scan_fn)(const void *, const char *, unsigned, unsigned, void *, hs_event_fn, void *);
static struct {
    int tried, ok;
    hs_compile_fn compile;
    hs_free_fn free_compile_error, free_database, free_scratch;
    hs_alloc_scratch_fn alloc_scratch;
    hs_scan_fn scan;
} hs_;
#define HS_MODE_BLOCK_ 1
#define HS_SCAN_TERMINATED_ (-3)

static int hs_load(void) { /* called with the GIL held */
    if (hs_.tried) return hs_.ok;
    hs_.tried = 1;
    void *h = dlopen("libhs.so.5", RTLD_NOW | RTLD_LOCAL);
    if (!h) return 0;
    hs_.compile = (hs_compile_fn)dlsym(h, "hs_compile");
    hs_.free_compile_error = (hs_free_fn)dlsym(h, "hs_free_compile_error");
    hs_.free_database = (hs_free_fn)dlsym(h, "hs_free_database");
    hs_.free_scratch = (hs_free_fn)dlsym(h, "hs_free_scratch");
    hs_.alloc_scratch = (hs_alloc_scratch_fn)dlsym(h, "hs_alloc_scratch");
    hs_.scan = (hs_scan_fn)dlsym(h, "hs_scan");
    hs_.ok = hs_.compile && hs_.free_compile_error && hs_.free_database && hs_.free_scratch && hs_.alloc_scratch &&
             hs_.scan;
    return hs_.ok;
}

#define HS_CAPSULE "oklog._fast.hs_database"

static void hs_capsule_free(PyObject *cap) {
    void *db = PyCapsule_GetPointer(cap, HS_CAPSULE);
    if (db) hs_.free_database(db);
}

/* hs_compile(pattern, flags) -> capsule or None: the pattern compiled for
 * zscan's verify (block mode); None without libhs, or for a pattern it
 * rejects (the caller then keeps the binding's database). */
static PyObject *fast_hs_compile(PyObject *self, PyObject *args) {
    const char *pat;
    Py_ssize_t plen;
    unsigned flags;
    if (!PyArg_ParseTuple(args, "y#I", &pat, &plen, &flags)) return NULL;
    if (!hs_load() || memchr(pat, 0, (size_t)plen)) Py_RETURN_NONE;
    void *db = NULL, *err = NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS /* a long pattern may take a while; pat stays alive (args hold it) */
    rc = hs_.compile(pat, flags, HS_MODE_BLOCK_, NULL, &db, &err);
    Py_END_ALLOW_THREADS
    if (rc != 0) {
        if (err) hs_.free_compile_error(err);
        Py_RETURN_NONE;
    }
    PyObject *cap = PyCapsule_New(db, HS_CAPSULE, hs_capsule_free);
    if (!cap) hs_.free_database(db);
    return cap;
}

static int hs_first_hit(unsigned id, unsigned long long from, unsigned long long to, unsigned flags, void *ctx) {
    *(int *)ctx = 1;
    return 1; /* stop: one hit decides the line */
}

/* Whether the line base[ls:le) holds a hit of db (scratch: this thread's):
 * 1 or 0, -1 if Hyperscan failed. */
static int hs_line(const void *db, void *scratch, const char *base, size_t ls, size_t le) {
    int hit = 0, rc = hs_.scan(db, base + ls, (unsigned)(le - ls), 0, scratch, hs_first_hit, &hit);
    return rc == 0 || rc == HS_SCAN_TERMINATED_ ? hit : -1;
}

static PyObject *fast_zscan_available(PyObject *self, PyObject *args) {
    return PyBool_FromLong(zstd_load());
}

/* a's 26-byte ULID (fewer if the record is shorter) compared with key as
 * Python compares bytes: < 0, 0, > 0 */
static inline int ulid_cmp(const char *a, size_t alen, const char *key, size_t klen) {
    size_t n = alen < klen ? alen : klen;
    int c = memcmp(a, key, n);
    if (c) return c;
    return alen < klen ? -1 : alen > klen;
}

/* the first record of base[lo:hi) whose ULID is >= key, or hi */
static size_t zseek(const char *base, size_t lo, size_t hi, const char *key, size_t klen) {
    size_t pos = lo;
    while (pos < hi) {
        size_t alen = hi - pos < ULID_LEN ? hi - pos : ULID_LEN;
        if (ulid_cmp(base + pos, alen, key, klen) >= 0) return pos;
        const char *e = memchr(base + pos, '\n', hi - pos);
        pos = e ? (size_t)(e - base) + 1 : hi;
    }
    return hi;
}

/* The frame list of zscan and zcount (native int64 quads: offset,
 * compressed length, raw length, CRC-32 of the frame's bytes or -1),
 * checked against the buffer r and copied (it is read without the GIL);
 * NULL with an exception set if it is bad. */
static int64_t *zframes_read(const region *r, const char *frames_b, Py_ssize_t frames_len, size_t *nf, int64_t *maxraw) {
    if (frames_len % 32) {
        PyErr_SetString(PyExc_ValueError, "frames must be int64 quads");
        return NULL;
    }
    *nf = (size_t)frames_len / 32;
    *maxraw = 0;
    int64_t *fr = PyMem_Malloc(frames_len ? (size_t)frames_len : 1);
    if (!fr) {
        PyErr_NoMemory();
        return NULL;
    }
    memcpy(fr, frames_b, (size_t)frames_len);
    for (size_t i = 0; i < *nf; i++) {
        int64_t off = fr[4 * i], clen = fr[4 * i + 1], raw = fr[4 * i + 2], crc = fr[4 * i + 3];
        if (off < 0 || clen < 0 || raw < 0 || off > r->view.len || clen > r->view.len - off || raw > ((int64_t)1 << 32) ||
            clen >= ((int64_t)1 << 32) || crc < -1 || crc > (int64_t)0xFFFFFFFF) {
            PyErr_SetString(PyExc_ValueError, "frame outside the buffer");
            PyMem_Free(fr);
            return NULL;
        }
        if (raw > *maxraw) *maxraw = raw;
    }
    return fr;
}

/* The records [*lo, *hi) of a decompressed block data[0:n) whose ULIDs lie
 * in [klo, khi): only a block that crosses a key needs a walk. */
static void zcut(const char *data, size_t n, const char *klo, size_t klo_len, const char *khi, size_t khi_len,
                 size_t *lo_out, size_t *hi_out) {
    size_t lo = 0, hi = n;
    if (n && ulid_cmp(data, hi < ULID_LEN ? hi : ULID_LEN, klo, klo_len) < 0) lo = zseek(data, 0, hi, klo, klo_len);
    const char *lnl = hi >= 2 ? memrchr(data, '\n', hi - 1) : NULL;
    size_t last = lnl ? (size_t)(lnl - data) + 1 : 0;
    if (last < lo) last = lo;
    if (lo < hi && ulid_cmp(data + last, hi - last < ULID_LEN ? hi - last : ULID_LEN, khi, khi_len) >= 0)
        hi = zseek(data, lo, hi, khi, khi_len);
    *lo_out = lo;
    *hi_out = hi;
}

/* zscan(buf, frames, needle, mode, klo, khi, verify=None) -> ([bytes], [bad frame index])
 * frames: native int64 quads (offset, compressed length, raw length,
 * CRC-32 or -1: segfile.frame_table) of frames in buf; needle: the literal every returned line holds, or None for
 * every record; mode 0-2; records with a ULID outside [klo, khi) are left
 * out; verify (hs_compile's, with a needle): only lines holding a hit of it
 * are kept. The answer is one bytes object per frame with output. With a
 * needle, output is written to kept working memory (zbuf) and copied out
 * at its size; without one (nearly whole blocks), straight into a bytes
 * object per frame. A frame that fails to decompress (damaged, checksum or
 * CRC mismatch, wrong size) is skipped and its index listed. */
static PyObject *fast_zscan(PyObject *self, PyObject *args) {
    PyObject *obj, *needle_obj, *verify_obj = Py_None;
    const char *frames_b, *klo, *khi;
    Py_ssize_t frames_len, klo_len, khi_len;
    int mode;
    if (!PyArg_ParseTuple(args, "Oy#Oiy#y#|O", &obj, &frames_b, &frames_len, &needle_obj, &mode, &klo, &klo_len, &khi,
                          &khi_len, &verify_obj))
        return NULL;
    if (check_mode_max(mode, MODE_ULID) < 0) return NULL;
    void *hsdb = NULL, *hscratch = NULL;
    if (verify_obj != Py_None) {
        if (needle_obj == Py_None) {
            PyErr_SetString(PyExc_ValueError, "verify needs a needle");
            return NULL;
        }
        if (!(hsdb = PyCapsule_GetPointer(verify_obj, HS_CAPSULE))) return NULL;
    }
    const char *needle = NULL;
    Py_ssize_t nlen = 0;
    if (needle_obj != Py_None) {
        if (PyBytes_AsStringAndSize(needle_obj, (char **)&needle, &nlen) < 0) return NULL;
        if (nlen == 0 || memchr(needle, '\n', (size_t)nlen)) {
            PyErr_SetString(PyExc_ValueError, "needle must be non-empty and hold no LF");
            return NULL;
        }
    }
    if (!zstd_load()) {
        PyErr_SetString(PyExc_RuntimeError, "libzstd not found");
        return NULL;
    }
    size_t nf;
    int64_t maxraw;
    region r;
    if (get_region(obj, 0, -1, &r) < 0) return NULL;
    int64_t *fr = zframes_read(&r, frames_b, frames_len, &nf, &maxraw);
    if (!fr) {
        PyBuffer_Release(&r.view);
        return NULL;
    }
    size_t *used = PyMem_Calloc(nf ? nf : 1, sizeof(size_t));
    unsigned char *bad = PyMem_Calloc(nf ? nf : 1, 1);
    PyObject **outs = PyMem_Calloc(nf ? nf : 1, sizeof(PyObject *));
    char *data = NULL, *scratch = NULL;
    size_t data_cap = 0, total = 0;
    int direct = needle == NULL;
    zdctx dctx = {NULL, NULL};
    PyObject *result = NULL;
    if (!fr || !used || !bad || !outs) {
        PyErr_NoMemory();
        goto done;
    }
    for (size_t i = 0; i < nf; i++) {
        int64_t raw = fr[4 * i + 2];
        total += (size_t)raw;
        if (direct && !(outs[i] = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(raw ? raw : 1)))) goto done;
    }
    data = zbuf_take((size_t)maxraw + 1 + (direct ? 0 : total + 1), &data_cap);
    if (!data || !zdctx_open(&dctx, fr, nf) || (hsdb && hs_.alloc_scratch(hsdb, &hscratch) != 0)) {
        PyErr_NoMemory();
        goto done;
    }
    scratch = data + maxraw + 1;
    const char *src = r.view.buf;
    finder f;
    if (needle) finder_init(&f, needle, (size_t)nlen);
    Py_ssize_t nbad = 0, nout = 0;
    int hs_failed = 0;
    Py_BEGIN_ALLOW_THREADS
    size_t pos0 = 0; /* where the next frame's output goes in scratch */
    for (size_t i = 0; i < nf; i++) {
        size_t raw = (size_t)fr[4 * i + 2];
        char *w0 = direct ? PyBytes_AS_STRING(outs[i]) : scratch + pos0, *w = w0;
        if (!zframe(&dctx, data, src, fr + 4 * i)) {
            bad[i] = 1;
            nbad++;
            continue;
        }
        size_t lo, hi;
        if (raw == 0) continue;
        zcut(data, raw, klo, (size_t)klo_len, khi, (size_t)khi_len, &lo, &hi);
        if (!needle) {
            if (mode == MODE_RAW) {
                memcpy(w, data + lo, hi - lo);
                w += hi - lo;
            } else {
                size_t pos = lo;
                while (pos < hi) {
                    const char *e = memchr(data + pos, '\n', hi - pos);
                    size_t re = e ? (size_t)(e - data) + 1 : hi;
                    w = emit(w, data, pos, line_start(data, pos, re), re, mode);
                    pos = re;
                }
            }
        } else {
            size_t pos = lo;
            while (pos < hi) {
                const char *p = find(&f, data + pos, hi - pos);
                if (!p) break;
                size_t hp = (size_t)(p - data);
                const char *nl = hp > lo ? memrchr(data + lo, '\n', hp - lo) : NULL;
                size_t rs = nl ? (size_t)(nl - data) + 1 : lo;
                const char *e = memchr(p, '\n', hi - hp);
                size_t re = e ? (size_t)(e - data) + 1 : hi;
                size_t ls = line_start(data, rs, re);
                if (hp >= ls && hp + (size_t)nlen <= re) {
                    int keep = hsdb ? hs_line(hsdb, hscratch, data, ls, re - (data[re - 1] == '\n')) : 1;
                    if (keep < 0) hs_failed = 1;
                    if (keep > 0) w = emit(w, data, rs, ls, re, mode);
                    pos = re;
                } else {
                    pos = hp + 1; /* the hit starts in the ULID or topic; look further */
                }
            }
        }
        used[i] = (size_t)(w - w0);
        if (!direct) pos0 += used[i];
        if (used[i]) nout++;
    }
    Py_END_ALLOW_THREADS
    if (hs_failed) {
        PyErr_SetString(PyExc_RuntimeError, "hs_scan failed");
        goto done;
    }
    PyObject *pieces = PyList_New(nout), *badlist = PyList_New(nbad);
    if (!pieces || !badlist) {
        Py_XDECREF(pieces);
        Py_XDECREF(badlist);
        goto done;
    }
    for (size_t i = 0, k = 0, b = 0, at = 0; i < nf; i++) { /* at: frame i's output in scratch (packed) */
        if (bad[i]) PyList_SET_ITEM(badlist, (Py_ssize_t)b++, PyLong_FromSize_t(i));
        if (!used[i]) continue;
        if (!direct) {
            outs[i] = PyBytes_FromStringAndSize(scratch + at, (Py_ssize_t)used[i]);
            at += used[i];
        }
        if (!outs[i] || (direct && _PyBytes_Resize(&outs[i], (Py_ssize_t)used[i]) < 0)) { /* outs[i] is NULL now */
            Py_DECREF(pieces);
            Py_DECREF(badlist);
            goto done;
        }
        PyList_SET_ITEM(pieces, (Py_ssize_t)k++, outs[i]);
        outs[i] = NULL;
    }
    result = Py_BuildValue("(NN)", pieces, badlist);
done:
    if (hscratch) hs_.free_scratch(hscratch);
    zdctx_close(&dctx);
    zbuf_give(data, data_cap);
    if (outs)
        for (size_t i = 0; i < nf; i++) Py_XDECREF(outs[i]);
    PyMem_Free(outs);
    PyMem_Free(fr);
    PyMem_Free(used);
    PyMem_Free(bad);
    PyBuffer_Release(&r.view);
    return result;
}

/* zcount(buf, frames, terms, nots, icase, klo, khi, step_ms, origin_ms, counts)
 *   -> (matched, outside, [bad frame index])
 * count() over zstd frames (as zscan takes them) decompressed one at a time
 * into one reused buffer and cut to [klo, khi): nothing is copied out. A
 * frame that fails to decompress is skipped and its index listed. */
static PyObject *fast_zcount(PyObject *self, PyObject *args) {
    PyObject *obj, *terms_o, *nots_o, *counts_o, *result = NULL;
    const char *frames_b, *klo, *khi;
    Py_ssize_t frames_len, klo_len, khi_len;
    int icase;
    long long step_ms, origin_ms;
    if (!PyArg_ParseTuple(args, "Oy#OOpy#y#LLO", &obj, &frames_b, &frames_len, &terms_o, &nots_o, &icase, &klo,
                          &klo_len, &khi, &khi_len, &step_ms, &origin_ms, &counts_o))
        return NULL;
    count_args ca;
    region r;
    int have_region = 0;
    int64_t *fr = NULL, maxraw = 0;
    unsigned char *bad = NULL;
    char *data = NULL;
    size_t data_cap = 0;
    zdctx dctx = {NULL, NULL};
    size_t nf = 0;
    if (count_args_read(&ca, terms_o, nots_o, icase, step_ms, origin_ms, counts_o) < 0) goto done;
    if (!zstd_load()) {
        PyErr_SetString(PyExc_RuntimeError, "libzstd not found");
        goto done;
    }
    if (get_region(obj, 0, -1, &r) < 0) goto done;
    have_region = 1;
    if (!(fr = zframes_read(&r, frames_b, frames_len, &nf, &maxraw))) goto done;
    bad = PyMem_Calloc(nf ? nf : 1, 1);
    data = zbuf_take((size_t)maxraw + 1, &data_cap);
    if (!bad || !data || !zdctx_open(&dctx, fr, nf)) {
        PyErr_NoMemory();
        goto done;
    }
    const char *src = r.view.buf;
    unsigned long long matched = 0, outside = 0;
    Py_ssize_t nbad = 0;
    Py_BEGIN_ALLOW_THREADS
    for (size_t i = 0; i < nf; i++) {
        size_t raw = (size_t)fr[4 * i + 2], lo, hi;
        if (!zframe(&dctx, data, src, fr + 4 * i)) {
            bad[i] = 1;
            nbad++;
            continue;
        }
        zcut(data, raw, klo, (size_t)klo_len, khi, (size_t)khi_len, &lo, &hi);
        count_range(&ca.spec, data, lo, hi, &matched, &outside);
    }
    Py_END_ALLOW_THREADS
    PyObject *badlist = PyList_New(nbad);
    if (!badlist) goto done;
    for (size_t i = 0, b = 0; i < nf; i++)
        if (bad[i]) PyList_SET_ITEM(badlist, (Py_ssize_t)b++, PyLong_FromSize_t(i));
    result = Py_BuildValue("(KKN)", matched, outside, badlist);
done:
    zdctx_close(&dctx);
    zbuf_give(data, data_cap);
    PyMem_Free(bad);
    PyMem_Free(fr);
    if (have_region) PyBuffer_Release(&r.view);
    count_args_free(&ca);
    return result;
}

/* syslog_times(msgs): each syslog message's TIMESTAMP, read where it starts
 * (after <PRI>). An RFC 5424 one ("1 " optional, as rsyslog reads it: RFC 3339
 * with at most 9 fraction digits and Z or +hh:mm, then SP or the end) gives
 * its ns since the epoch; an RFC 3164 "Mmm dd hh:mm:ss" (then SP, ':' or the
 * end) gives those bytes, which the caller reads in local time; anything
 * else, a date no calendar has, or a time beyond int64 ns gives None. */

static int sl_digits(const unsigned char *p, int n) {
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return -1;
        v = v * 10 + (p[i] - '0');
    }
    return v;
}

static int sl_days_in_month(int y, int m) {
    static const int dim[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0)) return 29;
    return dim[m - 1];
}

static int64_t sl_days_from_civil(int64_t y, int m, int d) { /* H. Hinnant's algorithm */
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int sl_is_alpha(unsigned char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); }

/* 1 and *out set for a valid RFC 3339 time at p (n bytes left) followed by SP
 * or the end; 0 otherwise. */
static int sl_rfc3339(const unsigned char *p, Py_ssize_t n, int64_t *out) {
    if (n < 20) return 0;
    int y = sl_digits(p, 4), mo = sl_digits(p + 5, 2), d = sl_digits(p + 8, 2);
    int h = sl_digits(p + 11, 2), mi = sl_digits(p + 14, 2), s = sl_digits(p + 17, 2);
    if (p[4] != '-' || p[7] != '-' || (p[10] != 'T' && p[10] != 't') || p[13] != ':' || p[16] != ':') return 0;
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || h < 0 || h > 23 || mi < 0 || mi > 59 || s < 0 || s > 59) return 0;
    if (d > sl_days_in_month(y, mo)) return 0;
    Py_ssize_t i = 19;
    int64_t frac = 0;
    if (p[i] == '.') {
        Py_ssize_t j = ++i;
        while (i < n && p[i] >= '0' && p[i] <= '9' && i - j < 10) frac = frac * 10 + (p[i++] - '0');
        if (i == j || i - j > 9) return 0;
        for (Py_ssize_t k = i - j; k < 9; k++) frac *= 10;
    }
    int64_t off = 0;
    if (i < n && (p[i] == 'Z' || p[i] == 'z')) {
        i++;
    } else if (i + 6 <= n && (p[i] == '+' || p[i] == '-') && p[i + 3] == ':') {
        int oh = sl_digits(p + i + 1, 2), om = sl_digits(p + i + 4, 2);
        if (oh < 0 || oh > 23 || om < 0 || om > 59) return 0;
        off = (int64_t)(oh * 3600 + om * 60) * (p[i] == '-' ? -1 : 1);
        i += 6;
    } else {
        return 0;
    }
    if (i < n && p[i] != ' ' && p[i] != '\n') return 0;
    int64_t secs = sl_days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s - off;
    if (secs <= INT64_MIN / 1000000000 || secs >= INT64_MAX / 1000000000) return 0;
    *out = secs * 1000000000 + frac;
    return 1;
}

/* The length of an RFC 3164 TIMESTAMP at p followed by SP, ':' or the end; 0 if none. */
static Py_ssize_t sl_rfc3164(const unsigned char *p, Py_ssize_t n) {
    if (n < 14 || !sl_is_alpha(p[0]) || !sl_is_alpha(p[1]) || !sl_is_alpha(p[2]) || p[3] != ' ') return 0;
    Py_ssize_t i = 4;
    if (p[i] == ' ') i++;
    Py_ssize_t ds = i;
    while (i < n && i - ds < 3 && p[i] >= '0' && p[i] <= '9') i++;
    if (i == ds || i - ds > 2 || i + 9 > n || p[i] != ' ') return 0;
    const unsigned char *t = p + i + 1;
    if (sl_digits(t, 2) < 0 || t[2] != ':' || sl_digits(t + 3, 2) < 0 || t[5] != ':' || sl_digits(t + 6, 2) < 0) return 0;
    i += 9;
    if (i < n && p[i] != ' ' && p[i] != ':' && p[i] != '\n') return 0;
    return i;
}

static PyObject *fast_syslog_times(PyObject *self, PyObject *args) {
    PyObject *msgs;
    if (!PyArg_ParseTuple(args, "O!", &PyList_Type, &msgs)) return NULL;
    Py_ssize_t count = PyList_GET_SIZE(msgs);
    PyObject *out = PyList_New(count);
    if (out == NULL) return NULL;
    for (Py_ssize_t k = 0; k < count; k++) {
        PyObject *m = PyList_GET_ITEM(msgs, k), *v = NULL;
        if (PyBytes_Check(m)) {
            const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(m);
            Py_ssize_t n = PyBytes_GET_SIZE(m), i = 1;
            if (n > 0 && p[0] == '<') {
                while (i < n && i < 4 && p[i] >= '0' && p[i] <= '9') i++;
                if (i > 1 && i < n && p[i] == '>') {
                    i++;
                    int64_t ns;
                    Py_ssize_t at = (i + 1 < n && p[i] == '1' && p[i + 1] == ' ') ? i + 2 : i;
                    Py_ssize_t len;
                    if (sl_rfc3339(p + at, n - at, &ns))
                        v = PyLong_FromLongLong(ns);
                    else if ((len = sl_rfc3164(p + i, n - i)) > 0)
                        v = PyBytes_FromStringAndSize((const char *)p + i, len);
                    if (v == NULL && PyErr_Occurred()) {
                        Py_DECREF(out);
                        return NULL;
                    }
                }
            }
        }
        if (v == NULL) v = Py_NewRef(Py_None);
        PyList_SET_ITEM(out, k, v);
    }
    return out;
}

static PyMethodDef methods[] = {
    {"grep", fast_grep, METH_VARARGS,
     "grep(buf, start, end, needle, mode, icase=False) -> bytes: records in buf[start:end] whose line holds needle"},
    {"format", fast_format, METH_VARARGS,
     "format(buf, start, end, mode) -> bytes: every record of buf[start:end] (modes 0-2, 4 time, 5 ulid+time, 6 json)"},
    {"pick", fast_pick, METH_VARARGS,
     "pick(buf, candidates, keep, mode) -> bytes: the candidate records whose keep byte is set"},
    {"merge", fast_merge, METH_VARARGS,
     "merge(bufs, mode) -> bytes: sorted record buffers merged by ULID, copies dropped, in mode 0-2"},
    {"split_topics", fast_split_topics, METH_VARARGS,
     "split_topics(buf, max_topics) -> None (one topic) | [] (too many) | [(topic, bytes)]: the records of each topic"},
    {"trigram_bloom", fast_trigram_bloom, METH_VARARGS,
     "trigram_bloom(buf, start, end, bits_per) -> bloom: a one-hash bloom filter of the trigrams of the lines"},
    {"count", fast_count, METH_VARARGS,
     "count(buf, start, end, terms, nots, icase, step_ms, origin_ms, counts) -> (matched, outside): matching records counted, bucketed by time into counts"},
    {"logfmt_eq", fast_logfmt_eq, METH_VARARGS,
     "logfmt_eq(buf, start, end, key, value, kind=2) -> (candidates, verdicts): records holding key, each 1 (KEY=VALUE holds), 2 (undecided)"},
    {"bloom_may_contain", fast_bloom_may_contain, METH_VARARGS,
     "bloom_may_contain(bloom, literal) -> bool: False if some trigram of literal is surely absent"},
    {"gram_bloom", fast_gram_bloom, METH_VARARGS,
     "gram_bloom(buf, start, end, bits_per) -> bloom: a one-hash bloom filter of the trigrams and 5-grams of the lines"},
    {"gram_bloom_may_contain", fast_gram_bloom_may_contain, METH_VARARGS,
     "gram_bloom_may_contain(bloom, literal) -> bool: False if some trigram or 5-gram of literal is surely absent"},
    {"zscan", fast_zscan, METH_VARARGS,
     "zscan(buf, frames, needle, mode, klo, khi, verify=None) -> (bytes, bad): zstd frames decompressed, cut to [klo, khi), grepped (needle None: all; verify: hs_compile's, kept lines hold a hit), in mode 0-2"},
    {"zcount", fast_zcount, METH_VARARGS,
     "zcount(buf, frames, terms, nots, icase, klo, khi, step_ms, origin_ms, counts) -> (matched, outside, bad): count() over zstd frames cut to [klo, khi)"},
    {"hs_compile", fast_hs_compile, METH_VARARGS,
     "hs_compile(pattern, flags) -> capsule or None: a regex for zscan's verify (None: no libhs.so.5, or rejected)"},
    {"zscan_available", fast_zscan_available, METH_NOARGS, "zscan_available() -> bool: libzstd was found"},
    {"syslog_times", fast_syslog_times, METH_VARARGS,
     "syslog_times(msgs) -> [ns | bytes | None]: each syslog message's RFC 5424 time, RFC 3164 timestamp or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "oklog._fast", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__fast(void) {
    init_rank();
    init_ulid_value();
    init_json();
    init_fold();
#ifdef OKLOG_X86
    __builtin_cpu_init();
    have_avx2 = __builtin_cpu_supports("avx2");
#endif
    return PyModule_Create(&module);
}
