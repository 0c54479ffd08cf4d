/* The validation's per-file kernel, native: reading small files into rows, then each patch's pixel hash and
   exact channel sums.

   read_rows(paths, rows, sizes, mtimes)
       paths    a list of str: local paths
       rows     a writable buffer of len(paths) rows of equal length (batch_read's rows)
       sizes    writable int64 per path: the file's size when it was read whole into its row, else -1
       mtimes   writable int64 per path: its modification time in ns (as os.stat's st_mtime_ns), where read
     Each path costs open, fstat, one read of its size plus one byte, and close, with the GIL released: what
     patches.read_file does for such a file (which stats before it opens), without a Python object per call. Anything else (a remote path,
     not a regular file, a file as large as a row, one that changed size, any error) is -1, and
     patches.read_file then reads it, or raises what it raises, as for every file before.

   scan_patches(buffer, offsets, prefix, hexes, sums)
       buffer   any readable buffer of bytes (the rows)
       offsets  int64 per patch: where its 27,648 pixel bytes start in buffer; a negative one is skipped
       prefix   bytes hashed before each patch's pixels (patches.pixel_hash hashes the shape first)
       hexes    writable, 32 bytes per patch: its pixel hash, XXH3-128 as 32 lowercase hex digits
       sums     writable int64, 6 per patch: the sums of r, g, b, then of r*r, g*g, b*b; or None
     The hash is the vendored xxHash's (third_party/xxhash, the version python-xxhash bundles); the sums are
     exact integers, as numpy's float32 products in moments.py give them, with AVX2 where the CPU has it.

   Optional: setup.py builds it on POSIX systems where a C compiler is found; without it batch_read and
   moments.py do the same in Python and numpy, with the same results (tests/test_batch_read.py runs both). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define HAVE_AVX2_PATH 1 /* the sums and the hash have AVX2 versions too, chosen at import where the CPU has it */
#define XXH_DISPATCH_AVX2 1
#define XXH_TARGET_AVX2 __attribute__((__target__("avx2")))
#endif
#define XXH_INLINE_ALL /* the vendored xxHash (third_party/xxhash, BSD-2-Clause), compiled into this module */
#include "xxhash.h"

#ifndef O_CLOEXEC
#define O_CLOEXEC 0
#endif
#ifdef __APPLE__
#define MTIME_NS(st) ((int64_t)(st).st_mtimespec.tv_sec * 1000000000LL + (st).st_mtimespec.tv_nsec)
#else
#define MTIME_NS(st) ((int64_t)(st).st_mtim.tv_sec * 1000000000LL + (st).st_mtim.tv_nsec)
#endif

#define PATCH_BYTES (96 * 96 * 3)
#define BLOCK 48

