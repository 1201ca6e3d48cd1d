/* errors.c — the one table of engram error codes, their names and descriptions. */
#include "common/common.h"
#include "engram.h"

struct errdesc {
  int code;
  const char *name;
  const char *text;
};

static const struct errdesc table[] = {
    {ENGRAM_OK, "ENGRAM_OK", "success"},
    {ENGRAM_EINVAL, "ENGRAM_EINVAL", "invalid argument"},
    {ENGRAM_ENOTFOUND, "ENGRAM_ENOTFOUND", "not found"},
    {ENGRAM_EEXIST, "ENGRAM_EEXIST", "already exists"},
    {ENGRAM_ENOMEM, "ENGRAM_ENOMEM", "out of memory"},
    {ENGRAM_EIO, "ENGRAM_EIO", "I/O error"},
    {ENGRAM_ECORRUPT, "ENGRAM_ECORRUPT", "stored record is damaged"},
    {ENGRAM_ENOSPC, "ENGRAM_ENOSPC", "no space left on device"},
    {ENGRAM_ETOOBIG, "ENGRAM_ETOOBIG", "over the size limit"},
    {ENGRAM_EVERSION, "ENGRAM_EVERSION", "unsupported format or protocol version"},
    {ENGRAM_ELIMIT, "ENGRAM_ELIMIT", "configured limit reached"},
    {ENGRAM_ESTALE, "ENGRAM_ESTALE", "stale lease: the event was delivered again since"},
    {ENGRAM_ENOTLEASED, "ENGRAM_ENOTLEASED", "event was never delivered to this group"},
    {ENGRAM_EALREADY, "ENGRAM_EALREADY", "event is already finished for this group"},
    {ENGRAM_EDEAD, "ENGRAM_EDEAD", "event is in the dead-letter queue"},
    {ENGRAM_EBUSY, "ENGRAM_EBUSY", "resource busy"},
    {ENGRAM_ETIMEDOUT, "ENGRAM_ETIMEDOUT", "timed out"},
    {ENGRAM_ECLOSED, "ENGRAM_ECLOSED", "handle or connection closed"},
    {ENGRAM_EPROTO, "ENGRAM_EPROTO", "protocol error"},
    {ENGRAM_ECONN, "ENGRAM_ECONN", "cannot connect"},
    {ENGRAM_EDENIED, "ENGRAM_EDENIED", "access denied"},
    {ENGRAM_ENOTSUP, "ENGRAM_ENOTSUP", "not supported"},
    {ENGRAM_EINTERNAL, "ENGRAM_EINTERNAL", "internal error"},
};

static const struct errdesc *find(int code) {
  for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
    if (table[i].code == code) return &table[i];
  return NULL;
}

const char *engram_strerror(int code) {
  const struct errdesc *d = find(code);
  return d ? d->text : "unknown error";
}

int err_public(int code) { return code >= 0 || find(code) ? code : ENGRAM_EINTERNAL; }

const char *engram_errname(int code) {
  const struct errdesc *d = find(code);
  return d ? d->name : "ENGRAM_E?";
}
