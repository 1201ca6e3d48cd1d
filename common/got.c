/* got.c — see got.h. */
#include "common/got.h"

#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static pid_t pid;
static pthread_once_t pid_once = PTHREAD_ONCE_INIT;

static void pid_renew(void) { __atomic_store_n(&pid, getpid(), __ATOMIC_RELAXED); }

static void pid_init(void) {
  pid_renew();
  pthread_atfork(NULL, NULL, pid_renew);
}

pid_t self_pid(void) {
  pthread_once(&pid_once, pid_init);
  return __atomic_load_n(&pid, __ATOMIC_RELAXED);
}

#if defined(__x86_64__)
#define GOT_JUMP_SLOT R_X86_64_JUMP_SLOT
#elif defined(__aarch64__)
#define GOT_JUMP_SLOT R_AARCH64_JUMP_SLOT
#endif

int got_each(const void *addr, const char *lib,
             void (*each)(const char *name, void **slot, void *ctx), void *ctx) {
#ifdef GOT_JUMP_SLOT
  Dl_info di;
  struct link_map *lm = NULL;
  if (!dladdr1(addr, &di, (void **)&lm, RTLD_DL_LINKMAP) || !lm) return -1;
  if (!di.dli_fname || !strstr(di.dli_fname, lib)) return -1;
  ElfW(Addr) base = lm->l_addr;
  const ElfW(Sym) *symtab = NULL;
  const char *strtab = NULL;
  const ElfW(Rela) *rel = NULL;
  size_t relsz = 0;
  for (const ElfW(Dyn) *d = lm->l_ld; d->d_tag != DT_NULL; d++) {
    ElfW(Addr) p = d->d_un.d_ptr;
    if (d->d_tag == DT_SYMTAB || d->d_tag == DT_STRTAB || d->d_tag == DT_JMPREL)
      if (p < base) p += base; /* not every dynamic linker relocates these */
    if (d->d_tag == DT_SYMTAB) symtab = (const void *)p;
    if (d->d_tag == DT_STRTAB) strtab = (const void *)p;
    if (d->d_tag == DT_JMPREL) rel = (const void *)p;
    if (d->d_tag == DT_PLTRELSZ) relsz = d->d_un.d_val;
  }
  if (!symtab || !strtab || !rel) return -1;
  for (size_t i = 0; i < relsz / sizeof *rel; i++) {
    if (ELF64_R_TYPE(rel[i].r_info) != GOT_JUMP_SLOT) continue;
    each(strtab + symtab[ELF64_R_SYM(rel[i].r_info)].st_name, (void **)(base + rel[i].r_offset),
         ctx);
  }
  return 0;
#else
  (void)addr, (void)lib, (void)each, (void)ctx;
  return -1;
#endif
}

struct relro {
  uintptr_t lo, hi;
  const void *slot;
};

/* Finds the RELRO segment of the object whose mapping holds f->slot. */
static int relro_cb(struct dl_phdr_info *info, size_t size, void *arg) {
  (void)size;
  struct relro *f = arg;
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    if (ph->p_type != PT_GNU_RELRO) continue;
    uintptr_t lo = (uintptr_t)(info->dlpi_addr + ph->p_vaddr), at = (uintptr_t)f->slot;
    if (at >= lo && at < lo + ph->p_memsz) {
      f->lo = lo;
      f->hi = lo + ph->p_memsz;
      return 1;
    }
  }
  return 0;
}

int got_set(void **const *slots, void *const *values, int n) {
  long pg = sysconf(_SC_PAGESIZE);
  for (int i = 0; i < n; i++) {
    if (!slots[i]) continue;
    uintptr_t a = (uintptr_t)slots[i] & ~(uintptr_t)(pg - 1);
    if (mprotect((void *)a, (size_t)pg, PROT_READ | PROT_WRITE) < 0) return -1;
  }
  for (int i = 0; i < n; i++)
    if (slots[i]) __atomic_store_n(slots[i], values[i], __ATOMIC_RELEASE);
  for (int i = 0; i < n; i++) {
    if (!slots[i]) continue;
    struct relro f = {0, 0, slots[i]};
    dl_iterate_phdr(relro_cb, &f);
    if (f.hi) mprotect((void *)((uintptr_t)slots[i] & ~(uintptr_t)(pg - 1)), (size_t)pg, PROT_READ);
  }
  return 0;
}
