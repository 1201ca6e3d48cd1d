/* _engram.c — the CPython extension under the engram package: engram.h's handles and
 * calls as Python objects, with the GIL released around every call that may block. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engram.h"

#define MSG_MAX 512

static PyObject *error_base;   /* engram.Error, set by _register_errors() */
static PyObject *error_types;  /* dict: code -> subclass of engram.Error */
static unsigned long fork_gen; /* bumped in every child after fork() */

static void after_fork_child(void) { fork_gen++; }

/* Raises the engram.Error subclass registered for `code` with `msg` (or the code's
 * fixed text when msg is empty). Returns NULL for the caller to return. */
static PyObject *raise_code(int code, const char *msg) {
  if (!msg || !*msg) msg = engram_strerror(code);
  PyObject *cls = NULL;
  if (error_types) {
    PyObject *k = PyLong_FromLong(code);
    if (!k) return NULL;
    cls = PyDict_GetItemWithError(error_types, k);
    Py_DECREF(k);
    if (!cls && PyErr_Occurred()) return NULL;
  }
  if (!cls) cls = error_base;
  if (!cls) {
    PyErr_Format(PyExc_RuntimeError, "%s (%s)", msg, engram_errname(code));
    return NULL;
  }
  /* The library's messages are UTF-8; a byte that is not still gives the error, escaped. */
  PyObject *text = PyUnicode_DecodeUTF8(msg, (Py_ssize_t)strlen(msg), "backslashreplace");
  if (!text) return NULL;
  PyObject *exc = PyObject_CallFunction(cls, "Ni", text, code);
  if (!exc) return NULL;
  PyErr_SetObject(cls, exc);
  Py_DECREF(exc);
  return NULL;
}

/* Raises for an open or connect that failed: the library's message, which names what is
 * wrong and what to do, else `what target: <the code's text>`. */
static PyObject *raise_unopened(int code, const char *what, const char *target) {
  const char *m = engram_errmsg(NULL);
  if (*m) return raise_code(code, m);
  char msg[MSG_MAX];
  snprintf(msg, sizeof msg, "%s %s: %s", what, target, engram_strerror(code));
  return raise_code(code, msg);
}

/* ---------------------------------------------------------------------------------
 * Argument converters (for "O&"): they raise engram.InvalidArgument for values of the
 * right type that engram would refuse anyway, TypeError for the wrong type.
 * ------------------------------------------------------------------------------ */

/* str without NUL -> const char * (valid while the str lives). */
static int conv_str(PyObject *o, void *out) {
  if (!PyUnicode_Check(o)) {
    PyErr_Format(PyExc_TypeError, "expected str, got %.80s", Py_TYPE(o)->tp_name);
    return 0;
  }
  Py_ssize_t n;
  const char *s = PyUnicode_AsUTF8AndSize(o, &n);
  if (!s) return 0;
  if ((Py_ssize_t)strlen(s) != n) {
    raise_code(ENGRAM_EINVAL, "string contains a NUL character");
    return 0;
  }
  *(const char **)out = s;
  return 1;
}

/* str or None -> const char * or NULL. */
static int conv_str_opt(PyObject *o, void *out) {
  if (o == Py_None) {
    *(const char **)out = NULL;
    return 1;
  }
  return conv_str(o, out);
}

static int conv_u64(PyObject *o, void *out) {
  if (!PyLong_Check(o) || PyBool_Check(o)) {
    PyErr_Format(PyExc_TypeError, "expected int, got %.80s", Py_TYPE(o)->tp_name);
    return 0;
  }
  unsigned long long v = PyLong_AsUnsignedLongLong(o);
  if (v == (unsigned long long)-1 && PyErr_Occurred()) {
    PyErr_Clear();
    raise_code(ENGRAM_EINVAL, "integer out of range (must be 0 .. 2**64-1)");
    return 0;
  }
  *(uint64_t *)out = v;
  return 1;
}

static int conv_u32(PyObject *o, void *out) {
  uint64_t v;
  if (!conv_u64(o, &v)) return 0;
  if (v > UINT32_MAX) {
    raise_code(ENGRAM_EINVAL, "integer out of range (must be 0 .. 2**32-1)");
    return 0;
  }
  *(uint32_t *)out = (uint32_t)v;
  return 1;
}

static int conv_i64(PyObject *o, void *out) {
  if (!PyLong_Check(o) || PyBool_Check(o)) {
    PyErr_Format(PyExc_TypeError, "expected int, got %.80s", Py_TYPE(o)->tp_name);
    return 0;
  }
  long long v = PyLong_AsLongLong(o);
  if (v == -1 && PyErr_Occurred()) {
    PyErr_Clear();
    raise_code(ENGRAM_EINVAL, "integer out of range (must fit in 64 signed bits)");
    return 0;
  }
  *(int64_t *)out = v;
  return 1;
}

static int conv_size(PyObject *o, void *out) {
  uint64_t v;
  if (!conv_u64(o, &v)) return 0;
  *(size_t *)out = (size_t)v;
  return 1;
}

/* A sequence of ints -> malloc'd uint64_t array; None -> NULL, 0. */
struct u64s {
  uint64_t *v;
  size_t n;
};
static int conv_u64s(PyObject *o, void *out) {
  struct u64s *r = out;
  r->v = NULL;
  r->n = 0;
  if (o == Py_None) return 1;
  PyObject *seq = PySequence_Fast(o, "expected a sequence of ints or None");
  if (!seq) return 0;
  Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
  r->v = PyMem_Malloc(sizeof(uint64_t) * (n ? n : 1));
  if (!r->v) {
    Py_DECREF(seq);
    PyErr_NoMemory();
    return 0;
  }
  for (Py_ssize_t i = 0; i < n; i++) {
    if (!conv_u64(PySequence_Fast_GET_ITEM(seq, i), &r->v[i])) {
      PyMem_Free(r->v);
      r->v = NULL;
      Py_DECREF(seq);
      return 0;
    }
  }
  r->n = (size_t)n;
  Py_DECREF(seq);
  return 1;
}

/* ---------------------------------------------------------------------------------
 * The Log object: one engram handle. Calls run with the GIL released; `users` counts
 * them so close() can wait for them before freeing the handle.
 * ------------------------------------------------------------------------------ */
typedef struct {
  PyObject_HEAD engram *log;
  pthread_mutex_t mu;
  pthread_cond_t idle;
  int users;         /* calls running with the GIL released; under mu */
  int closed;        /* set under the GIL; no new call starts once set */
  int txns;          /* open transactions; close() refuses while > 0 */
  unsigned long gen; /* fork_gen at open: a forked child must not use the handle */
  PyObject *weakrefs;
  PyObject *progress; /* set_progress()'s callable, or NULL */
} LogObject;

static PyTypeObject LogType;

/* Admits a call; raises engram.Closed when the handle is closed or inherited. */
static int enter(LogObject *self) {
  if (!self->log || self->closed) {
    raise_code(ENGRAM_ECLOSED, "the log handle is closed");
    return -1;
  }
  if (self->gen != fork_gen) {
    raise_code(ENGRAM_ECLOSED,
               "the log handle was opened before fork(); open a new one in this process");
    return -1;
  }
  pthread_mutex_lock(&self->mu);
  self->users++;
  pthread_mutex_unlock(&self->mu);
  return 0;
}

static void leave(LogObject *self) {
  pthread_mutex_lock(&self->mu);
  if (--self->users == 0) pthread_cond_broadcast(&self->idle);
  pthread_mutex_unlock(&self->mu);
}

/* Copies the handle's message for the calling thread's last error. */
static void snapshot(LogObject *self, char *buf) {
  const char *m = engram_errmsg(self->log);
  snprintf(buf, MSG_MAX, "%s", m ? m : "");
}

/* Runs `call` (an expression using self->log) with the GIL released; on failure copies
 * the error message while still on the thread that made the call. */
#define RUN(self, rc, msg, call)           \
  do {                                     \
    Py_BEGIN_ALLOW_THREADS(rc) = (call);   \
    if ((rc) < 0) snapshot((self), (msg)); \
    Py_END_ALLOW_THREADS                   \
  } while (0)

static LogObject *log_new(engram *h) {
  LogObject *self = PyObject_New(LogObject, &LogType);
  if (!self) {
    engram_close(h);
    return NULL;
  }
  self->log = h;
  pthread_mutex_init(&self->mu, NULL);
  pthread_cond_init(&self->idle, NULL);
  self->users = 0;
  self->closed = 0;
  self->txns = 0;
  self->gen = fork_gen;
  self->weakrefs = NULL;
  self->progress = NULL;
  return self;
}

/* Waits for running calls, then closes. Must hold the GIL; releases it while waiting. */
static void log_shut(LogObject *self) {
  if (!self->log) return;
  self->closed = 1;
  engram *h = self->log;
  int inherited = self->gen != fork_gen;
  Py_BEGIN_ALLOW_THREADS pthread_mutex_lock(&self->mu);
  while (self->users > 0) pthread_cond_wait(&self->idle, &self->mu);
  pthread_mutex_unlock(&self->mu);
  /* A forked child leaves the parent's handle alone: closing it there could disturb
   * state the parent still uses. */
  if (!inherited) engram_close(h);
  Py_END_ALLOW_THREADS self->log = NULL;
}

static void Log_dealloc(LogObject *self) {
  if (self->weakrefs) PyObject_ClearWeakRefs((PyObject *)self);
  log_shut(self);
  Py_CLEAR(self->progress);
  pthread_cond_destroy(&self->idle);
  pthread_mutex_destroy(&self->mu);
  PyObject_Free(self);
}

static PyObject *Log_close(LogObject *self, PyObject *unused) {
  if (self->txns > 0) return raise_code(ENGRAM_EBUSY, "close: a transaction is still open");
  log_shut(self);
  Py_RETURN_NONE;
}

static PyObject *Log_get_closed(LogObject *self, void *unused) {
  return PyBool_FromLong(!self->log || self->closed || self->gen != fork_gen);
}

/* Returns None or raises for rc < 0. */
static PyObject *done(int rc, const char *msg) {
  if (rc < 0) return raise_code(rc, msg);
  Py_RETURN_NONE;
}

static PyObject *Log_sync(LogObject *self, PyObject *unused) {
  int rc;
  char msg[MSG_MAX];
  if (enter(self)) return NULL;
  RUN(self, rc, msg, engram_sync(self->log));
  leave(self);
  return done(rc, msg);
}

/* The handle's progress callback (engram_progress_set, ctx = the Log): called on the
 * thread of a long call, which released the GIL; it calls the Log's current callable,
 * read under the GIL, so set_progress() may replace it at any time. What the callable
 * raises is reported as unraisable; the call goes on. */
static void log_progress_cb(void *ctx, const char *phase, uint64_t done, uint64_t total) {
  LogObject *self = ctx;
  PyGILState_STATE g = PyGILState_Ensure();
  PyObject *fn = self->progress;
  if (fn) {
    Py_INCREF(fn);
    PyObject *r = PyObject_CallFunction(fn, "sKK", phase, (unsigned long long)done,
                                        (unsigned long long)total);
    if (r)
      Py_DECREF(r);
    else
      PyErr_WriteUnraisable(fn);
    Py_DECREF(fn);
  }
  PyGILState_Release(g);
}

static PyObject *Log_set_progress(LogObject *self, PyObject *fn) {
  if (fn != Py_None && !PyCallable_Check(fn)) {
    PyErr_SetString(PyExc_TypeError, "progress must be callable or None");
    return NULL;
  }
  if (enter(self)) return NULL;
  Py_XSETREF(self->progress, fn == Py_None ? NULL : Py_NewRef(fn));
  int rc = engram_progress_set(self->log, self->progress ? log_progress_cb : NULL, self);
  leave(self);
  return done(rc, engram_errmsg(NULL));
}

static PyObject *Log_backup(LogObject *self, PyObject *args) {
  const char *dest;
  int rc;
  char msg[MSG_MAX];
  if (!PyArg_ParseTuple(args, "O&:backup", conv_str, &dest)) return NULL;
  if (enter(self)) return NULL;
  RUN(self, rc, msg, engram_backup(self->log, dest));
  leave(self);
  return done(rc, msg);
}

static PyObject *Log_verify(LogObject *self, PyObject *unused) {
  int rc;
  char msg[MSG_MAX];
  engram_verify_report r;
  memset(&r, 0, sizeof r);
  if (enter(self)) return NULL;
  RUN(self, rc, msg, engram_verify(self->log, &r));
  leave(self);
  if (rc < 0) return raise_code(rc, msg);
  return Py_BuildValue("{s:K,s:K,s:K,s:s}", "topics", (unsigned long long)r.topics, "records",
                       (unsigned long long)r.records, "damaged", (unsigned long long)r.damaged,
                       "first_damage", r.first_damage);
}

