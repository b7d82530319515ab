/* videolang.losses._sinkhorn_kernel: kernel-route Sinkhorn iterations for batches of small problems on CPU,
 * in one call (see fused_sinkhorn.py for why and when it is used).
 *
 * The solver is written once (_sinkhorn_iterate.h) over GCC/Clang vector types and compiled here for
 * several instruction sets; the widest one the running CPU supports is picked at run time, so one build
 * runs on any x86-64 CPU. Needs GCC or Clang; where the build fails, setup.py leaves the module out and
 * the torch loop runs instead. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Run-time dispatch needs __builtin_cpu_supports, which Apple's toolchain does not back: macOS on Intel
 * gets the portable variant only. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__APPLE__)
#define SK_X86 1
#else
#define SK_X86 0
#endif

typedef int (*solver_f64)(double *, const double *, const double *, int64_t, int64_t, int64_t, int64_t, double, int64_t);
typedef int (*solver_f32)(float *, const float *, const float *, int64_t, int64_t, int64_t, int64_t, double, int64_t);

/* 16-byte vectors: SSE2 on any x86-64, NEON on arm64. */
#define SK_VBYTES 16
#define SK_T double
#define SK_NAME solve_f64_base
#include "_sinkhorn_iterate.h"
#undef SK_T
#undef SK_NAME
#define SK_T float
#define SK_NAME solve_f32_base
#include "_sinkhorn_iterate.h"
#undef SK_T
#undef SK_NAME
#undef SK_VBYTES

#if SK_X86
/* AVX2 + FMA (x86-64-v3): 32-byte vectors. */
#define SK_VBYTES 32
#define SK_TARGET "avx2,fma"
#define SK_T double
#define SK_NAME solve_f64_avx2
#include "_sinkhorn_iterate.h"
#undef SK_T
#undef SK_NAME
#define SK_T float
#define SK_NAME solve_f32_avx2
#include "_sinkhorn_iterate.h"
#undef SK_T
#undef SK_NAME
#undef SK_TARGET
#undef SK_VBYTES

/* AVX-512 (x86-64-v4): 64-byte vectors, one register per 8 doubles or 16 floats. */
#define SK_VBYTES 64
#define SK_TARGET "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma"
#define SK_T double
#define SK_NAME solve_f64_avx512
#include "_sinkhorn_iterate.h"
#undef SK_T
#undef SK_NAME
#define SK_T float
#define SK_NAME solve_f32_avx512
#include "_sinkhorn_iterate.h"
#undef SK_T
#undef SK_NAME
#undef SK_TARGET
#undef SK_VBYTES
#endif

typedef struct {
    const char *name;
    int vector_bytes; /* problems per block: vector_bytes / itemsize */
    solver_f64 f64;
    solver_f32 f32;
    int (*supported)(void);
} variant_t;