static int64_t read_row(const char *path, char *row, Py_ssize_t row_len, int64_t *mtime) {
    struct stat st;
    if (strstr(path, "://") != NULL) return -1; /* remote: patches.read_file goes through Beam's FileSystems */
    /* Opened before its stat (fstat), which saves looking the path up twice: non-blocking, so that a FIFO put
       where a patch should be cannot block, and closed unread unless it is a regular file. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) return -1;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size + 1 > row_len) {
        close(fd);
        return -1;
    }
    ssize_t got;
    do {
        got = read(fd, row, (size_t)st.st_size + 1);
    } while (got < 0 && errno == EINTR);
    close(fd);
    if (got != st.st_size) return -1;
    *mtime = MTIME_NS(st);
    return got;
}

static PyObject *read_rows(PyObject *self, PyObject *args) {
    PyObject *paths;
    Py_buffer rows, sizes, mtimes;
    if (!PyArg_ParseTuple(args, "O!w*w*w*", &PyList_Type, &paths, &rows, &sizes, &mtimes)) return NULL;
    PyObject *result = NULL, **encoded = NULL;
    Py_ssize_t n = PyList_GET_SIZE(paths), got = 0;
    if (n == 0) {
        result = Py_None;
        Py_INCREF(result);
        goto done;
    }
    if (rows.len % n || sizes.len < n * 8 || mtimes.len < n * 8) {
        PyErr_SetString(PyExc_ValueError, "read_rows: one row and one int64 size and mtime per path");
        goto done;
    }
    encoded = PyMem_Calloc(n, sizeof(PyObject *));
    if (encoded == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (got = 0; got < n; got++) {
        if (!PyUnicode_FSConverter(PyList_GET_ITEM(paths, got), &encoded[got])) goto done;
    }
    Py_ssize_t row_len = rows.len / n;
    int64_t *size = (int64_t *)sizes.buf, *mtime = (int64_t *)mtimes.buf;
    char *base = (char *)rows.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t j = 0; j < n; j++) {
        size[j] = read_row(PyBytes_AS_STRING(encoded[j]), base + j * row_len, row_len, &mtime[j]);
    }
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    for (Py_ssize_t j = 0; encoded != NULL && j < got; j++) Py_XDECREF(encoded[j]);
    PyMem_Free(encoded);
    PyBuffer_Release(&rows);
    PyBuffer_Release(&sizes);
    PyBuffer_Release(&mtimes);
    return result;
}

/* The scalar sums: blocks of 48 bytes (16 pixels), lane i holding channel i % 3 (576 values below 2**16 per
   lane, so 32 bits never overflow). */
static void sum_patch(const uint8_t *p, int64_t *out) {
    uint32_t s[BLOCK] = {0}, q[BLOCK] = {0};
    for (Py_ssize_t b = 0; b < PATCH_BYTES; b += BLOCK) {
        for (int i = 0; i < BLOCK; i++) {
            uint32_t x = p[b + i];
            s[i] += x;
            q[i] += x * x;
        }
    }
    for (int c = 0; c < 6; c++) out[c] = 0;
    for (int i = 0; i < BLOCK; i++) {
        out[i % 3] += s[i];
        out[3 + i % 3] += q[i];
    }
}

#ifdef HAVE_AVX2_PATH
/* The same sums with AVX2, about 3x faster. A period of 96 bytes is read as 3 pairs of 16-byte loads 48 bytes apart
   (loads k and k + 3, k = 0-2), widened to 16-bit lanes: lane i of either load of pair k holds byte 16k + i (+ 48)
   of the period, channel (16k + i) % 3. x is summed in 16-bit lanes, two values per lane and period, for 72 periods
   (36,720 at most) before they are added into 32-bit lanes. For x*x the pair's lanes are interleaved, so that each
   multiply-add (vpmaddwd) adds the squares of two bytes of one channel into a 32-bit lane: 288 periods of
   2 * 65,025 at most, below 2**31. */
__attribute__((target("avx2"))) static void sum_patch_avx2(const uint8_t *p, int64_t *out) {
    __m256i s32[3][2], q32[3][2]; /* [pair][low/high 8 lanes of x; unpacklo/unpackhi of x*x] */
    for (int k = 0; k < 3; k++) s32[k][0] = s32[k][1] = q32[k][0] = q32[k][1] = _mm256_setzero_si256();
    for (int quarter = 0; quarter < 4; quarter++) {
        __m256i s16[3];
        for (int k = 0; k < 3; k++) s16[k] = _mm256_setzero_si256();
        const uint8_t *end = p + (quarter + 1) * (PATCH_BYTES / 4);
        for (const uint8_t *b = p + quarter * (PATCH_BYTES / 4); b < end; b += 96) {
            for (int k = 0; k < 3; k++) {
                __m256i x = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(b + 16 * k)));
                __m256i y = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(b + 16 * k + 48)));
                s16[k] = _mm256_add_epi16(s16[k], _mm256_add_epi16(x, y));
                __m256i lo = _mm256_unpacklo_epi16(x, y), hi = _mm256_unpackhi_epi16(x, y);
                q32[k][0] = _mm256_add_epi32(q32[k][0], _mm256_madd_epi16(lo, lo));
                q32[k][1] = _mm256_add_epi32(q32[k][1], _mm256_madd_epi16(hi, hi));
            }
        }
        for (int k = 0; k < 3; k++) {
            s32[k][0] = _mm256_add_epi32(s32[k][0], _mm256_cvtepu16_epi32(_mm256_castsi256_si128(s16[k])));
            s32[k][1] = _mm256_add_epi32(s32[k][1], _mm256_cvtepu16_epi32(_mm256_extracti128_si256(s16[k], 1)));
        }
    }
    for (int c = 0; c < 6; c++) out[c] = 0;
    uint32_t lanes[8];
    for (int k = 0; k < 3; k++) {
        for (int h = 0; h < 2; h++) {
            _mm256_storeu_si256((__m256i *)lanes, s32[k][h]); /* lane m: byte 16k + 8h + m */
            for (int m = 0; m < 8; m++) out[(16 * k + 8 * h + m) % 3] += lanes[m];
            /* unpacklo (h = 0) holds bytes 16k + m (m < 4) and 16k + 4 + m (m >= 4: the upper 128 bits start at 8);
               unpackhi (h = 1) the same 4 bytes later */
            _mm256_storeu_si256((__m256i *)lanes, q32[k][h]);
            for (int m = 0; m < 8; m++) out[3 + (16 * k + 4 * h + m + (m >= 4 ? 4 : 0)) % 3] += lanes[m];
        }
    }
}
#endif

/* XXH3-128 of the pixels after the state SEEDED (what xxhash.xxh3_128(prefix); .update(pixels) gives), with the
   accumulation of this build's default vector code (SSE2 on x86-64). */
static XXH128_hash_t hash_patch(const XXH3_state_t *seeded, const uint8_t *p) {
    XXH3_state_t state;
    XXH3_copyState(&state, seeded);
    XXH3_128bits_update(&state, p, PATCH_BYTES);
    return XXH3_128bits_digest(&state);
}