/* ---------------------------------------------------------------------------------
 * Topics.
 * ------------------------------------------------------------------------------ */
/* Sets d[name] to a number of the C type in its name; -1 with an exception set. */
static int put_uint64_t(PyObject *d, const char *name, uint64_t v) {
  PyObject *o = PyLong_FromUnsignedLongLong(v);
  int rc = o ? PyDict_SetItemString(d, name, o) : -1;
  Py_XDECREF(o);
  return rc;
}
static int put_uint32_t(PyObject *d, const char *name, uint32_t v) {
  return put_uint64_t(d, name, v);
}
static int put_int64_t(PyObject *d, const char *name, int64_t v) {
  PyObject *o = PyLong_FromLongLong(v);
  int rc = o ? PyDict_SetItemString(d, name, o) : -1;
  Py_XDECREF(o);
  return rc;
}

static int put_text(PyObject *d, const char *name, const char *v) {
  PyObject *o = PyUnicode_FromString(v);
  int rc = o ? PyDict_SetItemString(d, name, o) : -1;
  Py_XDECREF(o);
  return rc;
}

static PyObject *topic_dict(const engram_topic_info *t) {
  PyObject *d =
      Py_BuildValue("{s:s,s:{s:I,s:I,s:I,s:I}}", "name", t->name, "config", "compress_threshold",
                    t->config.compress_threshold, "max_payload", t->config.max_payload,
                    "dict_train_after", t->config.dict_train_after, "flags", t->config.flags);
  if (!d) return NULL;
#define X(type, name)                      \
  if (put_##type(d, #name, t->name) < 0) { \
    Py_DECREF(d);                          \
    return NULL;                           \
  }
  ENGRAM_TOPIC_INFO_FIELDS(X)
#undef X
  PyObject *cfg = PyDict_GetItemString(d, "config"); /* borrowed */
#define X(type, name)                               \
  if (put_##type(cfg, #name, t->config.name) < 0) { \
    Py_DECREF(d);                                   \
    return NULL;                                    \
  }
  ENGRAM_TOPIC_RETENTION_FIELDS(X)
#undef X
  if (put_text(cfg, "tombstone_type", t->config.tombstone_type) < 0) {
    Py_DECREF(d);
    return NULL;
  }
  return d;
}

/* topic_create and topic_set: (topic, config keywords) -> the call. */
static PyObject *topic_config_call(LogObject *self, PyObject *args, PyObject *kw, int set) {
  static char *kws[] = {
      "topic",      "compress_threshold", "max_payload", "dict_train_after", "flags",
      "max_age_ms", "max_bytes",          "max_events",  "tombstone_ttl_ms", "tombstone_type",
      NULL};
  const char *topic, *tomb_type = NULL;
  engram_topic_config c;
  memset(&c, 0, sizeof c);
  int rc;
  char msg[MSG_MAX];
  if (!PyArg_ParseTupleAndKeywords(
          args, kw, set ? "O&|O&O&O&O&O&O&O&O&O&:topic_set" : "O&|O&O&O&O&O&O&O&O&O&:topic_create",
          kws, conv_str, &topic, conv_u32, &c.compress_threshold, conv_u32, &c.max_payload,
          conv_u32, &c.dict_train_after, conv_u32, &c.flags, conv_u64, &c.max_age_ms, conv_u64,
          &c.max_bytes, conv_u64, &c.max_events, conv_u64, &c.tombstone_ttl_ms, conv_str,
          &tomb_type))
    return NULL;
  if (tomb_type && strlen(tomb_type) >= sizeof c.tombstone_type) {
    PyErr_Format(PyExc_ValueError, "tombstone_type over %d bytes", ENGRAM_MAX_TYPE);
    return NULL;
  }
  if (tomb_type) snprintf(c.tombstone_type, sizeof c.tombstone_type, "%s", tomb_type);
  if (enter(self)) return NULL;
  if (set)
    RUN(self, rc, msg, engram_topic_set(self->log, topic, &c));
  else
    RUN(self, rc, msg, engram_topic_create(self->log, topic, &c));
  leave(self);
  return done(rc, msg);
}

static PyObject *Log_topic_create(LogObject *self, PyObject *args, PyObject *kw) {
  return topic_config_call(self, args, kw, 0);
}

static PyObject *Log_topic_set(LogObject *self, PyObject *args, PyObject *kw) {
  return topic_config_call(self, args, kw, 1);
}

static PyObject *Log_compact(LogObject *self, PyObject *args) {
  const char *topic = NULL;
  engram_compact_report r;
  int rc;
  char msg[MSG_MAX];
  if (!PyArg_ParseTuple(args, "|z:compact", &topic)) return NULL;
  if (enter(self)) return NULL;
  RUN(self, rc, msg, engram_compact(self->log, topic, &r));
  leave(self);
  if (rc < 0) return raise_code(rc, msg);
  PyObject *d = PyDict_New();
  if (!d) return NULL;
#define X(type, name)                     \
  if (put_##type(d, #name, r.name) < 0) { \
    Py_DECREF(d);                         \
    return NULL;                          \
  }
  ENGRAM_COMPACT_REPORT_FIELDS(X)
#undef X
  return d;
}

static PyObject *Log_topic_info(LogObject *self, PyObject *args) {
  const char *topic;
  engram_topic_info t;
  int rc;
  char msg[MSG_MAX];
  if (!PyArg_ParseTuple(args, "O&:topic_info", conv_str, &topic)) return NULL;
  if (enter(self)) return NULL;
  RUN(self, rc, msg, engram_topic_info_get(self->log, topic, &t));
  leave(self);
  if (rc < 0) return raise_code(rc, msg);
  return topic_dict(&t);
}

static PyObject *Log_topic_list(LogObject *self, PyObject *unused) {
  engram_topic_info *ts = NULL;
  size_t n = 0;
  int rc;
  char msg[MSG_MAX];
  if (enter(self)) return NULL;
  RUN(self, rc, msg, engram_topic_list(self->log, &ts, &n));
  leave(self);
  if (rc < 0) return raise_code(rc, msg);
  PyObject *list = PyList_New((Py_ssize_t)n);
  for (size_t i = 0; list && i < n; i++) {
    PyObject *d = topic_dict(&ts[i]);
    if (!d) {
      Py_CLEAR(list);
      break;
    }
    PyList_SET_ITEM(list, (Py_ssize_t)i, d);
  }
  engram_free(ts);
  return list;
}

static PyObject *Log_topic_drop(LogObject *self, PyObject *args) {
  const char *topic;
  int rc;
  char msg[MSG_MAX];
  if (!PyArg_ParseTuple(args, "O&:topic_drop", conv_str, &topic)) return NULL;
  if (enter(self)) return NULL;
  RUN(self, rc, msg, engram_topic_drop(self->log, topic));
  leave(self);
  return done(rc, msg);
}

static PyObject *Log_topic_train_dict(LogObject *self, PyObject *args) {
  const char *topic;
  uint32_t id = 0;
  int rc;
  char msg[MSG_MAX];
  if (!PyArg_ParseTuple(args, "O&:topic_train_dict", conv_str, &topic)) return NULL;
  if (enter(self)) return NULL;
  RUN(self, rc, msg, engram_topic_train_dict(self->log, topic, &id));
  leave(self);
  if (rc < 0) return raise_code(rc, msg);
  return PyLong_FromUnsignedLong(id);
}

/* ---------------------------------------------------------------------------------
 * Events in: a Python event spec is the tuple
 *   (type, payload, key, content_type, headers, idempotency_key, deliver_at_ns[, flags
 *    [, timestamp_ns]])
 * with payload a bytes-like object, headers a dict of str -> str or None, and
 * timestamp_ns the given append time of flags' ENGRAM_EVENT_TIMESTAMP.
 * ------------------------------------------------------------------------------ */
typedef struct {
  engram_event ev;
  Py_buffer payload;
  int has_payload;
  engram_header *headers;
  PyObject *keep; /* strings whose UTF-8 the header pointers use */
} evin;

static void evin_clear(evin *e) {
  if (e->has_payload) PyBuffer_Release(&e->payload);
  e->has_payload = 0;
  PyMem_Free(e->headers);
  e->headers = NULL;
  Py_CLEAR(e->keep);
}

/* Fills `e` from an event spec; holds references so the pointers stay valid while the
 * call runs without the GIL. Returns 0, or -1 with an exception set. */
static int evin_fill(evin *e, PyObject *spec) {
  memset(e, 0, sizeof *e);
  if (!PyTuple_Check(spec) || PyTuple_GET_SIZE(spec) < 7 || PyTuple_GET_SIZE(spec) > 9) {
    PyErr_SetString(PyExc_TypeError,
                    "event spec must be a 7-tuple (or 8 with flags, 9 with a timestamp)");
    return -1;
  }
  e->keep = PyList_New(0);
  if (!e->keep) return -1;
  if (PyList_Append(e->keep, spec) < 0) goto fail;
  PyObject *type = PyTuple_GET_ITEM(spec, 0), *payload = PyTuple_GET_ITEM(spec, 1);
  PyObject *key = PyTuple_GET_ITEM(spec, 2), *ctype = PyTuple_GET_ITEM(spec, 3);
  PyObject *headers = PyTuple_GET_ITEM(spec, 4), *idem = PyTuple_GET_ITEM(spec, 5);
  PyObject *at = PyTuple_GET_ITEM(spec, 6);
  if (!conv_str(type, &e->ev.type)) goto fail;
  if (payload != Py_None) {
    if (PyObject_GetBuffer(payload, &e->payload, PyBUF_SIMPLE) < 0) goto fail;
    e->has_payload = 1;
    e->ev.payload = e->payload.buf;
    e->ev.payload_len = (size_t)e->payload.len;
  }
  if (!conv_str_opt(key, &e->ev.key)) goto fail;
  if (!conv_str_opt(ctype, &e->ev.content_type)) goto fail;
  if (!conv_str_opt(idem, &e->ev.idempotency_key)) goto fail;
  if (!conv_i64(at, &e->ev.deliver_at_ns)) goto fail;
  if (PyTuple_GET_SIZE(spec) >= 8 && !conv_u32(PyTuple_GET_ITEM(spec, 7), &e->ev.flags)) goto fail;
  if (PyTuple_GET_SIZE(spec) == 9 && !conv_i64(PyTuple_GET_ITEM(spec, 8), &e->ev.timestamp_ns))
    goto fail;
  if (headers != Py_None) {
    if (!PyDict_Check(headers)) {
      PyErr_Format(PyExc_TypeError, "headers must be a dict of str to str, got %.80s",
                   Py_TYPE(headers)->tp_name);
      goto fail;
    }
    /* A copy, so another thread changing the caller's dict cannot free our strings. */
    PyObject *items = PyDict_Items(headers);
    if (!items) goto fail;
    int ok = PyList_Append(e->keep, items) == 0;
    Py_DECREF(items);
    if (!ok) goto fail;
    Py_ssize_t n = PyList_GET_SIZE(items);
    e->headers = PyMem_Calloc(n ? (size_t)n : 1, sizeof(engram_header));
    if (!e->headers) {
      PyErr_NoMemory();
      goto fail;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
      PyObject *kv = PyList_GET_ITEM(items, i);
      if (!conv_str(PyTuple_GET_ITEM(kv, 0), &e->headers[i].name)) goto fail;
      if (!conv_str(PyTuple_GET_ITEM(kv, 1), &e->headers[i].value)) goto fail;
    }
    e->ev.headers = e->headers;
    e->ev.n_headers = (size_t)n;
  }
  return 0;
fail:
  evin_clear(e);
  return -1;
}

/* ---------------------------------------------------------------------------------
 * Events out: the tuple
 *   (offset, topic, type, key, payload, content_type, headers, idempotency_key,
 *    deliver_at_ns, timestamp_ns, attempt, flags)
 * ------------------------------------------------------------------------------ */
static PyObject *str_or_none(const char *s) {
  if (!s) Py_RETURN_NONE;
  return PyUnicode_DecodeUTF8(s, (Py_ssize_t)strlen(s), "replace");
}

