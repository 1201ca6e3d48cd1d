# engram — build, test, bench, install. GNU make; no other build system.
#   make deps        install the Debian packages engram needs (idempotent; root or sudo)
#   make             library (build/libengram.a, build/libengram.so.X.Y.Z and its links),
#                    CLI (build/engram) and the C examples (build/examples/)
#                    (only engram_* names are visible in either library: see "Visibility")
#   make run         builds and runs the main job on ./engram-data
#   make test        builds and runs every test (SAN=1: under ASan + UBSan)
#   make tsan        the commit path, groups and the daemon under ThreadSanitizer
#   make mirrortest  the NATS mirror's real-server test with 100,000 events
#   make bench       the benchmark suite (see docs/benchmarks.md)
#   make install     PREFIX=/usr/local DESTDIR= (runs ldconfig when root installs to the system)
#   make uninstall   removes what `make install` put there (same PREFIX and DESTDIR)
#   make man         man pages from the help texts (help2man) into build/man/
# Honours CC, CPPFLAGS, CFLAGS, LDFLAGS, LDLIBS, PREFIX, LIBDIR, INCLUDEDIR, BINDIR, MANDIR,
# DOCDIR, BASHCOMPDIR, ZSHCOMPDIR, DESTDIR.
SHELL := /bin/bash
CC ?= cc
PREFIX ?= /usr/local
SAN ?= 0
DATA ?= ./engram-data

ifeq ($(SAN),1)
BUILD ?= build/san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else
BUILD ?= build
SANFLAGS :=
endif

LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
BINDIR ?= $(PREFIX)/bin
DATAROOTDIR ?= $(PREFIX)/share
MANDIR ?= $(DATAROOTDIR)/man
DOCDIR ?= $(DATAROOTDIR)/doc/engram
BASHCOMPDIR ?= $(DATAROOTDIR)/bash-completion/completions
ZSHCOMPDIR ?= $(DATAROOTDIR)/zsh/vendor-completions

# The version, read from include/engram.h (its one home): libengram.so.MAJOR.MINOR.PATCH
# with the soname libengram.so.MAJOR, engram.pc's Version, the Python package's version.
version_part = $(shell sed -n 's/^\#define ENGRAM_VERSION_$(1) *\([0-9][0-9]*\).*/\1/p' include/engram.h)
VERSION_MAJOR := $(call version_part,MAJOR)
VERSION_MINOR := $(call version_part,MINOR)
VERSION_PATCH := $(call version_part,PATCH)
VERSION := $(VERSION_MAJOR).$(VERSION_MINOR).$(VERSION_PATCH)
ifneq ($(VERSION),$(shell sed -n 's/^\#define ENGRAM_VERSION_STRING "\(.*\)".*/\1/p' include/engram.h))
$(error include/engram.h: ENGRAM_VERSION_STRING differs from MAJOR.MINOR.PATCH ($(VERSION)))
endif
SONAME := libengram.so.$(VERSION_MAJOR)
SHLIB := libengram.so.$(VERSION)

# Compiler and linker flags of the libraries engram uses, from pkg-config. A package
# without a .pc file (or a machine without pkg-config yet: `make deps` installs it) falls
# back to plain -l<name>. Expanded once, on first use, so after `make deps` has run.
PKG_CONFIG ?= pkg-config
DEP_PKGS := lmdb:lmdb libzstd:zstd libprotobuf-c:protobuf-c libzmq:zmq libmicrohttpd:microhttpd
pc_cflags = $(foreach d,$(DEP_PKGS),$(shell $(PKG_CONFIG) --cflags $(word 1,$(subst :, ,$(d))) 2>/dev/null))
pc_libs = $(foreach d,$(DEP_PKGS),$(or $(shell $(PKG_CONFIG) --libs $(word 1,$(subst :, ,$(d))) 2>/dev/null),-l$(word 2,$(subst :, ,$(d)))))
DEP_CFLAGS = $(eval DEP_CFLAGS := $(call pc_cflags))$(DEP_CFLAGS)
DEP_LIBS = $(eval DEP_LIBS := $(call pc_libs) -lpthread -lm)$(DEP_LIBS)
CMOCKA_LIBS = $(eval CMOCKA_LIBS := $(or $(shell $(PKG_CONFIG) --libs cmocka 2>/dev/null),-lcmocka))$(CMOCKA_LIBS)