#ifdef HAVE_AVX2_PATH
/* The same with xxHash's AVX2 accumulation, about 2x faster: the same digest (tests/test_batch_read.py). */
__attribute__((target("avx2"))) static XXH128_hash_t hash_patch_avx2(const XXH3_state_t *seeded, const uint8_t *p) {
    XXH3_state_t state;
    XXH3_copyState(&state, seeded);
    XXH3_update(&state, p, PATCH_BYTES, XXH3_accumulate_avx2, XXH3_scrambleAcc_avx2);
    return XXH3_128bits_digest(&state);
}
#endif

static void (*sum_patch_best)(const uint8_t *, int64_t *) = sum_patch;
static XXH128_hash_t (*hash_patch_best)(const XXH3_state_t *, const uint8_t *) = hash_patch;

/* Whether the AVX2 versions run: ON and the CPU has AVX2. */
static void choose_simd(int on) {
    sum_patch_best = sum_patch;
    hash_patch_best = hash_patch;
#ifdef HAVE_AVX2_PATH
    __builtin_cpu_init();
    if (on && __builtin_cpu_supports("avx2")) {
        sum_patch_best = sum_patch_avx2;
        hash_patch_best = hash_patch_avx2;
    }
#endif
}

/* A hash as 32 lowercase hex digits (xxhash's hexdigest: the canonical, big-endian bytes). */
static void hex_digest(XXH128_hash_t h, char *hex) {
    static const char digits[] = "0123456789abcdef";
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, h);
    for (int i = 0; i < 16; i++) {
        hex[2 * i] = digits[c.digest[i] >> 4];
        hex[2 * i + 1] = digits[c.digest[i] & 15];
    }
}

static PyObject *scan_patches(PyObject *self, PyObject *args) {
    Py_buffer buf, offsets, prefix, hexes, sums = {0};
    PyObject *sums_obj;
    if (!PyArg_ParseTuple(args, "y*y*y*w*O", &buf, &offsets, &prefix, &hexes, &sums_obj)) return NULL;
    PyObject *result = NULL;
    int with_sums = sums_obj != Py_None;
    if (with_sums && PyObject_GetBuffer(sums_obj, &sums, PyBUF_WRITABLE) != 0) goto release;
    Py_ssize_t n = offsets.len / (Py_ssize_t)sizeof(int64_t);
    if (offsets.len % (Py_ssize_t)sizeof(int64_t) || hexes.len < n * 32 ||
        (with_sums && sums.len < n * 6 * (Py_ssize_t)sizeof(int64_t))) {
        PyErr_SetString(PyExc_ValueError,
                        "scan_patches: offsets must be int64, hexes must hold 32 bytes and sums 6 int64 per offset");
        goto done;
    }
    const int64_t *at = (const int64_t *)offsets.buf;
    for (Py_ssize_t j = 0; j < n; j++) {
        if (at[j] >= 0 && at[j] + PATCH_BYTES > buf.len) {
            PyErr_Format(PyExc_ValueError, "scan_patches: patch %zd at byte %lld runs past the %zd-byte buffer", j,
                         (long long)at[j], buf.len);
            goto done;
        }
    }
    XXH3_state_t *seeded = XXH3_createState();
    if (seeded == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    XXH3_128bits_reset(seeded);
    XXH3_128bits_update(seeded, prefix.buf, (size_t)prefix.len);
    const uint8_t *base = (const uint8_t *)buf.buf;
    char *hex = (char *)hexes.buf;
    int64_t *out = with_sums ? (int64_t *)sums.buf : NULL;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t j = 0; j < n; j++) {
        if (at[j] < 0) continue;
        hex_digest(hash_patch_best(seeded, base + at[j]), hex + 32 * j); /* first: it brings the patch into the cache */
        if (with_sums) sum_patch_best(base + at[j], out + 6 * j);
    }
    Py_END_ALLOW_THREADS
    XXH3_freeState(seeded);
    result = Py_None;
    Py_INCREF(result);
done:
    if (with_sums) PyBuffer_Release(&sums);
release:
    PyBuffer_Release(&buf);
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&prefix);
    PyBuffer_Release(&hexes);
    return result;
}

/* simd(on): whether the sums and hashes may use AVX2 (where the CPU has it; the default); returns whether they did. For tests. */
static PyObject *simd(PyObject *self, PyObject *args) {
    int on;
    if (!PyArg_ParseTuple(args, "p", &on)) return NULL;
    int was = sum_patch_best != sum_patch;
    choose_simd(on);
    return PyBool_FromLong(was);
}

static PyMethodDef methods[] = {
    {"simd", simd, METH_VARARGS, "simd(on): whether the sums and hashes may use AVX2; returns whether they did."},
    {"read_rows", read_rows, METH_VARARGS,
     "read_rows(paths, rows, sizes, mtimes): each small local regular file read whole into its row."},
    {"scan_patches", scan_patches, METH_VARARGS,
     "scan_patches(buffer, offsets, prefix, hexes, sums): each 96x96x3 patch's pixel hash and channel sums."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernel", NULL, -1, methods};

PyMODINIT_FUNC PyInit__kernel(void) {
    choose_simd(1);
    return PyModule_Create(&module);
}