static PyObject *event_tuple(const engram_event *ev) {
  PyObject *h = PyDict_New();
  if (!h) return NULL;
  for (size_t i = 0; i < ev->n_headers; i++) {
    PyObject *v = str_or_none(ev->headers[i].value);
    if (!v || PyDict_SetItemString(h, ev->headers[i].name, v) < 0) {
      Py_XDECREF(v);
      Py_DECREF(h);
      return NULL;
    }
    Py_DECREF(v);
  }
  const char *ct = ev->content_type && *ev->content_type ? ev->content_type : NULL;
  return Py_BuildValue("(KNNNy#NNNLLII)", (unsigned long long)ev->offset, str_or_none(ev->topic),
                       str_or_none(ev->type), str_or_none(ev->key),
                       ev->payload ? (const char *)ev->payload : "", (Py_ssize_t)ev->payload_len,
                       str_or_none(ct), h, str_or_none(ev->idempotency_key),
                       (long long)ev->deliver_at_ns, (long long)ev->timestamp_ns,
                       (unsigned int)ev->attempt, (unsigned int)ev->flags);
}

/* Converts a batch to a list of event tuples and frees it. */
static PyObject *batch_list(engram_batch *b) {
  PyObject *list = PyList_New(b ? (Py_ssize_t)b->count : 0);
  for (size_t i = 0; list && b && i < b->count; i++) {
    PyObject *t = event_tuple(&b->events[i]);
    if (!t) {
      Py_CLEAR(list);
      break;
    }
    PyList_SET_ITEM(list, (Py_ssize_t)i, t);
  }
  engram_batch_free(b);
  return list;
}

static PyObject *Log_append(LogObject *self, PyObject *args) {
  const char *topic;
  PyObject *spec;
  evin e;
  uint64_t off = 0;
  int dup = 0, rc;
  char msg[MSG_MAX];
  if (!PyArg_ParseTuple(args, "O&O:append", conv_str, &topic, &spec)) return NULL;
  if (evin_fill(&e, spec) < 0) return NULL;
  if (enter(self)) {
    evin_clear(&e);
    return NULL;
  }
  RUN(self, rc, msg, engram_append(self->log, topic, &e.ev, &off, &dup));
  leave(self);
  evin_clear(&e);
  if (rc < 0) return raise_code(rc, msg);
  return Py_BuildValue("(KO)", (unsigned long long)off, dup ? Py_True : Py_False);
}

static PyObject *Log_append_batch(LogObject *self, PyObject *args) {
  const char *topic;
  PyObject *specs, *seq = NULL, *out = NULL;
  evin *es = NULL;
  uint64_t *offs = NULL;
  int *dups = NULL;
  Py_ssize_t n = 0, filled = 0;
  int rc;
  char msg[MSG_MAX];
  if (!PyArg_ParseTuple(args, "O&O:append_batch", conv_str, &topic, &specs)) return NULL;
  seq = PySequence_Fast(specs, "events must be a sequence of event specs");
  if (!seq) return NULL;
  n = PySequence_Fast_GET_SIZE(seq);
  if (n == 0) {
    Py_DECREF(seq);
    return PyList_New(0);
  }
  es = PyMem_Calloc((size_t)n, sizeof *es);
  offs = PyMem_Calloc((size_t)n, sizeof *offs);
  dups = PyMem_Calloc((size_t)n, sizeof *dups);
  engram_event *evs = PyMem_Calloc((size_t)n, sizeof *evs);
  if (!es || !offs || !dups || !evs) {
    PyErr_NoMemory();
    goto out;
  }
  for (; filled < n; filled++) {
    if (evin_fill(&es[filled], PySequence_Fast_GET_ITEM(seq, filled)) < 0) goto out;
    evs[filled] = es[filled].ev;
  }
  if (enter(self)) goto out;
  RUN(self, rc, msg, engram_append_batch(self->log, topic, evs, (size_t)n, offs, dups));
  leave(self);
  if (rc < 0) {
    raise_code(rc, msg);
    goto out;
  }
  out = PyList_New(n);
  for (Py_ssize_t i = 0; out && i < n; i++) {
    PyObject *t = Py_BuildValue("(KO)", (unsigned long long)offs[i], dups[i] ? Py_True : Py_False);
    if (!t)
      Py_CLEAR(out);
    else
      PyList_SET_ITEM(out, i, t);
  }
out:
  for (Py_ssize_t i = 0; i < filled; i++) evin_clear(&es[i]);
  PyMem_Free(es);
  PyMem_Free(offs);
  PyMem_Free(dups);
  PyMem_Free(evs);
  Py_DECREF(seq);
  return out;
}

/* A pipelined append's callback (ctx = a new reference to the Python callable): called
 * once, on the thread of a later append_async or append_wait, which released the GIL;
 * it calls fn(code, offset, duplicate) and drops the reference. What fn raises is
 * reported as unraisable. */
static void append_done_cb(void *ctx, int rc, uint64_t offset, int dup) {
  PyObject *fn = ctx;
  PyGILState_STATE g = PyGILState_Ensure();
  PyObject *r =
      PyObject_CallFunction(fn, "iKO", rc, (unsigned long long)offset, dup ? Py_True : Py_False);
  if (r)
    Py_DECREF(r);
  else
    PyErr_WriteUnraisable(fn);
  Py_DECREF(fn);
  PyGILState_Release(g);
}

static PyObject *Log_append_async(LogObject *self, PyObject *args) {
  const char *topic;
  PyObject *spec, *fn = Py_None;
  evin e;
  int rc;
  char msg[MSG_MAX];
  if (!PyArg_ParseTuple(args, "O&O|O:append_async", conv_str, &topic, &spec, &fn)) return NULL;
  if (fn != Py_None && !PyCallable_Check(fn)) {
    PyErr_SetString(PyExc_TypeError, "append_async: on_done must be callable or None");
    return NULL;
  }
  if (evin_fill(&e, spec) < 0) return NULL;
  if (enter(self)) {
    evin_clear(&e);
    return NULL;
  }
  PyObject *ctx = fn == Py_None ? NULL : Py_NewRef(fn);
  RUN(self, rc, msg,
      engram_append_async(self->log, topic, &e.ev, ctx ? append_done_cb : NULL, ctx));
  leave(self);
  evin_clear(&e);
  if (rc < 0) Py_XDECREF(ctx); /* refused before it was queued: no callback comes */
  return done(rc, msg);
}

static PyObject *Log_append_wait(LogObject *self, PyObject *unused) {
  int rc;
  char msg[MSG_MAX];
  if (enter(self)) return NULL;
  RUN(self, rc, msg, engram_append_wait(self->log));
  leave(self);
  return done(rc, msg);
}

static PyObject *Log_read(LogObject *self, PyObject *args) {
  const char *topic;
  uint64_t off;
  engram_batch *b = NULL;
  int rc;
  char msg[MSG_MAX];
  if (!PyArg_ParseTuple(args, "O&O&:read", conv_str, &topic, conv_u64, &off)) return NULL;
  if (enter(self)) return NULL;
  RUN(self, rc, msg, engram_read(self->log, topic, off, &b));
  leave(self);
  if (rc < 0) return raise_code(rc, msg);
  if (!b || b->count == 0) {
    engram_batch_free(b);
    return raise_code(ENGRAM_ENOTFOUND, "read: no event at that offset");
  }
  PyObject *t = event_tuple(&b->events[0]);
  engram_batch_free(b);
  return t;
}

static PyObject *Log_read_range(LogObject *self, PyObject *args) {
  const char *topic;
  uint64_t from;
  size_t max;
  int covered = 0;
  engram_batch *b = NULL;
  int rc;
  char msg[MSG_MAX];
  if (!PyArg_ParseTuple(args, "O&O&O&|p:read_range", conv_str, &topic, conv_u64, &from, conv_size,
                        &max, &covered))
    return NULL;
  if (enter(self)) return NULL;
  RUN(self, rc, msg, engram_read_range(self->log, topic, from, max, &b));
  leave(self);
  if (rc < 0) return raise_code(rc, msg);
  if (!covered) return batch_list(b);
  /* With the range it covered: (events, from, next, removed). */
  unsigned long long f = b ? b->from : 0, n = b ? b->next : 0, r = b ? b->removed : 0;
  PyObject *list = batch_list(b);
  if (!list) return NULL;
  return Py_BuildValue("(NKKK)", list, f, n, r);
}

/* ---------------------------------------------------------------------------------
 * Consumer groups.
 * ------------------------------------------------------------------------------ */
static PyObject *group_dict(const engram_group_info *g) {
  PyObject *filters = PyList_New(0), *backoff = PyList_New(0);
  if (!filters || !backoff) goto fail;
  for (size_t i = 0; i < g->n_filters && i < ENGRAM_MAX_FILTERS; i++) {
    PyObject *s = PyUnicode_FromString(g->filters[i]);
    if (!s || PyList_Append(filters, s) < 0) {
      Py_XDECREF(s);
      goto fail;
    }
    Py_DECREF(s);
  }
  for (size_t i = 0; i < g->n_backoff && i < ENGRAM_MAX_BACKOFF; i++) {
    PyObject *v = PyLong_FromUnsignedLongLong(g->backoff_ms[i]);
    if (!v || PyList_Append(backoff, v) < 0) {
      Py_XDECREF(v);
      goto fail;
    }
    Py_DECREF(v);
  }
  PyObject *d = Py_BuildValue(
      "{s:s,s:s,s:N,s:K,s:I,s:N,s:K,s:I,s:L}", "topic", g->topic, "name", g->name, "filters",
      filters, "ack_wait_ms", (unsigned long long)g->ack_wait_ms, "max_deliver", g->max_deliver,
      "backoff_ms", backoff, "result_ttl_ms", (unsigned long long)g->result_ttl_ms, "flags",
      g->flags, "created_ns", (long long)g->created_ns);
  if (!d) return NULL; /* "N" consumed filters and backoff */
#define X(type, name)                      \
  if (put_##type(d, #name, g->name) < 0) { \
    Py_DECREF(d);                          \
    return NULL;                           \
  }
  ENGRAM_GROUP_INFO_COUNTERS(X)
#undef X
  return d;
fail:
  Py_XDECREF(filters);
  Py_XDECREF(backoff);
  return NULL;
}

static PyObject *Log_group_create(LogObject *self, PyObject *args, PyObject *kw) {
  static char *kws[] = {"topic",        "group",         "filters",     "start",
                        "start_offset", "start_time_ns", "ack_wait_ms", "max_deliver",
                        "backoff_ms",   "result_ttl_ms", "flags",       NULL};
  const char *topic, *group;
  PyObject *filters = Py_None, *fseq = NULL;
  uint32_t start = 0;
  struct u64s backoff = {NULL, 0};
  engram_group_config c;
  memset(&c, 0, sizeof c);
  const char **fs = NULL;
  int rc;
  char msg[MSG_MAX];
  PyObject *ret = NULL;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O&O&|OO&O&O&O&O&O&O&O&:group_create", kws, conv_str,
                                   &topic, conv_str, &group, &filters, conv_u32, &start, conv_u64,
                                   &c.start_offset, conv_i64, &c.start_time_ns, conv_u64,
                                   &c.ack_wait_ms, conv_u32, &c.max_deliver, conv_u64s, &backoff,
                                   conv_u64, &c.result_ttl_ms, conv_u32, &c.flags))
    return NULL;
  if (start > ENGRAM_START_TIME) {
    raise_code(ENGRAM_EINVAL, "group: start must be EARLIEST, LATEST, OFFSET or TIME");
    goto out;
  }
  c.start = (engram_start)start;
  if (filters != Py_None) {
    if (PyUnicode_Check(filters)) {
      PyErr_SetString(PyExc_TypeError, "filters must be a list of str, not a str");
      goto out;
    }
    fseq = PySequence_Fast(filters, "filters must be a list of str");
    if (!fseq) goto out;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fseq);
    fs = PyMem_Calloc(n ? (size_t)n : 1, sizeof *fs);
    if (!fs) {
      PyErr_NoMemory();
      goto out;
    }
    for (Py_ssize_t i = 0; i < n; i++)
      if (!conv_str(PySequence_Fast_GET_ITEM(fseq, i), &fs[i])) goto out;
    c.filters = fs;
    c.n_filters = (size_t)n;
  }
  c.backoff_ms = backoff.v;
  c.n_backoff = backoff.n;
  if (enter(self)) goto out;
  RUN(self, rc, msg, engram_group_create(self->log, topic, group, &c));
  leave(self);
  ret = done(rc, msg);
out:
  PyMem_Free(fs);
  PyMem_Free(backoff.v);
  Py_XDECREF(fseq);
  return ret;
}