CFLAGS ?= -O2 -g
WARN := -Wall -Wextra -Werror -Wno-unused-parameter
ALL_CPPFLAGS = -D_GNU_SOURCE -Iinclude -Icommon -I. -I$(BUILD)/gen $(DEP_CFLAGS) $(CPPFLAGS)
ALL_CFLAGS = -std=c11 $(ALL_CPPFLAGS) $(WARN) $(CFLAGS) $(SANFLAGS) -fPIC -pthread
ENGRAM_LIBS = $(DEP_LIBS) $(LDLIBS)
LD ?= ld
OBJCOPY ?= objcopy
ALL_LDFLAGS := $(SANFLAGS) -pthread $(LDFLAGS)

DEB_PACKAGES := build-essential pkg-config liblmdb-dev libzstd-dev libprotobuf-c-dev \
  protobuf-c-compiler libzmq3-dev libcmocka-dev lmdb-utils python3 python3-dev \
  python3-pytest python3-setuptools python3-pip python3-wheel python3-mypy help2man clang \
  cppcheck nats-server libnats-dev libmicrohttpd-dev chromium prometheus tmux tzdata zsh \
  libtsan2
# libFuzzer's runtime for `make fuzz` (only a Recommends of clang): installed when this
# Debian release has it under that name.
DEB_OPTIONAL := libclang-rt-14-dev
# Debian's interpreter: the one python3-* packages (pytest ...) install into.
PYTHON ?= /usr/bin/python3

