/* The validation's per-file kernel, native: reading small files into rows, and the exact channel sums.

   read_rows(paths, rows, sizes, mtimes)
       paths    a list of str: local paths
       rows     a writable buffer of len(paths) rows of equal length (batch_read's rows)
       sizes    writable int64 per path: the file's size when it was read whole into its row, else -1
       mtimes   writable int64 per path: its modification time in ns (as os.stat's st_mtime_ns), where read
     Each path costs open, fstat, one read of its size plus one byte, and close, with the GIL released: what
     patches.read_file does for such a file (which stats before it opens), without a Python object per call. Anything else (a remote path,
     not a regular file, a file as large as a row, one that changed size, any error) is -1, and
     patches.read_file then reads it, or raises what it raises, as for every file before.

   patch_sums(buffer, offsets, out)
       buffer   any readable buffer of bytes (the rows)
       offsets  int64 per patch: where its 27,648 pixel bytes start in buffer; a negative one is skipped
       out      writable int64, 6 per patch: the sums of r, g, b, then of r*r, g*g, b*b
     Each patch is summed in blocks of 48 bytes (16 pixels): the inner loop over a block is contiguous and of
     fixed length, so the compiler vectorises it (widening multiply-adds into 32-bit lanes); lane i holds
     channel i % 3 and adds at most 576 values below 2**16, so 32 bits never overflow. Exact integers, as
     numpy's float32 products in moments.py give them.

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

static PyObject *patch_sums(PyObject *self, PyObject *args) {
    Py_buffer buf, offsets, out;
    if (!PyArg_ParseTuple(args, "y*y*w*", &buf, &offsets, &out)) return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = offsets.len / (Py_ssize_t)sizeof(int64_t);
    if (offsets.len % (Py_ssize_t)sizeof(int64_t) || out.len < n * 6 * (Py_ssize_t)sizeof(int64_t)) {
        PyErr_SetString(PyExc_ValueError, "patch_sums: offsets must be int64 and out must hold 6 int64 per offset");
        goto done;
    }
    const int64_t *at = (const int64_t *)offsets.buf;
    for (Py_ssize_t j = 0; j < n; j++) {
        if (at[j] >= 0 && at[j] + PATCH_BYTES > buf.len) {
            PyErr_Format(PyExc_ValueError, "patch_sums: patch %zd at byte %lld runs past the %zd-byte buffer", j,
                         (long long)at[j], buf.len);
            goto done;
        }
    }
    const uint8_t *base = (const uint8_t *)buf.buf;
    int64_t *sums = (int64_t *)out.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t j = 0; j < n; j++) {
        if (at[j] >= 0) sum_patch(base + at[j], sums + 6 * j);
    }
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&buf);
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"read_rows", read_rows, METH_VARARGS,
     "read_rows(paths, rows, sizes, mtimes): each small local regular file read whole into its row."},
    {"patch_sums", patch_sums, METH_VARARGS,
     "patch_sums(buffer, offsets, out): the exact sums of x and x*x per channel of each 96x96x3 patch."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernel", NULL, -1, methods};

PyMODINIT_FUNC PyInit__kernel(void) { return PyModule_Create(&module); }