static PyObject *Log_group_info(LogObject *self, PyObject *args) {
  const char *topic, *group;
  engram_group_info g;
  int rc;
  char msg[MSG_MAX];
  if (!PyArg_ParseTuple(args, "O&O&:group_info", conv_str, &topic, conv_str, &group)) return NULL;
  memset(&g, 0, sizeof g);
  if (enter(self)) return NULL;
  RUN(self, rc, msg, engram_group_info_get(self->log, topic, group, &g));
  leave(self);
  if (rc < 0) return raise_code(rc, msg);
  return group_dict(&g);
}

static PyObject *Log_group_list(LogObject *self, PyObject *args) {
  const char *topic = NULL;
  engram_group_info *gs = NULL;
  size_t n = 0;
  int rc;
  char msg[MSG_MAX];
  if (!PyArg_ParseTuple(args, "|O&:group_list", conv_str_opt, &topic)) return NULL;
  if (enter(self)) return NULL;
  RUN(self, rc, msg, engram_group_list(self->log, topic, &gs, &n));
  leave(self);
  if (rc < 0) return raise_code(rc, msg);
  PyObject *list = PyList_New((Py_ssize_t)n);
  for (size_t i = 0; list && i < n; i++) {
    PyObject *d = group_dict(&gs[i]);
    if (!d) {
      Py_CLEAR(list);
      break;
    }
    PyList_SET_ITEM(list, (Py_ssize_t)i, d);
  }
  engram_free(gs);
  return list;
}

static PyObject *Log_group_delete(LogObject *self, PyObject *args) {
  const char *topic, *group;
  int rc;
  char msg[MSG_MAX];
  if (!PyArg_ParseTuple(args, "O&O&:group_delete", conv_str, &topic, conv_str, &group)) return NULL;
  if (enter(self)) return NULL;
  RUN(self, rc, msg, engram_group_delete(self->log, topic, group));
  leave(self);
  return done(rc, msg);
}

static PyObject *Log_group_reset(LogObject *self, PyObject *args) {
  const char *topic, *group;
  uint32_t to;
  uint64_t off = 0;
  int64_t t = 0;
  int rc;
  char msg[MSG_MAX];
  if (!PyArg_ParseTuple(args, "O&O&O&|O&O&:group_reset", conv_str, &topic, conv_str, &group,
                        conv_u32, &to, conv_u64, &off, conv_i64, &t))
    return NULL;
  if (to > ENGRAM_START_TIME)
    return raise_code(ENGRAM_EINVAL, "reset: `to` must be EARLIEST, LATEST, OFFSET or TIME");
  if (enter(self)) return NULL;
  RUN(self, rc, msg, engram_group_reset(self->log, topic, group, (engram_start)to, off, t));
  leave(self);
  return done(rc, msg);
}

static PyObject *Log_fetch(LogObject *self, PyObject *args) {
  const char *topic, *group, *consumer;
  size_t max;
  uint64_t wait_ms;
  engram_batch *b = NULL;
  int rc;
  char msg[MSG_MAX];
  if (!PyArg_ParseTuple(args, "O&O&O&O&O&:fetch", conv_str, &topic, conv_str, &group, conv_str,
                        &consumer, conv_size, &max, conv_u64, &wait_ms))
    return NULL;
  if (enter(self)) return NULL;
  RUN(self, rc, msg, engram_fetch(self->log, topic, group, consumer, max, wait_ms, &b));
  leave(self);
  if (rc < 0) return raise_code(rc, msg);
  return batch_list(b);
}

static PyObject *Log_ack(LogObject *self, PyObject *args) {
  const char *topic, *group;
  uint64_t off;
  uint32_t attempt;
  PyObject *result = Py_None;
  Py_buffer rb = {0};
  int rc;
  char msg[MSG_MAX];
  if (!PyArg_ParseTuple(args, "O&O&O&O&|O:ack", conv_str, &topic, conv_str, &group, conv_u64, &off,
                        conv_u32, &attempt, &result))
    return NULL;
  if (result != Py_None && PyObject_GetBuffer(result, &rb, PyBUF_SIMPLE) < 0) return NULL;
  if (enter(self)) {
    if (rb.obj) PyBuffer_Release(&rb);
    return NULL;
  }
  RUN(self, rc, msg,
      engram_ack(self->log, topic, group, off, attempt, rb.obj ? rb.buf : NULL,
                 rb.obj ? (size_t)rb.len : 0));
  leave(self);
  if (rb.obj) PyBuffer_Release(&rb);
  return done(rc, msg);
}

/* Acks parsed from a sequence of (offset, attempt, result or None): the items, the buffers
 * they point into and their number; ack_items_free releases them (also half parsed). */
typedef struct ack_items {
  PyObject *seq;
  engram_ack_item *it;
  Py_buffer *bufs;
  int *codes;
  Py_ssize_t n, got;
} ack_items;

static void ack_items_free(ack_items *a) {
  for (Py_ssize_t i = 0; a->bufs && i < a->got; i++)
    if (a->bufs[i].obj) PyBuffer_Release(&a->bufs[i]);
  PyMem_Free(a->it);
  PyMem_Free(a->bufs);
  PyMem_Free(a->codes);
  Py_XDECREF(a->seq);
}

static int ack_items_parse(PyObject *items, ack_items *a) {
  memset(a, 0, sizeof *a);
  a->seq = PySequence_Fast(items, "items must be a sequence of (offset, attempt, result)");
  if (!a->seq) return -1;
  a->n = PySequence_Fast_GET_SIZE(a->seq);
  a->it = PyMem_Calloc(a->n ? (size_t)a->n : 1, sizeof *a->it);
  a->bufs = PyMem_Calloc(a->n ? (size_t)a->n : 1, sizeof *a->bufs);
  a->codes = PyMem_Calloc(a->n ? (size_t)a->n : 1, sizeof *a->codes);
  if (!a->it || !a->bufs || !a->codes) {
    PyErr_NoMemory();
    return -1;
  }
  for (; a->got < a->n; a->got++) {
    PyObject *t = PySequence_Fast_GET_ITEM(a->seq, a->got), *res;
    engram_ack_item *it = &a->it[a->got];
    if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 3) {
      PyErr_SetString(PyExc_TypeError, "each item must be (offset, attempt, result)");
      return -1;
    }
    if (!conv_u64(PyTuple_GET_ITEM(t, 0), &it->offset)) return -1;
    if (!conv_u32(PyTuple_GET_ITEM(t, 1), &it->attempt)) return -1;
    res = PyTuple_GET_ITEM(t, 2);
    if (res != Py_None) {
      if (PyObject_GetBuffer(res, &a->bufs[a->got], PyBUF_SIMPLE) < 0) return -1;
      it->result = a->bufs[a->got].buf;
      it->result_len = (size_t)a->bufs[a->got].len;
    }
  }
  return 0;
}

static PyObject *codes_list(const int *codes, Py_ssize_t n) {
  PyObject *out = PyList_New(n);
  for (Py_ssize_t i = 0; out && i < n; i++) {
    PyObject *v = PyLong_FromLong(codes[i]);
    if (!v)
      Py_CLEAR(out);
    else
      PyList_SET_ITEM(out, i, v);
  }
  return out;
}

/* items: sequence of (offset, attempt, result or None); returns the list of codes. */
static PyObject *Log_ack_many(LogObject *self, PyObject *args) {
  const char *topic, *group;
  PyObject *items, *out = NULL;
  ack_items a;
  int rc;
  char msg[MSG_MAX];
  if (!PyArg_ParseTuple(args, "O&O&O:ack_many", conv_str, &topic, conv_str, &group, &items))
    return NULL;
  if (ack_items_parse(items, &a)) goto out;
  if (a.n == 0) {
    out = PyList_New(0);
    goto out;
  }
  if (enter(self)) goto out;
  RUN(self, rc, msg, engram_ack_many(self->log, topic, group, a.it, (size_t)a.n, a.codes));
  leave(self);
  (void)rc;
  out = codes_list(a.codes, a.n);
out:
  ack_items_free(&a);
  return out;
}

/* Acks items as ack_many and fetches as fetch, in one commit, all or nothing: returns the
 * events; a failure raises the first failing item's error with `codes`, each item's code. */
static PyObject *Log_ack_fetch(LogObject *self, PyObject *args) {
  const char *topic, *group, *consumer;
  PyObject *items, *out = NULL;
  size_t max;
  uint64_t wait_ms;
  ack_items a;
  engram_batch *b = NULL;
  int rc;
  char msg[MSG_MAX];
  if (!PyArg_ParseTuple(args, "O&O&O&OO&O&:ack_fetch", conv_str, &topic, conv_str, &group, conv_str,
                        &consumer, &items, conv_size, &max, conv_u64, &wait_ms))
    return NULL;
  if (ack_items_parse(items, &a)) goto out;
  for (Py_ssize_t i = 0; i < a.n; i++) a.codes[i] = 1; /* 1 = not reached */
  if (enter(self)) goto out;
  RUN(self, rc, msg,
      engram_ack_fetch(self->log, topic, group, consumer, a.it, (size_t)a.n, a.codes, max, wait_ms,
                       &b));
  leave(self);
  if (rc == 0) {
    out = batch_list(b);
    goto out;
  }
  raise_code(rc, msg);
  PyObject *type, *value, *tb, *codes = codes_list(a.codes, a.n);
  PyErr_Fetch(&type, &value, &tb);
  PyErr_NormalizeException(&type, &value, &tb);
  if (codes && value && PyObject_SetAttrString(value, "codes", codes) < 0) PyErr_Clear();
  Py_XDECREF(codes);
  PyErr_Restore(type, value, tb);
out:
  ack_items_free(&a);
  return out;
}

static PyObject *Log_nack(LogObject *self, PyObject *args) {
  const char *topic, *group, *error = NULL;
  uint64_t off;
  uint32_t attempt;
  int64_t delay = -1;
  int rc;
  char msg[MSG_MAX];
  if (!PyArg_ParseTuple(args, "O&O&O&O&|O&O&:nack", conv_str, &topic, conv_str, &group, conv_u64,
                        &off, conv_u32, &attempt, conv_i64, &delay, conv_str_opt, &error))
    return NULL;
  if (enter(self)) return NULL;
  RUN(self, rc, msg, engram_nack(self->log, topic, group, off, attempt, delay, error));
  leave(self);
  return done(rc, msg);
}

static PyObject *Log_reject(LogObject *self, PyObject *args) {
  const char *topic, *group, *reason = NULL;
  uint64_t off;
  uint32_t attempt;
  int rc;
  char msg[MSG_MAX];
  if (!PyArg_ParseTuple(args, "O&O&O&O&|O&:reject", conv_str, &topic, conv_str, &group, conv_u64,
                        &off, conv_u32, &attempt, conv_str_opt, &reason))
    return NULL;
  if (enter(self)) return NULL;
  RUN(self, rc, msg, engram_reject(self->log, topic, group, off, attempt, reason));
  leave(self);
  return done(rc, msg);
}

static PyObject *Log_extend(LogObject *self, PyObject *args) {
  const char *topic, *group;
  uint64_t off, ms = 0;
  uint32_t attempt;
  int rc;
  char msg[MSG_MAX];
  if (!PyArg_ParseTuple(args, "O&O&O&O&|O&:extend", conv_str, &topic, conv_str, &group, conv_u64,
                        &off, conv_u32, &attempt, conv_u64, &ms))
    return NULL;
  if (enter(self)) return NULL;
  RUN(self, rc, msg, engram_extend(self->log, topic, group, off, attempt, ms));
  leave(self);
  return done(rc, msg);
}

static PyObject *Log_cancel(LogObject *self, PyObject *args) {
  const char *topic, *group;
  uint64_t off;
  int rc;
  char msg[MSG_MAX];
  if (!PyArg_ParseTuple(args, "O&O&O&:cancel", conv_str, &topic, conv_str, &group, conv_u64, &off))
    return NULL;
  if (enter(self)) return NULL;
  RUN(self, rc, msg, engram_cancel(self->log, topic, group, off));
  leave(self);
  return done(rc, msg);
}

static PyObject *Log_status(LogObject *self, PyObject *args) {
  const char *topic, *group;
  uint64_t off;
  engram_status st;
  int rc;
  char msg[MSG_MAX];
  if (!PyArg_ParseTuple(args, "O&O&O&:status", conv_str, &topic, conv_str, &group, conv_u64, &off))
    return NULL;
  memset(&st, 0, sizeof st);
  if (enter(self)) return NULL;
  RUN(self, rc, msg, engram_status_get(self->log, topic, group, off, &st));
  leave(self);
  if (rc < 0) return raise_code(rc, msg);
  PyObject *res;
  if (st.result)
    res = PyBytes_FromStringAndSize(st.result, (Py_ssize_t)st.result_len);
  else
    res = Py_NewRef(Py_None);
  engram_free(st.result);
  if (!res) return NULL;
  return Py_BuildValue("{s:i,s:s,s:s,s:I,s:L,s:s,s:N}", "state", (int)st.state, "state_name",
                       engram_state_name(st.state), "consumer", st.consumer, "attempt", st.attempt,
                       "deadline_ns", (long long)st.deadline_ns, "last_error", st.last_error,
                       "result", res);
}

