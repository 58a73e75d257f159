/* The uncontended acquire and release of a jpar.multiprocessing Lock / RLock slot, in C.
 *
 * Why C: the stdlib binds its Lock's methods to the C semaphore itself, so acquire + release cost
 * two C calls (~0.07 us here). jpar's lock also records its holder in the slot, which is what lets
 * the state server release the lock of a process that died; done in Python, that record costs a
 * Python frame per call (~0.2 us each). Here the record is written by the same C call that takes
 * the semaphore, so a jpar Lock costs what the stdlib's does.
 *
 * Only the fast path lives here. Anything else (the semaphore taken by someone else, a dead
 * previous holder to report) is handed to the Python callables given at construction, which are
 * fastsync.FastSem's full path: this module adds no behaviour of its own.
 *
 * The slot (fastsync.SLOT, 64 bytes, process-shared, in a memfd every process maps):
 *   bytes 0-31   a POSIX sem_t (sem_init(pshared=1) by the state server)
 *   word 4 (H)   holder's owner code (0: nobody recorded)
 *   word 5 (T)   holder's thread ident (threading.get_ident())
 *   word 6 (C)   recursion count
 *   word 7 (A)   owner code of a dead holder whose hold the server released, until the next taker
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pythread.h>
#include <errno.h>
#include <semaphore.h>
#include <stdint.h>

enum { H = 4, T = 5, C = 6, A = 7 };

typedef struct {
    PyObject_HEAD
    volatile int64_t *w;    /* the slot's words */
    sem_t *sem;
    int64_t code;           /* this process's owner code */
    int recursive;
    PyObject *anchor;       /* keeps the mapping alive */
    PyObject *slow;         /* slow(block, timeout) -> bool: the full acquire */
    PyObject *warn;         /* warn(dead_code) -> bool: report a dead previous holder */
} SlotLock;

static void
SlotLock_dealloc(SlotLock *self)
{
    PyObject_GC_UnTrack(self);
    Py_CLEAR(self->anchor);
    Py_CLEAR(self->slow);
    Py_CLEAR(self->warn);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
SlotLock_traverse(SlotLock *self, visitproc visit, void *arg)
{
    Py_VISIT(self->anchor);
    Py_VISIT(self->slow);
    Py_VISIT(self->warn);
    return 0;
}

static int
SlotLock_clear(SlotLock *self)
{
    Py_CLEAR(self->anchor);
    Py_CLEAR(self->slow);
    Py_CLEAR(self->warn);
    return 0;
}

static int
SlotLock_init(SlotLock *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"address", "code", "recursive", "anchor", "slow", "warn", NULL};
    unsigned long long address;
    long long code;
    int recursive;
    PyObject *anchor, *slow, *warn;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "KLpOOO", kwlist, &address, &code, &recursive,
                                     &anchor, &slow, &warn))
        return -1;
    if (address == 0 || address % 8 != 0) {
        PyErr_SetString(PyExc_ValueError, "a slot's address must be non-zero and 8-byte aligned");
        return -1;
    }
    if (!PyCallable_Check(slow) || !PyCallable_Check(warn)) {
        PyErr_SetString(PyExc_TypeError, "slow and warn must be callable");
        return -1;
    }
    self->sem = (sem_t *)(uintptr_t)address;
    self->w = (volatile int64_t *)(uintptr_t)address;
    self->code = code;
    self->recursive = recursive;
    Py_INCREF(anchor);
    Py_XSETREF(self->anchor, anchor);
    Py_INCREF(slow);
    Py_XSETREF(self->slow, slow);
    Py_INCREF(warn);
    Py_XSETREF(self->warn, warn);
    return 0;
}

/* acquire(block=True, timeout=None): True, or what the full path answers. */
static PyObject *
SlotLock_acquire(SlotLock *self, PyObject *const *args, Py_ssize_t nargsf, PyObject *kwnames)
{
    volatile int64_t *w = self->w;
    int64_t tid = (int64_t)PyThread_get_thread_ident();
    int64_t dead;

    if (self->slow == NULL) {
        PyErr_SetString(PyExc_ValueError, "SlotLock used before __init__");
        return NULL;
    }
    if (self->recursive && w[H] == self->code && w[T] == tid) {
        w[C] += 1;
        Py_RETURN_TRUE;
    }
    if (sem_trywait(self->sem) != 0)          /* taken (EAGAIN) or interrupted: the full path */
        return PyObject_Vectorcall(self->slow, args, nargsf, kwnames);
    w[H] = self->code;
    w[T] = tid;
    w[C] = 1;
    dead = w[A];
    if (dead == 0)
        Py_RETURN_TRUE;
    w[A] = 0;
    return PyObject_CallFunction(self->warn, "L", (long long)dead);
}

/* release(): as multiprocessing's Lock (any holder may release) or RLock (only its holder). */
static PyObject *
SlotLock_release(SlotLock *self, PyObject *Py_UNUSED(ignored))
{
    volatile int64_t *w = self->w;
    int64_t h, t, c;
    int value;

    if (self->slow == NULL) {
        PyErr_SetString(PyExc_ValueError, "SlotLock used before __init__");
        return NULL;
    }
    if (self->recursive) {
        int64_t tid = (int64_t)PyThread_get_thread_ident();
        if (w[H] != self->code || w[T] != tid) {
            PyErr_SetString(PyExc_AssertionError, "attempt to release recursive lock not owned by thread");
            return NULL;
        }
        if (w[C] > 1) {
            w[C] -= 1;
            Py_RETURN_NONE;
        }
    }
    h = w[H];
    t = w[T];
    c = w[C];
    w[H] = w[T] = w[C] = 0;
    if (sem_getvalue(self->sem, &value) != 0) {
        w[H] = h; w[T] = t; w[C] = c;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (value >= 1) {                          /* a lock's maximum: it was not held */
        w[H] = h; w[T] = t; w[C] = c;
        PyErr_SetString(PyExc_ValueError, "semaphore or lock released too many times");
        return NULL;
    }
    if (sem_post(self->sem) != 0) {
        w[H] = h; w[T] = t; w[C] = c;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

static PyMethodDef SlotLock_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))SlotLock_acquire, METH_FASTCALL | METH_KEYWORDS,
     "acquire(block=True, timeout=None): take the lock; the uncontended case without a Python frame."},
    {"release", (PyCFunction)SlotLock_release, METH_NOARGS,
     "release(): clear the holder's record and post the semaphore."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject SlotLockType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "jpar.multiprocessing._slotlock.SlotLock",
    .tp_basicsize = sizeof(SlotLock),
    .tp_dealloc = (destructor)SlotLock_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A Lock/RLock slot's fast path: acquire and release in C, the rest in Python.",
    .tp_traverse = (traverseproc)SlotLock_traverse,
    .tp_clear = (inquiry)SlotLock_clear,
    .tp_methods = SlotLock_methods,
    .tp_init = (initproc)SlotLock_init,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef slotlock_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "jpar.multiprocessing._slotlock",
    .m_doc = "The uncontended path of jpar.multiprocessing's Lock and RLock (see fastsync.py).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__slotlock(void)
{
    PyObject *m;

    if (PyType_Ready(&SlotLockType) < 0)
        return NULL;
    m = PyModule_Create(&slotlock_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&SlotLockType);
    if (PyModule_AddObject(m, "SlotLock", (PyObject *)&SlotLockType) < 0) {
        Py_DECREF(&SlotLockType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