PROTOS := $(wildcard schema/*.proto)
GEN_C := $(patsubst schema/%.proto,$(BUILD)/gen/schema/%.pb-c.c,$(PROTOS))
GEN_H := $(GEN_C:.c=.h)
LIB_SRCS := $(wildcard common/*.c log/*.c consumers/*.c api/*.c net/*.c)
LIB_OBJS := $(patsubst %.c,$(BUILD)/obj/%.o,$(LIB_SRCS)) $(patsubst %.c,%.o,$(GEN_C))
CLI_SRCS := $(wildcard cli/*.c)
CLI_OBJS := $(patsubst %.c,$(BUILD)/obj/%.o,$(CLI_SRCS))
TEST_SRCS := $(wildcard tests/test_*.c)
TEST_BINS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRCS))
# Tests that include an internal header (log/log.h, schema/*.pb-c.h ...) look inside the
# library and link libengram-internal.a; the others link the public libengram.a, as a
# user's program does. test_symbols is also linked against libengram.so.
INTERNAL_TEST_BINS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(shell grep -l -E \
  '^.include "(common|log|consumers|net|schema)/' $(TEST_SRCS) /dev/null))
PUBLIC_TEST_BINS := $(filter-out $(INTERNAL_TEST_BINS),$(TEST_BINS))
SHARED_TEST_BINS := $(BUILD)/tests/test_symbols-shared
TEST_HELPERS := $(wildcard tests/helpers/*.c)
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_REPLAY := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%-replay,$(FUZZ_SRCS))
# The power-cut test (tests/powercut/): a recording LD_PRELOAD shim, the workload and
# checker, and test_powercut, the wrapper run-tests.sh runs as a unit.
POWERCUT := $(BUILD)/tests/powercut/shim.so $(BUILD)/tests/powercut/pc_work \
  $(BUILD)/tests/test_powercut
BENCH_SRCS := $(wildcard bench/bench_*.c)
BENCH_BINS := $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRCS))
BENCH_COMMON_OBJS := $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard bench/common/*.c))
TEST_HELPER_OBJS := $(patsubst %.c,$(BUILD)/obj/%.o,$(TEST_HELPERS))
# Small programs that use only include/engram.h, linked as a user links them; built by
# `make` and run by `make test` (examples/run-examples.sh) so they cannot rot.
EXAMPLE_SRCS := $(wildcard examples/*.c)
EXAMPLE_BINS := $(patsubst examples/%.c,$(BUILD)/examples/%,$(EXAMPLE_SRCS))

.PHONY: all deps run test test-c test-python bench bench-peers fuzz tsan install uninstall man clean \
  check-deps format python lint examples mirrortest bench-mirror
.SECONDARY:

all: $(BUILD)/libengram.a $(BUILD)/libengram.so $(BUILD)/engram $(EXAMPLE_BINS)
examples: $(EXAMPLE_BINS)

# Shell that installs the Debian packages $(1) that are missing, as root or through sudo
# (SUDO is then set for what follows on the same line).
define apt_install_missing
missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
endef

deps:
	@$(call apt_install_missing,$(DEB_PACKAGES)); \
	for p in $(DEB_OPTIONAL); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' && continue; \
	  apt-cache show $$p >/dev/null 2>&1 || continue; \
	  echo "installing: $$p"; \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$p >/dev/null; \
	done

$(BUILD)/gen/schema/%.pb-c.c $(BUILD)/gen/schema/%.pb-c.h: schema/%.proto
	@mkdir -p $(BUILD)/gen
	protoc-c --c_out=$(BUILD)/gen $<

$(BUILD)/gen/schema/%.pb-c.o: $(BUILD)/gen/schema/%.pb-c.c
	$(CC) $(ALL_CFLAGS) -Wno-unused -c $< -o $@.$$$$.tmp && mv $@.$$$$.tmp $@

# Every object, the library's and those of the CLI, tests, fuzz replays, benches and
# examples, writes a dependency file (-MMD): a change to any header it includes rebuilds
# it, and the programs it goes into are relinked.
$(BUILD)/obj/%.o: %.c $(GEN_H) include/engram.h
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MF $(@:.o=.d) -MT $@ -MP -c $< -o $@.$$$$.tmp && mv $@.$$$$.tmp $@

$(BUILD)/obj/tests/%.o: ALL_CFLAGS += -Itests
$(BUILD)/obj/bench/%.o: ALL_CFLAGS += -Ibench

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# Visibility. Only the engram_* functions of include/engram.h (marked ENGRAM_API) leave
# the library: its objects are compiled with hidden visibility, which keeps the rest out
# of libengram.so. libengram.a holds one object, all library objects linked together
# (ld -r) with every hidden name then made local, so a program's own crc32c() or
# log_error() never meets the library's, and a static link carries the whole library
# (net/notify.o's constructor included) whatever the program calls. Tests and fuzz
# replays that look inside link libengram-internal.a: the same object before
# localisation; it is never installed.
$(LIB_OBJS): ALL_CFLAGS += -fvisibility=hidden

# Outputs are written under a temporary name and renamed, so concurrent builds in one
# tree never see a half-written file.
$(BUILD)/obj/engram-internal.o: $(LIB_OBJS)
	$(LD) -r -o $@.$$$$.tmp $^ && mv $@.$$$$.tmp $@

$(BUILD)/obj/engram.o: $(BUILD)/obj/engram-internal.o
	$(OBJCOPY) --localize-hidden $< $@.$$$$.tmp && mv $@.$$$$.tmp $@

$(BUILD)/libengram.a $(BUILD)/libengram-internal.a: $(BUILD)/lib%.a: $(BUILD)/obj/%.o
	@rm -f $@.$$$$.tmp
	ar rcs $@.$$$$.tmp $< && mv $@.$$$$.tmp $@

# The shared library as installed: the file libengram.so.MAJOR.MINOR.PATCH, its soname
# link libengram.so.MAJOR (what programs record and load) and the link libengram.so
# (what -lengram finds when linking). The soname link beside it lets programs linked in
# the tree (test_symbols-shared, with an rpath to $(BUILD)) run without installing.
$(BUILD)/$(SHLIB): $(LIB_OBJS)
	$(CC) -shared $(ALL_LDFLAGS) -Wl,-soname,$(SONAME) -o $@.$$$$.tmp $^ $(ENGRAM_LIBS) && mv $@.$$$$.tmp $@

$(BUILD)/$(SONAME): $(BUILD)/$(SHLIB)
	ln -sfn $(SHLIB) $@

$(BUILD)/libengram.so: $(BUILD)/$(SONAME)
	ln -sfn $(SONAME) $@

# Only the command links libnats (engram mirror / restore, serve --mirror-nats): the
# library never depends on it.
$(BUILD)/engram: $(CLI_OBJS) $(BUILD)/libengram.a
	$(CC) $(ALL_LDFLAGS) -o $@.$$$$.tmp $(CLI_OBJS) $(BUILD)/libengram.a $(ENGRAM_LIBS) -lnats && mv $@.$$$$.tmp $@

$(PUBLIC_TEST_BINS): $(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(TEST_HELPER_OBJS) $(BUILD)/libengram.a
	@mkdir -p $(dir $@)
	$(CC) -o $@.$$$$.tmp $^ $(ENGRAM_LIBS) $(CMOCKA_LIBS) $(ALL_LDFLAGS) && mv $@.$$$$.tmp $@

$(INTERNAL_TEST_BINS): $(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(TEST_HELPER_OBJS) $(BUILD)/libengram-internal.a
	@mkdir -p $(dir $@)
	$(CC) -o $@.$$$$.tmp $^ $(ENGRAM_LIBS) $(CMOCKA_LIBS) $(ALL_LDFLAGS) && mv $@.$$$$.tmp $@

$(SHARED_TEST_BINS): $(BUILD)/tests/%-shared: $(BUILD)/obj/tests/%.o $(TEST_HELPER_OBJS) $(BUILD)/libengram.so
	@mkdir -p $(dir $@)
	$(CC) -o $@.$$$$.tmp $(filter %.o,$^) -L$(BUILD) -lengram -Wl,-rpath,$(abspath $(BUILD)) $(ENGRAM_LIBS) $(CMOCKA_LIBS) $(ALL_LDFLAGS) && mv $@.$$$$.tmp $@

$(BUILD)/fuzz/%-replay: $(BUILD)/obj/tests/fuzz/%.o $(BUILD)/obj/tests/fuzz/replay_main.o $(BUILD)/libengram-internal.a
	@mkdir -p $(dir $@)
	$(CC) -o $@.$$$$.tmp $^ $(ENGRAM_LIBS) $(ALL_LDFLAGS) && mv $@.$$$$.tmp $@

# The JSON target runs the command's own parser.
$(BUILD)/fuzz/fuzz_json-replay: $(BUILD)/obj/cli/json.o

$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(BENCH_COMMON_OBJS) $(BUILD)/libengram.a
	@mkdir -p $(dir $@)
	$(CC) -o $@.$$$$.tmp $^ $(ENGRAM_LIBS) $(ALL_LDFLAGS) && mv $@.$$$$.tmp $@

$(BUILD)/examples/%: $(BUILD)/obj/examples/%.o $(BUILD)/libengram.a
	@mkdir -p $(dir $@)
	$(CC) -o $@.$$$$.tmp $^ $(ENGRAM_LIBS) $(ALL_LDFLAGS) && mv $@.$$$$.tmp $@

# The shim is preloaded into sanitized programs too, so it is built without sanitizers.
$(BUILD)/tests/powercut/shim.so: tests/powercut/shim.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -D_GNU_SOURCE $(WARN) $(CFLAGS) -fPIC -shared -pthread -o $@.$$$$.tmp $< -ldl && mv $@.$$$$.tmp $@

# pc_work looks inside (the "park" scenario runs parking passes itself).
$(BUILD)/tests/powercut/pc_work: tests/powercut/pc_work.c $(BUILD)/libengram-internal.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@.$$$$.tmp $< $(BUILD)/libengram-internal.a $(ENGRAM_LIBS) -ldl $(ALL_LDFLAGS) && mv $@.$$$$.tmp $@

$(BUILD)/tests/test_powercut: tests/powercut/run.sh $(BUILD)/tests/powercut/shim.so $(BUILD)/tests/powercut/pc_work
	@mkdir -p $(dir $@)
	printf '#!/bin/sh\nexec env BUILD=$(BUILD) bash tests/powercut/run.sh "$$@"\n' > $@.$$$$.tmp && chmod +x $@.$$$$.tmp && mv $@.$$$$.tmp $@

# The long power-cut run: more seeds, crash points and images (tests/powercut/run.sh).
.PHONY: crashtest
crashtest: deps all $(POWERCUT)
	@BUILD=$(BUILD) bash tests/powercut/run.sh --long

# Layering: a wrong-way include fails the build.
check-deps:
	@bash tests/check-deps.sh

test: deps check-deps all $(TEST_BINS) $(SHARED_TEST_BINS) $(FUZZ_REPLAY) $(EXAMPLE_BINS) $(POWERCUT)
	@BUILD=$(BUILD) bash tests/run-tests.sh

# The NATS mirror's real-server test at full size: 100,000 events through a 3-node
# JetStream cluster while the mirror and a node are killed, and the restores while a
# replica catches up (make test runs both parts at 6,000 events: units mirror and
# mirror/lag).
MIRROR_EVENTS ?= 100000
mirrortest: deps all
	@BUILD=$(BUILD) EVENTS=$(MIRROR_EVENTS) ENGRAM_TEST_TIMEOUT=1200 bash cli/test-mirror.sh

fuzz: deps
	@bash tests/fuzz/run-fuzz.sh $(FUZZ_SECONDS)

# Data races: the commit path, the write-ahead file and consumer groups under
# ThreadSanitizer, built into build/tsan (tests/run-tsan.sh says what is left out), then
# `engram serve` and its clients under load (tests/run-tsan-daemon.sh).
TSAN_TESTS := test_wal test_commit test_groups test_append test_pipeline test_deliver \
  test_retention test_park test_compaction test_groups_model
tsan: deps
	@$(MAKE) --no-print-directory -j$$(nproc) BUILD=build/tsan \
	  SANFLAGS="-fsanitize=thread -fno-omit-frame-pointer" $(addprefix build/tsan/tests/,$(TSAN_TESTS)) \
	  build/tsan/engram
	@BUILD=build/tsan bash tests/run-tsan.sh $(TSAN_TESTS)
	@BUILD=build/tsan bash tests/run-tsan-daemon.sh

bench: deps bench-deps all $(BENCH_BINS)
	@BUILD=$(BUILD) bash bench/run.sh

# Engram side by side with Redis Streams and NATS JetStream (installs and runs them on
# 127.0.0.1 with throw-away data). PEERS=--quick for a short run.
bench-peers: deps all $(BENCH_BINS)
	@BUILD=$(BUILD) bash bench/peers/run.sh $(PEERS)

# engram mirror against a 3-node JetStream cluster (R3), next to the cluster's own
# ceiling (bench/mirror/run.sh; MIRROR_BENCH=--quick for a short run).
bench-mirror: deps all
	@BUILD=$(BUILD) bash bench/mirror/run.sh $(MIRROR_BENCH)

lint:
	cppcheck --quiet --error-exitcode=1 --enable=warning,portability --inline-suppr \
	  --suppress=missingIncludeSystem -Iinclude -Icommon -I. $(LIB_SRCS) $(CLI_SRCS) $(EXAMPLE_SRCS)

# The main job: a short demo fills ./engram-data, then the daemon serves it in the
# foreground (Ctrl-C stops it). LISTEN=tcp://127.0.0.1:7450 by default.
LISTEN ?= tcp://127.0.0.1:7450
run: deps all
	@BUILD=$(BUILD) DATA=$(DATA) bash cli/demo.sh
	@echo; echo "== engram serve: $(DATA) on $(LISTEN) (Ctrl-C to stop); try:"; \
	  echo "   $(BUILD)/engram --connect $(LISTEN) stat"
	@exec $(BUILD)/engram serve --data $(DATA) --listen $(LISTEN)

python: all
	cd bindings/python && $(PYTHON) setup.py build_ext --inplace -q

# engram.pc: Requires.private names the packages that have a .pc file here; the others
# go into Libs.private as plain -l flags, so `pkg-config engram` never names a missing
# package.
pc_requires = $(foreach d,$(DEP_PKGS),$(shell $(PKG_CONFIG) --exists $(word 1,$(subst :, ,$(d))) 2>/dev/null && echo $(word 1,$(subst :, ,$(d)))))
pc_plain_libs = $(foreach d,$(DEP_PKGS),$(shell $(PKG_CONFIG) --exists $(word 1,$(subst :, ,$(d))) 2>/dev/null || echo -l$(word 2,$(subst :, ,$(d)))))

$(BUILD)/engram.pc: engram.pc.in include/engram.h Makefile
	@mkdir -p $(dir $@)
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' \
	  -e 's|@VERSION@|$(VERSION)|' -e 's|@REQUIRES_PRIVATE@|$(strip $(pc_requires))|' \
	  -e 's|@LIBS_PRIVATE@|$(strip $(pc_plain_libs) -lpthread -lm)|' $< > $@.$$$$.tmp && mv $@.$$$$.tmp $@

# The soname link is made here as well as by ldconfig, so a staged install (DESTDIR) is
# complete; ldconfig runs when root installs to the system.
.PHONY: $(BUILD)/engram.pc
# One man page per command, generated from the help texts so they never drift.
man: $(BUILD)/engram cli/gen-man.sh
	bash cli/gen-man.sh $(BUILD)/engram $(BUILD)/man $(VERSION)

install: all $(BUILD)/engram.pc man
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(BINDIR) \
	  $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(DOCDIR) $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR)
	install -m 644 $(BUILD)/libengram.a $(DESTDIR)$(LIBDIR)/
	install -m 755 $(BUILD)/$(SHLIB) $(DESTDIR)$(LIBDIR)/
	ln -sfn $(SHLIB) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sfn $(SONAME) $(DESTDIR)$(LIBDIR)/libengram.so
	install -m 644 include/engram.h $(DESTDIR)$(INCLUDEDIR)/
	install -m 755 $(BUILD)/engram $(DESTDIR)$(BINDIR)/
	install -m 644 $(BUILD)/engram.pc $(DESTDIR)$(LIBDIR)/pkgconfig/
	install -m 644 $(BUILD)/man/*.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 644 contrib/engram.bash-completion $(DESTDIR)$(BASHCOMPDIR)/engram
	install -m 644 contrib/_engram $(DESTDIR)$(ZSHCOMPDIR)/_engram
	install -m 644 contrib/engram.conf.example $(DESTDIR)$(DOCDIR)/
	sed 's|/usr/local/bin/engram|$(BINDIR)/engram|' contrib/engram.service > $(DESTDIR)$(DOCDIR)/engram.service
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ] && command -v ldconfig >/dev/null; then \
	  echo ldconfig; ldconfig; fi

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/libengram.a $(DESTDIR)$(LIBDIR)/$(SHLIB) \
	  $(DESTDIR)$(LIBDIR)/$(SONAME) $(DESTDIR)$(LIBDIR)/libengram.so \
	  $(DESTDIR)$(INCLUDEDIR)/engram.h $(DESTDIR)$(BINDIR)/engram \
	  $(DESTDIR)$(LIBDIR)/pkgconfig/engram.pc $(DESTDIR)$(MANDIR)/man1/engram.1 \
	  $(DESTDIR)$(MANDIR)/man1/engram-*.1 $(DESTDIR)$(BASHCOMPDIR)/engram \
	  $(DESTDIR)$(ZSHCOMPDIR)/_engram $(DESTDIR)$(DOCDIR)/engram.conf.example \
	  $(DESTDIR)$(DOCDIR)/engram.service
	-rmdir $(DESTDIR)$(DOCDIR) 2>/dev/null
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ] && command -v ldconfig >/dev/null; then \
	  echo ldconfig; ldconfig; fi

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build

# What the benches need beyond `make deps` (make test never needs them): Redis, Celery and
# redis-py for bench_python's Celery peer. Installed when missing, as root or through sudo.
BENCH_DEB_PACKAGES := redis-server python3-celery python3-redis
.PHONY: bench-deps bench-python
bench-deps:
	@$(call apt_install_missing,$(BENCH_DEB_PACKAGES))

# Python workers against Celery + Redis: embedded, and through `engram serve` (started
# on a free loopback port with a throw-away log). PYBENCH="--events 5000" to shorten.
bench-python: deps bench-deps all python
	@mkdir -p bench/results
	@$(PYTHON) bench/bench_python.py --engram $(BUILD)/engram --json bench/results/python.json $(PYBENCH)