static PyObject *Log_dlq_list(LogObject *self, PyObject *args) {
  const char *topic, *group;
  uint64_t from = 0;
  size_t max = 0, n = 0;
  engram_dlq_entry *es = NULL;
  int rc;
  char msg[MSG_MAX];
  if (!PyArg_ParseTuple(args, "O&O&|O&O&:dlq_list", conv_str, &topic, conv_str, &group, conv_u64,
                        &from, conv_size, &max))
    return NULL;
  if (enter(self)) return NULL;
  RUN(self, rc, msg, engram_dlq_list(self->log, topic, group, from, max, &es, &n));
  leave(self);
  if (rc < 0) return raise_code(rc, msg);
  PyObject *list = PyList_New((Py_ssize_t)n);
  for (size_t i = 0; list && i < n; i++) {
    engram_dlq_entry *e = &es[i];
    PyObject *d = PyDict_New();
#define NUM(type, name) \
  if (d && put_##type(d, #name, e->name) < 0) Py_CLEAR(d);
#define TEXT(size, name) \
  if (d && put_text(d, #name, e->name) < 0) Py_CLEAR(d);
    ENGRAM_DLQ_ENTRY_FIELDS(NUM, TEXT)
#undef NUM
#undef TEXT
    if (!d) {
      Py_CLEAR(list);
      break;
    }
    PyList_SET_ITEM(list, (Py_ssize_t)i, d);
  }
  engram_free(es);
  return list;
}

/* Copies Python text into a fixed field; raises EINVAL and returns -1 when it does not fit. */
static int copy_fixed(char *dst, size_t cap, PyObject *o, const char *what) {
  Py_ssize_t n;
  const char *s = PyUnicode_Check(o) ? PyUnicode_AsUTF8AndSize(o, &n) : NULL;
  if (!s) {
    if (!PyErr_Occurred())
      PyErr_Format(PyExc_TypeError, "%s: expected str, got %.80s", what, Py_TYPE(o)->tp_name);
    return -1;
  }
  if ((size_t)n >= cap || memchr(s, '\0', (size_t)n)) {
    char msg[128];
    snprintf(msg, sizeof msg, "worker heartbeat: %s too long or holds NUL", what);
    raise_code(ENGRAM_EINVAL, msg);
    return -1;
  }
  memcpy(dst, s, (size_t)n + 1);
  return 0;
}

/* worker_heartbeat(name, host, pid, concurrency, handled, failed, groups, running,
 * started_ns): groups a sequence of "topic/group", running of (topic, group, offset,
 * since_ns) tuples. */
static PyObject *Log_worker_heartbeat(LogObject *self, PyObject *args) {
  PyObject *name, *host, *groups, *running;
  uint32_t pid = 0, conc = 0;
  uint64_t handled = 0, failed = 0;
  int64_t started = 0;
  int rc;
  char msg[MSG_MAX];
  if (!PyArg_ParseTuple(args, "UUO&O&O&O&OOO&:worker_heartbeat", &name, &host, conv_u32, &pid,
                        conv_u32, &conc, conv_u64, &handled, conv_u64, &failed, &groups, &running,
                        conv_i64, &started))
    return NULL;
  engram_worker_info *w = calloc(1, sizeof *w);
  if (!w) return PyErr_NoMemory();
  PyObject *gs = NULL, *rs = NULL;
  if (copy_fixed(w->name, sizeof w->name, name, "name") ||
      copy_fixed(w->host, sizeof w->host, host, "host"))
    goto fail;
  w->pid = pid;
  w->concurrency = conc;
  w->handled = handled;
  w->failed = failed;
  w->started_ns = started;
  if (!(gs = PySequence_Fast(groups, "groups: expected a sequence")) ||
      !(rs = PySequence_Fast(running, "running: expected a sequence")))
    goto fail;
  if (PySequence_Fast_GET_SIZE(gs) > ENGRAM_MAX_WORKER_GROUPS ||
      PySequence_Fast_GET_SIZE(rs) > ENGRAM_MAX_WORKER_RUNNING) {
    raise_code(ENGRAM_EINVAL, "worker heartbeat: too many groups or running tasks");
    goto fail;
  }
  for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(gs); i++)
    if (copy_fixed(w->groups[i], sizeof w->groups[i], PySequence_Fast_GET_ITEM(gs, i), "group"))
      goto fail;
  w->n_groups = (size_t)PySequence_Fast_GET_SIZE(gs);
  for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(rs); i++) {
    engram_worker_task *t = &w->running[i];
    PyObject *tp, *gp;
    if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(rs, i), "UUO&O&:running task", &tp, &gp,
                          conv_u64, &t->offset, conv_i64, &t->since_ns) ||
        copy_fixed(t->topic, sizeof t->topic, tp, "running topic") ||
        copy_fixed(t->group, sizeof t->group, gp, "running group"))
      goto fail;
  }
  w->n_running = (size_t)PySequence_Fast_GET_SIZE(rs);
  Py_CLEAR(gs);
  Py_CLEAR(rs);
  if (enter(self)) goto fail;
  RUN(self, rc, msg, engram_worker_heartbeat(self->log, w));
  leave(self);
  free(w);
  if (rc < 0) return raise_code(rc, msg);
  Py_RETURN_NONE;
fail:
  Py_XDECREF(gs);
  Py_XDECREF(rs);
  free(w);
  return NULL;
}

