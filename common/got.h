/* got.h — this process's id without a system call, and redirecting a shared library's
 * imports (its GOT entries) to functions of engram's. */
#ifndef ENGRAM_GOT_H
#define ENGRAM_GOT_H

#include <sys/types.h>

/* getpid() without the system call getpid() makes each time: read once, renewed in the
 * child of every fork (pthread_atfork). */
pid_t self_pid(void);

/* Calls each(name, slot, ctx) for every function the shared object holding `addr`
 * imports through its PLT, with the address of its GOT entry. Returns 0, or -1 when
 * `addr` is not in a shared object whose file name contains `lib` (linked statically,
 * say) or this architecture's relocations are unknown. */
int got_each(const void *addr, const char *lib,
             void (*each)(const char *name, void **slot, void *ctx), void *ctx);
/* Stores values[i] in slots[i] (n entries, NULL slots skipped), making the pages writable
 * for the moment; a slot in the RELRO segment is read-only again after. Returns 0, or -1
 * when a page could not be made writable (then nothing was changed). */
int got_set(void **const *slots, void *const *values, int n);

#endif
