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
        while (m) {
            size_t k = (size_t)__builtin_ctz(m);
            if (memcmp(h + p + k, nd, n) == 0) return h + p + k;
            m &= m - 1;
        }
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
        while (m) {
            size_t k = (size_t)__builtin_ctz(m);
            if (memcmp(h + p + k, nd, n) == 0) return h + p + k;
            m &= m - 1;
        }
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

static int check_mode(int mode) {
    if (mode < 0 || mode > MODE_MAX) {
        PyErr_Format(PyExc_ValueError, "mode must be 0..%d", MODE_MAX);
        return -1;
    }
    return 0;
}

/* Output room for any mode: records are longer than 24 bytes (three int64),
 * and every other mode writes at most the input. */
static Py_ssize_t room(const region *r) {
    Py_ssize_t n = r->end - r->start;
    return n < 64 ? 64 : n;
}

/* grep(buf, start, end, needle, mode) -> bytes */
static PyObject *fast_grep(PyObject *self, PyObject *args) {
    PyObject *obj;
    Py_ssize_t start, end, nlen;
    const char *needle;
    int mode;
    region r;
    if (!PyArg_ParseTuple(args, "Onny#i", &obj, &start, &end, &needle, &nlen, &mode)) return NULL;
    if (check_mode(mode) < 0) return NULL;
    if (nlen == 0 || memchr(needle, '\n', (size_t)nlen)) {
        PyErr_SetString(PyExc_ValueError, "needle must be non-empty and hold no LF");
        return NULL;
    }
    if (get_region(obj, start, end, &r) < 0) return NULL;
    PyObject *out = PyBytes_FromStringAndSize(NULL, room(&r));
    if (!out) {
        PyBuffer_Release(&r.view);
        return NULL;
    }
    char *w0 = PyBytes_AS_STRING(out), *w = w0;
    const char *base = r.view.buf;
    finder f;
    finder_init(&f, needle, (size_t)nlen);
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
        if (hp >= ls && hp + (size_t)nlen <= re) {
            w = emit(w, base, rs, ls, re, mode);
            pos = re;
        } else {
            pos = hp + 1; /* the hit starts in the ULID or topic; look further */
        }
    }
    Py_END_ALLOW_THREADS
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
    if (check_mode(mode) < 0) return NULL;
    if (get_region(obj, start, end, &r) < 0) return NULL;
    PyObject *out = PyBytes_FromStringAndSize(NULL, room(&r));
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
        if (k[i]) total += (mode == MODE_CANDIDATES) ? 24 : (Py_ssize_t)(re - rs);
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

static PyMethodDef methods[] = {
    {"grep", fast_grep, METH_VARARGS,
     "grep(buf, start, end, needle, mode) -> bytes: records in buf[start:end] whose line holds needle"},
    {"format", fast_format, METH_VARARGS, "format(buf, start, end, mode) -> bytes: every record of buf[start:end]"},
    {"pick", fast_pick, METH_VARARGS,
     "pick(buf, candidates, keep, mode) -> bytes: the candidate records whose keep byte is set"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "oklog._fast", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__fast(void) {
    init_rank();
#ifdef OKLOG_X86
    __builtin_cpu_init();
    have_avx2 = __builtin_cpu_supports("avx2");
#endif
    return PyModule_Create(&module);
}