static PyObject *worker_dict(const engram_worker_info *w) {
  PyObject *d = PyDict_New();
#define NUM(type, name) \
  if (d && put_##type(d, #name, w->name) < 0) Py_CLEAR(d);
#define TEXT(size, name) \
  if (d && put_text(d, #name, w->name) < 0) Py_CLEAR(d);
  ENGRAM_WORKER_INFO_FIELDS(NUM, TEXT)
#undef NUM
#undef TEXT
  PyObject *gs = PyList_New((Py_ssize_t)w->n_groups), *rs = PyList_New((Py_ssize_t)w->n_running);
  for (size_t i = 0; gs && i < w->n_groups; i++) {
    PyObject *g = PyUnicode_FromString(w->groups[i]);
    if (!g) {
      Py_CLEAR(gs);
      break;
    }
    PyList_SET_ITEM(gs, (Py_ssize_t)i, g);
  }
  for (size_t i = 0; rs && i < w->n_running; i++) {
    PyObject *t = Py_BuildValue(
        "{s:s,s:s,s:K,s:L}", "topic", w->running[i].topic, "group", w->running[i].group, "offset",
        (unsigned long long)w->running[i].offset, "since_ns", (long long)w->running[i].since_ns);
    if (!t) {
      Py_CLEAR(rs);
      break;
    }
    PyList_SET_ITEM(rs, (Py_ssize_t)i, t);
  }
  if (!d || !gs || !rs || PyDict_SetItemString(d, "groups", gs) < 0 ||
      PyDict_SetItemString(d, "running", rs) < 0)
    Py_CLEAR(d);
  Py_XDECREF(gs);
  Py_XDECREF(rs);
  return d;
}

static PyObject *Log_worker_list(LogObject *self, PyObject *args) {
  uint64_t lost_after = 0;
  size_t n = 0;
  engram_worker_info *ws = NULL;
  int rc;
  char msg[MSG_MAX];
  if (!PyArg_ParseTuple(args, "|O&:worker_list", conv_u64, &lost_after)) return NULL;
  if (enter(self)) return NULL;
  RUN(self, rc, msg, engram_worker_list(self->log, lost_after, &ws, &n));
  leave(self);
  if (rc < 0) return raise_code(rc, msg);
  PyObject *list = PyList_New((Py_ssize_t)n);
  for (size_t i = 0; list && i < n; i++) {
    PyObject *d = worker_dict(&ws[i]);
    if (!d) {
      Py_CLEAR(list);
      break;
    }
    PyList_SET_ITEM(list, (Py_ssize_t)i, d);
  }
  engram_free(ws);
  return list;
}

static PyObject *Log_worker_forget(LogObject *self, PyObject *args) {
  const char *name;
  int rc;
  char msg[MSG_MAX];
  if (!PyArg_ParseTuple(args, "O&:worker_forget", conv_str, &name)) return NULL;
  if (enter(self)) return NULL;
  RUN(self, rc, msg, engram_worker_forget(self->log, name));
  leave(self);
  if (rc < 0) return raise_code(rc, msg);
  Py_RETURN_NONE;
}

/* One row of engram_rate_list: {"topic", "group", and per rate field a tuple of
 * ENGRAM_RATE_WINDOWS floats (1, 5, 15 minutes)}. */
static PyObject *rate_dict(const engram_rate_info *r) {
  PyObject *d = Py_BuildValue("{s:s,s:s}", "topic", r->topic, "group", r->group);
#define X(type, name)                                                         \
  if (d) {                                                                    \
    PyObject *t = Py_BuildValue("(ddd)", r->name[0], r->name[1], r->name[2]); \
    if (!t || PyDict_SetItemString(d, #name, t) < 0) Py_CLEAR(d);             \
    Py_XDECREF(t);                                                            \
  }
  ENGRAM_RATE_FIELDS(X)
#undef X
  return d;
}

static PyObject *Log_rate_list(LogObject *self, PyObject *args) {
  const char *topic = NULL;
  size_t n = 0;
  engram_rate_info *rs = NULL;
  int rc;
  char msg[MSG_MAX];
  if (!PyArg_ParseTuple(args, "|z:rate_list", &topic)) return NULL;
  if (enter(self)) return NULL;
  RUN(self, rc, msg, engram_rate_list(self->log, topic, &rs, &n));
  leave(self);
  if (rc < 0) return raise_code(rc, msg);
  PyObject *list = PyList_New((Py_ssize_t)n);
  for (size_t i = 0; list && i < n; i++) {
    PyObject *d = rate_dict(&rs[i]);
    if (!d) {
      Py_CLEAR(list);
      break;
    }
    PyList_SET_ITEM(list, (Py_ssize_t)i, d);
  }
  engram_free(rs);
  return list;
}

typedef int (*dlq_op)(engram *, const char *, const char *, const uint64_t *, size_t, size_t *);

static PyObject *dlq_apply(LogObject *self, PyObject *args, const char *fmt, dlq_op op) {
  const char *topic, *group;
  struct u64s offs = {NULL, 0};
  size_t count = 0;
  int rc;
  char msg[MSG_MAX];
  if (!PyArg_ParseTuple(args, fmt, conv_str, &topic, conv_str, &group, conv_u64s, &offs))
    return NULL;
  if (enter(self)) {
    PyMem_Free(offs.v);
    return NULL;
  }
  RUN(self, rc, msg, op(self->log, topic, group, offs.v, offs.n, &count));
  leave(self);
  PyMem_Free(offs.v);
  if (rc < 0) return raise_code(rc, msg);
  return PyLong_FromSize_t(count);
}

static PyObject *Log_dlq_purge(LogObject *self, PyObject *args) {
  return dlq_apply(self, args, "O&O&|O&:dlq_purge", engram_dlq_purge);
}

static PyObject *Log_dlq_redrive(LogObject *self, PyObject *args) {
  return dlq_apply(self, args, "O&O&|O&:dlq_redrive", engram_dlq_redrive);
}

/* ---------------------------------------------------------------------------------
 * Schedules: periodic appends stored in the log.
 * ------------------------------------------------------------------------------ */
typedef struct {
  engram_schedule_config cfg;
  Py_buffer payload;
  int has_payload;
  engram_header *headers;
  PyObject *keep; /* the header items whose UTF-8 the pointers use */
} schedin;

static void schedin_clear(schedin *s) {
  if (s->has_payload) PyBuffer_Release(&s->payload);
  s->has_payload = 0;
  PyMem_Free(s->headers);
  s->headers = NULL;
  Py_CLEAR(s->keep);
}

/* schedule_add / schedule_set arguments: (name, topic, type, every_ms=0, start_ns=0,
 * cron=None, tz=None, payload=None, key=None, content_type=None, headers=None, missed=0,
 * max_catchup=0). Returns 0, or -1 with an exception set (and `s` cleared). */
static int schedin_fill(schedin *s, const char **name, PyObject *args, PyObject *kw,
                        const char *fmt) {
  static char *kws[] = {"name",    "topic",  "type",        "every_ms", "start_ns",
                        "cron",    "tz",     "payload",     "key",      "content_type",
                        "headers", "missed", "max_catchup", NULL};
  PyObject *payload = Py_None, *headers = Py_None;
  uint32_t missed = 0;
  memset(s, 0, sizeof *s);
  if (!PyArg_ParseTupleAndKeywords(
          args, kw, fmt, kws, conv_str, name, conv_str, &s->cfg.topic, conv_str, &s->cfg.type,
          conv_u64, &s->cfg.every_ms, conv_i64, &s->cfg.start_ns, conv_str_opt, &s->cfg.cron,
          conv_str_opt, &s->cfg.tz, &payload, conv_str_opt, &s->cfg.key, conv_str_opt,
          &s->cfg.content_type, &headers, conv_u32, &missed, conv_u32, &s->cfg.max_catchup))
    return -1;
  s->cfg.missed = (engram_missed)missed;
  if (payload != Py_None) {
    if (PyObject_GetBuffer(payload, &s->payload, PyBUF_SIMPLE) < 0) goto fail;
    s->has_payload = 1;
    s->cfg.payload = s->payload.buf;
    s->cfg.payload_len = (size_t)s->payload.len;
  }
  if (headers != Py_None) {
    if (!PyDict_Check(headers)) {
      PyErr_Format(PyExc_TypeError, "headers must be a dict of str to str, got %.80s",
                   Py_TYPE(headers)->tp_name);
      goto fail;
    }
    s->keep = PyDict_Items(headers); /* a copy the caller cannot change under us */
    if (!s->keep) goto fail;
    Py_ssize_t n = PyList_GET_SIZE(s->keep);
    s->headers = PyMem_Calloc(n ? (size_t)n : 1, sizeof(engram_header));
    if (!s->headers) {
      PyErr_NoMemory();
      goto fail;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
      PyObject *kv = PyList_GET_ITEM(s->keep, i);
      if (!conv_str(PyTuple_GET_ITEM(kv, 0), &s->headers[i].name)) goto fail;
      if (!conv_str(PyTuple_GET_ITEM(kv, 1), &s->headers[i].value)) goto fail;
    }
    s->cfg.headers = s->headers;
    s->cfg.n_headers = (size_t)n;
  }
  return 0;
fail:
  schedin_clear(s);
  return -1;
}

static PyObject *Log_schedule_add(LogObject *self, PyObject *args, PyObject *kw) {
  schedin s;
  const char *name;
  int rc;
  char msg[MSG_MAX];
  if (schedin_fill(&s, &name, args, kw, "O&O&O&|O&O&O&O&OO&O&OO&O&:schedule_add") < 0) return NULL;
  if (enter(self)) {
    schedin_clear(&s);
    return NULL;
  }
  RUN(self, rc, msg, engram_schedule_add(self->log, name, &s.cfg));
  leave(self);
  schedin_clear(&s);
  return done(rc, msg);
}

/* schedule_set(...) -> 0 unchanged, 1 added, 2 replaced. */
static PyObject *Log_schedule_set(LogObject *self, PyObject *args, PyObject *kw) {
  schedin s;
  const char *name;
  int rc, changed = 0;
  char msg[MSG_MAX];
  if (schedin_fill(&s, &name, args, kw, "O&O&O&|O&O&O&O&OO&O&OO&O&:schedule_set") < 0) return NULL;
  if (enter(self)) {
    schedin_clear(&s);
    return NULL;
  }
  RUN(self, rc, msg, engram_schedule_set(self->log, name, &s.cfg, &changed));
  leave(self);
  schedin_clear(&s);
  if (rc < 0) return raise_code(rc, msg);
  return PyLong_FromLong(changed);
}

static PyObject *schedule_dict(const engram_schedule_info *i) {
  const engram_schedule_config *c = &i->config;
  PyObject *h = PyDict_New();
  for (size_t k = 0; h && k < c->n_headers; k++) {
    PyObject *v = str_or_none(c->headers[k].value);
    if (!v || PyDict_SetItemString(h, c->headers[k].name, v) < 0) Py_CLEAR(h);
    Py_XDECREF(v);
  }
  if (!h) return NULL;
  PyObject *d = Py_BuildValue(
      "{s:s,s:K,s:L,s:N,s:N,s:N,s:N,s:y#,s:N,s:N,s:N,s:I,s:I}", "name", i->name, "every_ms",
      (unsigned long long)c->every_ms, "start_ns", (long long)c->start_ns, "cron",
      str_or_none(c->cron && *c->cron ? c->cron : NULL), "tz", str_or_none(c->tz), "topic",
      str_or_none(c->topic), "type", str_or_none(c->type), "payload",
      c->payload ? (const char *)c->payload : "", (Py_ssize_t)c->payload_len, "key",
      str_or_none(c->key && *c->key ? c->key : NULL), "content_type",
      str_or_none(c->content_type && *c->content_type ? c->content_type : NULL), "headers", h,
      "missed", (unsigned int)c->missed, "max_catchup", (unsigned int)c->max_catchup);
  if (!d) return NULL;
#define X(type, name)                      \
  if (put_##type(d, #name, i->name) < 0) { \
    Py_DECREF(d);                          \
    return NULL;                           \
  }
  ENGRAM_SCHEDULE_INFO_FIELDS(X)
#undef X
  return d;
}

static PyObject *Log_schedule_get(LogObject *self, PyObject *args) {
  const char *name;
  engram_schedule_info *info = NULL;
  int rc;
  char msg[MSG_MAX];
  if (!PyArg_ParseTuple(args, "O&:schedule_get", conv_str, &name)) return NULL;
  if (enter(self)) return NULL;
  RUN(self, rc, msg, engram_schedule_get(self->log, name, &info));
  leave(self);
  if (rc < 0) return raise_code(rc, msg);
  PyObject *d = schedule_dict(info);
  engram_free(info);
  return d;
}

static PyObject *Log_schedule_list(LogObject *self, PyObject *unused) {
  engram_schedule_info *is = NULL;
  size_t n = 0;
  int rc;
  char msg[MSG_MAX];
  if (enter(self)) return NULL;
  RUN(self, rc, msg, engram_schedule_list(self->log, &is, &n));
  leave(self);
  if (rc < 0) return raise_code(rc, msg);
  PyObject *list = PyList_New((Py_ssize_t)n);
  for (size_t i = 0; list && i < n; i++) {
    PyObject *d = schedule_dict(&is[i]);
    if (!d) {
      Py_CLEAR(list);
      break;
    }
    PyList_SET_ITEM(list, (Py_ssize_t)i, d);
  }
  engram_free(is);
  return list;
}

typedef int (*schedule_op)(engram *, const char *);

static PyObject *schedule_apply(LogObject *self, PyObject *args, const char *fmt, schedule_op op) {
  const char *name;
  int rc;
  char msg[MSG_MAX];
  if (!PyArg_ParseTuple(args, fmt, conv_str, &name)) return NULL;
  if (enter(self)) return NULL;
  RUN(self, rc, msg, op(self->log, name));
  leave(self);
  return done(rc, msg);
}

static PyObject *Log_schedule_remove(LogObject *self, PyObject *args) {
  return schedule_apply(self, args, "O&:schedule_remove", engram_schedule_remove);
}

static PyObject *Log_schedule_pause(LogObject *self, PyObject *args) {
  return schedule_apply(self, args, "O&:schedule_pause", engram_schedule_pause);
}

static PyObject *Log_schedule_resume(LogObject *self, PyObject *args) {
  return schedule_apply(self, args, "O&:schedule_resume", engram_schedule_resume);
}

static PyObject *Log_schedule_run_now(LogObject *self, PyObject *args) {
  const char *name;
  uint64_t off = 0;
  int rc;
  char msg[MSG_MAX];
  if (!PyArg_ParseTuple(args, "O&:schedule_run_now", conv_str, &name)) return NULL;
  if (enter(self)) return NULL;
  RUN(self, rc, msg, engram_schedule_run_now(self->log, name, &off));
  leave(self);
  if (rc < 0) return raise_code(rc, msg);
  return PyLong_FromUnsignedLongLong(off);
}

static PyObject *Log_schedule_tick(LogObject *self, PyObject *args) {
  int64_t now = 0;
  engram_schedule_tick_report r;
  int rc;
  char msg[MSG_MAX];
  memset(&r, 0, sizeof r);
  if (!PyArg_ParseTuple(args, "|O&:schedule_tick", conv_i64, &now)) return NULL;
  if (enter(self)) return NULL;
  RUN(self, rc, msg, engram_schedule_tick(self->log, now, &r));
  leave(self);
  if (rc < 0) return raise_code(rc, msg);
  return Py_BuildValue("{s:K,s:K,s:K,s:L,s:s}", "fired", (unsigned long long)r.fired, "skipped",
                       (unsigned long long)r.skipped, "failed", (unsigned long long)r.failed,
                       "next_due_ns", (long long)r.next_due_ns, "first_error", r.first_error);
}

/* ---------------------------------------------------------------------------------
 * Transactions: acks and appends committed together.
 * ------------------------------------------------------------------------------ */
typedef struct {
  PyObject_HEAD LogObject *owner;
  engram_txn *txn;
  uint64_t **offsets; /* one slot per queued append, filled at commit */
  size_t n, cap;
  PyObject *keep; /* event specs and results whose memory the queued items use */
} TxnObject;

static PyTypeObject TxnType;

static void txn_release(TxnObject *t) {
  for (size_t i = 0; i < t->n; i++) PyMem_Free(t->offsets[i]);
  PyMem_Free(t->offsets);
  t->offsets = NULL;
  t->n = t->cap = 0;
  if (t->owner) t->owner->txns--;
  Py_CLEAR(t->owner);
  Py_CLEAR(t->keep);
}

static void Txn_dealloc(TxnObject *t) {
  if (t->txn && t->owner && !t->owner->closed && t->owner->gen == fork_gen)
    engram_txn_abort(t->txn);
  t->txn = NULL;
  txn_release(t);
  PyObject_Free(t);
}

static PyObject *Log_txn_begin(LogObject *self, PyObject *unused) {
  engram_txn *txn = NULL;
  int rc;
  char msg[MSG_MAX];
  if (enter(self)) return NULL;
  RUN(self, rc, msg, engram_txn_begin(self->log, &txn));
  leave(self);
  if (rc < 0) return raise_code(rc, msg);
  TxnObject *t = PyObject_New(TxnObject, &TxnType);
  if (!t) {
    engram_txn_abort(txn);
    return NULL;
  }
  t->txn = txn;
  t->owner = (LogObject *)Py_NewRef(self);
  t->offsets = NULL;
  t->n = t->cap = 0;
  t->keep = PyList_New(0);
  self->txns++;
  if (!t->keep) {
    Py_DECREF(t);
    return NULL;
  }
  return (PyObject *)t;
}

static int txn_live(TxnObject *t) {
  if (!t->txn) {
    raise_code(ENGRAM_ECLOSED, "the transaction is already committed or aborted");
    return -1;
  }
  if (t->owner->closed || t->owner->gen != fork_gen) {
    raise_code(ENGRAM_ECLOSED, "the log handle is closed");
    return -1;
  }
  return 0;
}

static PyObject *Txn_ack(TxnObject *t, PyObject *args) {
  const char *topic, *group;
  uint64_t off;
  uint32_t attempt;
  PyObject *result = Py_None;
  Py_buffer rb = {0};
  if (txn_live(t)) return NULL;
  if (!PyArg_ParseTuple(args, "O&O&O&O&|O:ack", conv_str, &topic, conv_str, &group, conv_u64, &off,
                        conv_u32, &attempt, &result))
    return NULL;
  if (result != Py_None && PyObject_GetBuffer(result, &rb, PyBUF_SIMPLE) < 0) return NULL;
  int rc = engram_txn_ack(t->txn, topic, group, off, attempt, rb.obj ? rb.buf : NULL,
                          rb.obj ? (size_t)rb.len : 0);
  if (rb.obj) PyBuffer_Release(&rb);
  return done(rc, engram_errmsg(t->owner->log));
}

static PyObject *Txn_append(TxnObject *t, PyObject *args) {
  const char *topic;
  PyObject *spec;
  evin e;
  if (txn_live(t)) return NULL;
  if (!PyArg_ParseTuple(args, "O&O:append", conv_str, &topic, &spec)) return NULL;
  if (t->n == t->cap) {
    size_t cap = t->cap ? t->cap * 2 : 8;
    uint64_t **o = PyMem_Realloc(t->offsets, cap * sizeof *o);
    if (!o) return PyErr_NoMemory();
    t->offsets = o;
    t->cap = cap;
  }
  uint64_t *slot = PyMem_Calloc(1, sizeof *slot);
  if (!slot) return PyErr_NoMemory();
  if (evin_fill(&e, spec) < 0) {
    PyMem_Free(slot);
    return NULL;
  }
  int rc = engram_txn_append(t->txn, topic, &e.ev, slot);
  evin_clear(&e); /* the event is copied by engram_txn_append */
  if (rc < 0) {
    PyMem_Free(slot);
    return raise_code(rc, engram_errmsg(t->owner->log));
  }
  t->offsets[t->n++] = slot;
  return PyLong_FromSize_t(t->n - 1);
}

static PyObject *Txn_commit(TxnObject *t, PyObject *unused) {
  int rc;
  char msg[MSG_MAX];
  LogObject *self = t->owner;
  if (txn_live(t)) return NULL;
  engram_txn *txn = t->txn;
  t->txn = NULL;
  if (enter(self)) {
    engram_txn_abort(txn);
    txn_release(t);
    return NULL;
  }
  RUN(self, rc, msg, engram_txn_commit(txn));
  leave(self);
  PyObject *out = NULL;
  if (rc < 0)
    raise_code(rc, msg);
  else {
    out = PyList_New((Py_ssize_t)t->n);
    for (size_t i = 0; out && i < t->n; i++) {
      PyObject *v = PyLong_FromUnsignedLongLong(*t->offsets[i]);
      if (!v)
        Py_CLEAR(out);
      else
        PyList_SET_ITEM(out, (Py_ssize_t)i, v);
    }
  }
  txn_release(t);
  return out;
}

static PyObject *Txn_abort(TxnObject *t, PyObject *unused) {
  if (t->txn && t->owner && !t->owner->closed && t->owner->gen == fork_gen)
    engram_txn_abort(t->txn);
  t->txn = NULL;
  txn_release(t);
  Py_RETURN_NONE;
}

static PyMethodDef Txn_methods[] = {
    {"ack", (PyCFunction)Txn_ack, METH_VARARGS, "ack(topic, group, offset, attempt, result=None)"},
    {"append", (PyCFunction)Txn_append, METH_VARARGS,
     "append(topic, spec) -> index of the append in commit()'s result"},
    {"commit", (PyCFunction)Txn_commit, METH_NOARGS, "commit() -> offsets of the appends"},
    {"abort", (PyCFunction)Txn_abort, METH_NOARGS, "abort()"},
    {NULL}};

static PyTypeObject TxnType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "engram._engram.Txn",
    .tp_basicsize = sizeof(TxnObject),
    .tp_dealloc = (destructor)Txn_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A buffered transaction over one log handle.",
    .tp_methods = Txn_methods,
};

/* ---------------------------------------------------------------------------------
 * Module functions.
 * ------------------------------------------------------------------------------ */
/* engram_server_info_get: a dict by the field names of ENGRAM_SERVER_INFO_FIELDS. */
static PyObject *Log_server_info(LogObject *self, PyObject *unused) {
  int rc;
  char msg[MSG_MAX];
  engram_server_info in;
  memset(&in, 0, sizeof in);
  if (enter(self)) return NULL;
  RUN(self, rc, msg, engram_server_info_get(self->log, &in));
  leave(self);
  if (rc < 0) return raise_code(rc, msg);
  PyObject *d = Py_BuildValue("{s:s}", "version", in.version);
  if (!d) return NULL;
#define X(type, name)                      \
  if (put_##type(d, #name, in.name) < 0) { \
    Py_DECREF(d);                          \
    return NULL;                           \
  }
  ENGRAM_SERVER_INFO_FIELDS(X)
#undef X
  return d;
}

/* engram_log_info_get: {"id": str, "created_ns": int, "format_version": int}. */
static PyObject *Log_log_info(LogObject *self, PyObject *unused) {
  int rc;
  char msg[MSG_MAX];
  engram_log_info in;
  memset(&in, 0, sizeof in);
  if (enter(self)) return NULL;
  RUN(self, rc, msg, engram_log_info_get(self->log, &in));
  leave(self);
  if (rc < 0) return raise_code(rc, msg);
  return Py_BuildValue("{s:s,s:L,s:I}", "id", in.id, "created_ns", (long long)in.created_ns,
                       "format_version", (unsigned int)in.format_version);
}

/* engram_space_get: a dict by the field names of ENGRAM_SPACE_FIELDS. */
static PyObject *Log_space(LogObject *self, PyObject *unused) {
  int rc;
  char msg[MSG_MAX];
  engram_space in;
  memset(&in, 0, sizeof in);
  if (enter(self)) return NULL;
  RUN(self, rc, msg, engram_space_get(self->log, &in));
  leave(self);
  if (rc < 0) return raise_code(rc, msg);
  PyObject *d = PyDict_New();
  if (!d) return NULL;
#define X(type, name)                      \
  if (put_##type(d, #name, in.name) < 0) { \
    Py_DECREF(d);                          \
    return NULL;                           \
  }
  ENGRAM_SPACE_FIELDS(X)
#undef X
  return d;
}

static PyMethodDef Log_methods[] = {
    {"close", (PyCFunction)Log_close, METH_NOARGS, "close()"},
    {"sync", (PyCFunction)Log_sync, METH_NOARGS, "sync()"},
    {"backup", (PyCFunction)Log_backup, METH_VARARGS, "backup(dest)"},
    {"verify", (PyCFunction)Log_verify, METH_NOARGS, "verify() -> dict"},
    {"set_progress", (PyCFunction)Log_set_progress, METH_O,
     "set_progress(fn) -- fn(phase, done, total) or None"},
    {"server_info", (PyCFunction)Log_server_info, METH_NOARGS, "server_info() -> dict"},
    {"log_info", (PyCFunction)Log_log_info, METH_NOARGS,
     "log_info() -> dict: id, created_ns, format_version"},
    {"space", (PyCFunction)Log_space, METH_NOARGS,
     "space() -> dict: file_bytes, used_bytes, free_bytes, map_bytes"},
    {"topic_create", (PyCFunction)(void (*)(void))Log_topic_create, METH_VARARGS | METH_KEYWORDS,
     "topic_create(topic, compress_threshold=0, max_payload=0, dict_train_after=0, flags=0, "
     "max_age_ms=0, max_bytes=0, max_events=0, tombstone_ttl_ms=0, tombstone_type='')"},
    {"topic_info", (PyCFunction)Log_topic_info, METH_VARARGS, "topic_info(topic) -> dict"},
    {"topic_set", (PyCFunction)(void (*)(void))Log_topic_set, METH_VARARGS | METH_KEYWORDS,
     "topic_set(topic, compress_threshold=0, max_payload=0, dict_train_after=0, flags=0, "
     "max_age_ms=0, max_bytes=0, max_events=0, tombstone_ttl_ms=0, tombstone_type=''): replaces "
     "the "
     "topic's config"},
    {"compact", (PyCFunction)Log_compact, METH_VARARGS,
     "compact(topic=None) -> dict: applies retention limits now"},
    {"topic_list", (PyCFunction)Log_topic_list, METH_NOARGS, "topic_list() -> list of dict"},
    {"topic_drop", (PyCFunction)Log_topic_drop, METH_VARARGS, "topic_drop(topic)"},
    {"topic_train_dict", (PyCFunction)Log_topic_train_dict, METH_VARARGS,
     "topic_train_dict(topic) -> dictionary id"},
    {"append", (PyCFunction)Log_append, METH_VARARGS, "append(topic, spec) -> (offset, duplicate)"},
    {"append_batch", (PyCFunction)Log_append_batch, METH_VARARGS,
     "append_batch(topic, specs) -> list of (offset, duplicate)"},
    {"append_async", (PyCFunction)Log_append_async, METH_VARARGS,
     "append_async(topic, spec, on_done=None)"},
    {"append_wait", (PyCFunction)Log_append_wait, METH_NOARGS, "append_wait()"},
    {"read", (PyCFunction)Log_read, METH_VARARGS, "read(topic, offset) -> event tuple"},
    {"read_range", (PyCFunction)Log_read_range, METH_VARARGS,
     "read_range(topic, from, max, covered=False) -> list of event tuples; with covered, "
     "(list, from, next, removed): the offsets [from, next) the read covered, removed of "
     "them by key compaction"},
    {"group_create", (PyCFunction)(void (*)(void))Log_group_create, METH_VARARGS | METH_KEYWORDS,
     "group_create(topic, group, filters=None, start=0, start_offset=0, start_time_ns=0, "
     "ack_wait_ms=0, max_deliver=0, backoff_ms=None, result_ttl_ms=0, flags=0)"},
    {"group_info", (PyCFunction)Log_group_info, METH_VARARGS, "group_info(topic, group) -> dict"},
    {"group_list", (PyCFunction)Log_group_list, METH_VARARGS, "group_list(topic=None)"},
    {"group_delete", (PyCFunction)Log_group_delete, METH_VARARGS, "group_delete(topic, group)"},
    {"group_reset", (PyCFunction)Log_group_reset, METH_VARARGS,
     "group_reset(topic, group, to, offset=0, time_ns=0)"},
    {"fetch", (PyCFunction)Log_fetch, METH_VARARGS,
     "fetch(topic, group, consumer, max, wait_ms) -> list of event tuples"},
    {"ack", (PyCFunction)Log_ack, METH_VARARGS, "ack(topic, group, offset, attempt, result=None)"},
    {"ack_many", (PyCFunction)Log_ack_many, METH_VARARGS,
     "ack_many(topic, group, items) -> list of codes"},
    {"ack_fetch", (PyCFunction)Log_ack_fetch, METH_VARARGS,
     "ack_fetch(topic, group, consumer, items, max, wait_ms) -> list of events (all or nothing; "
     "a failure's exception has `codes`)"},
    {"nack", (PyCFunction)Log_nack, METH_VARARGS,
     "nack(topic, group, offset, attempt, delay_ms=-1, error=None)"},
    {"reject", (PyCFunction)Log_reject, METH_VARARGS,
     "reject(topic, group, offset, attempt, reason=None)"},
    {"extend", (PyCFunction)Log_extend, METH_VARARGS,
     "extend(topic, group, offset, attempt, ms=0)"},
    {"cancel", (PyCFunction)Log_cancel, METH_VARARGS, "cancel(topic, group, offset)"},
    {"status", (PyCFunction)Log_status, METH_VARARGS, "status(topic, group, offset) -> dict"},
    {"dlq_list", (PyCFunction)Log_dlq_list, METH_VARARGS,
     "dlq_list(topic, group, from=0, max=0) -> list of dict"},
    {"dlq_purge", (PyCFunction)Log_dlq_purge, METH_VARARGS,
     "dlq_purge(topic, group, offsets=None) -> count"},
    {"dlq_redrive", (PyCFunction)Log_dlq_redrive, METH_VARARGS,
     "dlq_redrive(topic, group, offsets=None) -> count"},
    {"txn_begin", (PyCFunction)Log_txn_begin, METH_NOARGS, "txn_begin() -> Txn"},
    {"worker_heartbeat", (PyCFunction)Log_worker_heartbeat, METH_VARARGS,
     "worker_heartbeat(name, host, pid, concurrency, handled, failed, groups, running, "
     "started_ns)"},
    {"worker_list", (PyCFunction)Log_worker_list, METH_VARARGS,
     "worker_list(lost_after_ms=0) -> list of dict"},
    {"rate_list", (PyCFunction)Log_rate_list, METH_VARARGS,
     "rate_list(topic=None) -> list of dict: per second over 1, 5, 15 minutes"},
    {"worker_forget", (PyCFunction)Log_worker_forget, METH_VARARGS, "worker_forget(name)"},
    {"schedule_add", (PyCFunction)(void (*)(void))Log_schedule_add, METH_VARARGS | METH_KEYWORDS,
     "schedule_add(name, topic, type, every_ms=0, start_ns=0, cron=None, tz=None, payload=None, "
     "key=None, content_type=None, headers=None, missed=0, max_catchup=0)"},
    {"schedule_set", (PyCFunction)(void (*)(void))Log_schedule_set, METH_VARARGS | METH_KEYWORDS,
     "schedule_set(as schedule_add) -> 0 unchanged, 1 added, 2 replaced"},
    {"schedule_get", (PyCFunction)Log_schedule_get, METH_VARARGS, "schedule_get(name) -> dict"},
    {"schedule_list", (PyCFunction)Log_schedule_list, METH_NOARGS,
     "schedule_list() -> list of dict"},
    {"schedule_remove", (PyCFunction)Log_schedule_remove, METH_VARARGS, "schedule_remove(name)"},
    {"schedule_pause", (PyCFunction)Log_schedule_pause, METH_VARARGS, "schedule_pause(name)"},
    {"schedule_resume", (PyCFunction)Log_schedule_resume, METH_VARARGS, "schedule_resume(name)"},
    {"schedule_run_now", (PyCFunction)Log_schedule_run_now, METH_VARARGS,
     "schedule_run_now(name) -> offset"},
    {"schedule_tick", (PyCFunction)Log_schedule_tick, METH_VARARGS,
     "schedule_tick(now_ns=0) -> dict (fired, skipped, failed, next_due_ns, first_error)"},
    {NULL}};

static PyGetSetDef Log_getset[] = {
    {"closed", (getter)Log_get_closed, NULL, "True once closed (or inherited through fork)", NULL},
    {NULL}};

static PyTypeObject LogType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "engram._engram.Log",
    .tp_basicsize = sizeof(LogObject),
    .tp_dealloc = (destructor)Log_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One engram handle (embedded or remote); see engram.Log for the public API.",
    .tp_methods = Log_methods,
    .tp_getset = Log_getset,
    .tp_weaklistoffset = offsetof(LogObject, weakrefs),
};

static PyObject *mod_open(PyObject *m, PyObject *args, PyObject *kw) {
  static char *kws[] = {
      "path",  "durability", "map_size", "max_topics", "dedup_window_ms", "flush_interval_ms",
      "flags", NULL};
  const char *path;
  uint32_t durability = 0;
  engram_options o;
  memset(&o, 0, sizeof o);
  engram *h = NULL;
  int rc;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O&|O&O&O&O&O&O&:open", kws, conv_str, &path, conv_u32,
                                   &durability, conv_u64, &o.map_size, conv_u32, &o.max_topics,
                                   conv_u64, &o.dedup_window_ms, conv_u32, &o.flush_interval_ms,
                                   conv_u32, &o.flags))
    return NULL;
  if (durability > ENGRAM_DURABILITY_ASYNC)
    return raise_code(ENGRAM_EINVAL, "open: durability must be SYNC, NOMETASYNC or ASYNC");
  o.durability = (engram_durability)durability;
  Py_BEGIN_ALLOW_THREADS rc = engram_open(path, &o, &h);
  Py_END_ALLOW_THREADS if (rc < 0) return raise_unopened(rc, "open", path);
  return (PyObject *)log_new(h);
}

static PyObject *mod_connect(PyObject *m, PyObject *args, PyObject *kw) {
  static char *kws[] = {"endpoint",   "timeout_ms",      "server_key", "public_key",
                        "secret_key", "pipeline_window", NULL};
  const char *endpoint;
  engram_connect_options o;
  memset(&o, 0, sizeof o);
  engram *h = NULL;
  int rc;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O&|O&O&O&O&O&:connect", kws, conv_str, &endpoint,
                                   conv_u32, &o.timeout_ms, conv_str_opt, &o.server_key,
                                   conv_str_opt, &o.public_key, conv_str_opt, &o.secret_key,
                                   conv_u32, &o.pipeline_window))
    return NULL;
  Py_BEGIN_ALLOW_THREADS rc = engram_connect(endpoint, &o, &h);
  Py_END_ALLOW_THREADS if (rc < 0) return raise_unopened(rc, "connect", endpoint);
  return (PyObject *)log_new(h);
}