static int always(void) { return 1; }
#if SK_X86
static int has_avx2(void) { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
static int has_avx512(void) {
    return has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw");
}
#endif

/* Widest first: the default is the first one the CPU supports. */
static const variant_t VARIANTS[] = {
#if SK_X86
    {"avx512", 64, solve_f64_avx512, solve_f32_avx512, has_avx512},
    {"avx2", 32, solve_f64_avx2, solve_f32_avx2, has_avx2},
#endif
    {"base", 16, solve_f64_base, solve_f32_base, always},
};
#define N_VARIANTS ((int)(sizeof VARIANTS / sizeof VARIANTS[0]))

/* The named variant (NULL: the widest this CPU runs), or NULL with a ValueError set. */
static const variant_t *find_variant(const char *name) {
    if (name == NULL) { /* the last, portable variant is always supported */
        int i = 0;
        while (!VARIANTS[i].supported()) i++;
        return &VARIANTS[i];
    }
    for (int i = 0; i < N_VARIANTS; i++) {
        if (strcmp(name, VARIANTS[i].name) != 0) continue;
        if (VARIANTS[i].supported()) return &VARIANTS[i];
        PyErr_Format(PyExc_ValueError, "variant %s is not available on this CPU", name);
        return NULL;
    }
    PyErr_Format(PyExc_ValueError, "unknown variant %s", name);
    return NULL;
}

static int get_array(PyObject *obj, Py_buffer *view, int writable, int ndim, const char *what) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "%s must be a C-contiguous%s float32 or float64 array", what,
                     writable ? ", writable" : "");
        return -1;
    }
    const char *fmt = view->format;
    /* Native byte order only: '@' and '=' always, '<' or '>' where it is the host's. */
    if (fmt[0] == '=' || fmt[0] == '@' || fmt[0] == (PY_LITTLE_ENDIAN ? '<' : '>')) fmt++;
    if (view->ndim != ndim || (strcmp(fmt, "d") != 0 && strcmp(fmt, "f") != 0)) {
        PyErr_Format(PyExc_ValueError, "%s must be a %d-d float32 or float64 array (got %d-d, format '%s')", what, ndim,
                     view->ndim, view->format);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static int overlap(const Py_buffer *x, const Py_buffer *y) {
    const char *x0 = x->buf, *y0 = y->buf;
    return x0 < y0 + y->len && y0 < x0 + x->len;
}

PyDoc_STRVAR(solve_doc,
             "solve(k, a, b, n_iters, tol, check_every, variant=None)\n\n"
             "Sinkhorn plans in place: k [B, N, M] (C-contiguous float32 or float64) holds the kernels\n"
             "exp(-C / eps) on entry and the plans on exit; a [B, N] and b [B, M] are the marginals, of k's\n"
             "dtype. tol <= 0 runs all n_iters iterations. variant: a name from variants(), default the widest this CPU runs.");

static PyObject *py_solve(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"k", "a", "b", "n_iters", "tol", "check_every", "variant", NULL};
    PyObject *ko, *ao, *bo;
    Py_ssize_t n_iters, check_every;
    double tol;
    const char *name = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOndn|z", keywords, &ko, &ao, &bo, &n_iters, &tol, &check_every,
                                     &name))
        return NULL;
    if (n_iters < 1 || check_every < 1) {
        PyErr_SetString(PyExc_ValueError, "n_iters and check_every must be positive");
        return NULL;
    }
    const variant_t *variant = find_variant(name);
    if (variant == NULL) return NULL;
    Py_buffer k, a, b;
    if (get_array(ko, &k, 1, 3, "k") < 0) return NULL;
    if (get_array(ao, &a, 0, 2, "a") < 0) {
        PyBuffer_Release(&k);
        return NULL;
    }
    if (get_array(bo, &b, 0, 2, "b") < 0) {
        PyBuffer_Release(&k);
        PyBuffer_Release(&a);
        return NULL;
    }
    const Py_ssize_t batch = k.shape[0], n = k.shape[1], m = k.shape[2];
    int status = 0;
    if (k.itemsize != a.itemsize || k.itemsize != b.itemsize || a.shape[0] != batch || b.shape[0] != batch ||
        a.shape[1] != n || b.shape[1] != m) {
        PyErr_SetString(PyExc_ValueError, "a must be [B, N] and b [B, M] for k [B, N, M], all of one dtype");
        status = -2;
    } else if (overlap(&k, &a) || overlap(&k, &b)) {
        /* Plans are written block by block while later blocks' marginals are still to be read. */
        PyErr_SetString(PyExc_ValueError, "a and b must not share memory with k, which is overwritten");
        status = -2;
    } else if (batch > 0 && n > 0 && m > 0) {
        const int f64 = k.itemsize == 8;
        Py_BEGIN_ALLOW_THREADS;
        status = f64 ? variant->f64(k.buf, a.buf, b.buf, batch, n, m, n_iters, tol, check_every)
                     : variant->f32(k.buf, a.buf, b.buf, batch, n, m, n_iters, tol, check_every);
        Py_END_ALLOW_THREADS;
        if (status == -1)
            PyErr_Format(PyExc_MemoryError, "no memory for the %zd-problem workspace of %zd x %zd problems",
                         (Py_ssize_t)variant->vector_bytes / k.itemsize, n, m);
    }
    PyBuffer_Release(&k);
    PyBuffer_Release(&a);
    PyBuffer_Release(&b);
    if (status != 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *py_variants(PyObject *self, PyObject *unused) {
    PyObject *names = PyList_New(0);
    if (names == NULL) return NULL;
    for (int i = 0; i < N_VARIANTS; i++) {
        if (!VARIANTS[i].supported()) continue;
        PyObject *s = Py_BuildValue("(si)", VARIANTS[i].name, VARIANTS[i].vector_bytes);
        if (s == NULL || PyList_Append(names, s) < 0) {
            Py_XDECREF(s);
            Py_DECREF(names);
            return NULL;
        }
        Py_DECREF(s);
    }
    return names;
}

static PyMethodDef methods[] = {
    {"solve", (PyCFunction)(void (*)(void))py_solve, METH_VARARGS | METH_KEYWORDS, solve_doc},
    {"variants", py_variants, METH_NOARGS, "[(name, vector bytes)] of the variants this CPU runs, widest (the default) first."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_sinkhorn_kernel", NULL, -1, methods};

PyMODINIT_FUNC PyInit__sinkhorn_kernel(void) {
#if SK_X86
    __builtin_cpu_init();
#endif
    return PyModule_Create(&module);
}