static PyObject *mod_strerror(PyObject *m, PyObject *args) {
  int code;
  if (!PyArg_ParseTuple(args, "i:strerror", &code)) return NULL;
  return PyUnicode_FromString(engram_strerror(code));
}

static PyObject *mod_errname(PyObject *m, PyObject *args) {
  int code;
  if (!PyArg_ParseTuple(args, "i:errname", &code)) return NULL;
  return PyUnicode_FromString(engram_errname(code));
}

static PyObject *mod_keygen(PyObject *m, PyObject *unused) {
  char pub[41], sec[41];
  int rc = engram_keygen(pub, sec);
  if (rc < 0) return raise_code(rc, NULL);
  return Py_BuildValue("(ss)", pub, sec);
}

/* engram_reclaim's progress, handed to a Python callable: called on the thread that
 * runs the reclaim, which released the GIL. An exception the callable raises is kept and
 * raised once the reclaim returns (the reclaim itself runs on). */
struct py_progress {
  PyObject *fn;
  PyObject *type, *value, *tb; /* the first exception the callable raised; type NULL = none */
};

static void py_progress_cb(void *ctx, const char *phase, uint64_t done, uint64_t total) {
  struct py_progress *p = ctx;
  PyGILState_STATE g = PyGILState_Ensure();
  if (!p->type) {
    PyObject *r = PyObject_CallFunction(p->fn, "sKK", phase, (unsigned long long)done,
                                        (unsigned long long)total);
    if (r)
      Py_DECREF(r);
    else
      PyErr_Fetch(&p->type, &p->value, &p->tb);
  }
  PyGILState_Release(g);
}

static PyObject *mod_reclaim(PyObject *m, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"path", "progress", NULL};
  const char *path;
  PyObject *progress = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O&|O:reclaim", kwlist, conv_str, &path, &progress))
    return NULL;
  if (progress != Py_None && !PyCallable_Check(progress)) {
    PyErr_SetString(PyExc_TypeError, "progress must be callable or None");
    return NULL;
  }
  struct py_progress pp = {progress, NULL, NULL, NULL};
  engram_reclaim_options o = {.progress = progress != Py_None ? py_progress_cb : NULL,
                              .progress_ctx = &pp};
  engram_reclaim_report r;
  char msg[MSG_MAX] = "";
  int rc;
  Py_BEGIN_ALLOW_THREADS rc = engram_reclaim(path, &o, &r);
  if (rc < 0) snprintf(msg, sizeof msg, "%s", engram_errmsg(NULL));
  Py_END_ALLOW_THREADS if (pp.type) {
    PyErr_Restore(pp.type, pp.value, pp.tb);
    return NULL;
  }
  if (rc < 0) return raise_code(rc, msg);
  return Py_BuildValue("{s:K,s:K}", "bytes_before", (unsigned long long)r.bytes_before,
                       "bytes_after", (unsigned long long)r.bytes_after);
}

static PyObject *mod_register_errors(PyObject *m, PyObject *args) {
  PyObject *base, *types;
  if (!PyArg_ParseTuple(args, "OO!:_register_errors", &base, &PyDict_Type, &types)) return NULL;
  Py_XSETREF(error_base, Py_NewRef(base));
  Py_XSETREF(error_types, Py_NewRef(types));
  Py_RETURN_NONE;
}

static PyMethodDef mod_methods[] = {
    {"open", (PyCFunction)(void (*)(void))mod_open, METH_VARARGS | METH_KEYWORDS,
     "open(path, durability=0, map_size=0, max_topics=0, dedup_window_ms=0, "
     "flush_interval_ms=0, flags=0) -> Log"},
    {"connect", (PyCFunction)(void (*)(void))mod_connect, METH_VARARGS | METH_KEYWORDS,
     "connect(endpoint, timeout_ms=0, server_key=None, public_key=None, secret_key=None, "
     "pipeline_window=0) -> Log"},
    {"strerror", mod_strerror, METH_VARARGS, "strerror(code) -> str"},
    {"errname", mod_errname, METH_VARARGS, "errname(code) -> str"},
    {"keygen", mod_keygen, METH_NOARGS, "keygen() -> (public_key, secret_key)"},
    {"reclaim", (PyCFunction)(void (*)(void))mod_reclaim, METH_VARARGS | METH_KEYWORDS,
     "reclaim(path, progress=None) -> {bytes_before, bytes_after}"},
    {"_register_errors", mod_register_errors, METH_VARARGS, "_register_errors(base, types)"},
    {NULL}};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "_engram",
                                    "engram.h as a CPython extension; use the engram package.", -1,
                                    mod_methods};

PyMODINIT_FUNC PyInit__engram(void) {
  static int atfork_done;
  if (!atfork_done) {
    pthread_atfork(NULL, NULL, after_fork_child);
    atfork_done = 1;
  }
  if (PyType_Ready(&LogType) < 0 || PyType_Ready(&TxnType) < 0) return NULL;
  PyObject *m = PyModule_Create(&moddef);
  if (!m) return NULL;
  Py_INCREF(&LogType);
  Py_INCREF(&TxnType);
  if (PyModule_AddObject(m, "Log", (PyObject *)&LogType) < 0 ||
      PyModule_AddObject(m, "Txn", (PyObject *)&TxnType) < 0)
    goto fail;
#define INT(name, v) \
  if (PyModule_AddIntConstant(m, name, (long)(v)) < 0) goto fail
  INT("VERSION_MAJOR", ENGRAM_VERSION_MAJOR);
  INT("VERSION_MINOR", ENGRAM_VERSION_MINOR);
  INT("VERSION_PATCH", ENGRAM_VERSION_PATCH);
  INT("FORMAT_VERSION", ENGRAM_FORMAT_VERSION);
  INT("PROTOCOL_VERSION", ENGRAM_PROTOCOL_VERSION);
  INT("MAX_NAME", ENGRAM_MAX_NAME);
  INT("MAX_TYPE", ENGRAM_MAX_TYPE);
  INT("MAX_KEY", ENGRAM_MAX_KEY);
  INT("MAX_CONTENT_TYPE", ENGRAM_MAX_CONTENT_TYPE);
  INT("MAX_HEADERS", ENGRAM_MAX_HEADERS);
  INT("MAX_HEADER_BYTES", ENGRAM_MAX_HEADER_BYTES);
  INT("MAX_FILTERS", ENGRAM_MAX_FILTERS);
  INT("MAX_BACKOFF", ENGRAM_MAX_BACKOFF);
  INT("MAX_PAYLOAD_LIMIT", ENGRAM_MAX_PAYLOAD_LIMIT);
  INT("MAX_FETCH_WAIT_MS", ENGRAM_MAX_FETCH_WAIT_MS);
  INT("MAX_RESULT", ENGRAM_MAX_RESULT);
  INT("DURABILITY_SYNC", ENGRAM_DURABILITY_SYNC);
  INT("DURABILITY_NOMETASYNC", ENGRAM_DURABILITY_NOMETASYNC);
  INT("DURABILITY_ASYNC", ENGRAM_DURABILITY_ASYNC);
  INT("OPEN_NOCREATE", ENGRAM_OPEN_NOCREATE);
  INT("OPEN_RDONLY", ENGRAM_OPEN_RDONLY);
  INT("TOPIC_NO_DICT", ENGRAM_TOPIC_NO_DICT);
  INT("TOPIC_RETAIN_FORCE", ENGRAM_TOPIC_RETAIN_FORCE);
  INT("TOPIC_COMPACT_KEY", ENGRAM_TOPIC_COMPACT_KEY);
  INT("EVENT_TOMBSTONE", ENGRAM_EVENT_TOMBSTONE);
  INT("EVENT_TIMESTAMP", ENGRAM_EVENT_TIMESTAMP);
  INT("GROUP_KEY_ORDERED", ENGRAM_GROUP_KEY_ORDERED);
  INT("START_EARLIEST", ENGRAM_START_EARLIEST);
  INT("START_LATEST", ENGRAM_START_LATEST);
  INT("START_OFFSET", ENGRAM_START_OFFSET);
  INT("START_TIME", ENGRAM_START_TIME);
  INT("STATE_PENDING", ENGRAM_STATE_PENDING);
  INT("STATE_IN_FLIGHT", ENGRAM_STATE_IN_FLIGHT);
  INT("STATE_RETRYING", ENGRAM_STATE_RETRYING);
  INT("STATE_DONE", ENGRAM_STATE_DONE);
  INT("STATE_DEAD", ENGRAM_STATE_DEAD);
  INT("STATE_SKIPPED", ENGRAM_STATE_SKIPPED);
  INT("MISSED_ONCE", ENGRAM_MISSED_ONCE);
  INT("MISSED_SKIP", ENGRAM_MISSED_SKIP);
  INT("MISSED_ALL", ENGRAM_MISSED_ALL);
  INT("MIN_SCHEDULE_EVERY_MS", ENGRAM_MIN_SCHEDULE_EVERY_MS);
  INT("MAX_CATCHUP", ENGRAM_MAX_CATCHUP);
#undef INT
  if (PyModule_AddStringConstant(m, "VERSION", ENGRAM_VERSION_STRING) < 0) goto fail;
  return m;
fail:
  Py_DECREF(m);
  return NULL;
}
