# engram — build, test, bench, install. GNU make; no other build system.
#   make deps        install the Debian packages engram needs (idempotent; root or sudo)
#   make             library (build/libengram.a, build/libengram.so) and CLI (build/engram)
#                    (only engram_* names are visible in either library: see "Visibility")
#   make run         builds and runs the main job on ./engram-data
#   make test        builds and runs every test (SAN=1: under ASan + UBSan)
#   make mirrortest  the NATS mirror's real-server test with 100,000 events
#   make bench       the benchmark suite (see docs/benchmarks.md)
#   make install     PREFIX=/usr/local DESTDIR=
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

CFLAGS ?= -O2 -g
WARN := -Wall -Wextra -Werror -Wno-unused-parameter
ALL_CFLAGS := -std=c11 -D_GNU_SOURCE $(WARN) $(CFLAGS) $(SANFLAGS) -fPIC -pthread \
  -Iinclude -Icommon -I. -I$(BUILD)/gen
LDLIBS := -llmdb -lzstd -lprotobuf-c -lzmq -lpthread -lm
LD ?= ld
OBJCOPY ?= objcopy
ALL_LDFLAGS := $(SANFLAGS) -pthread $(LDFLAGS)

DEB_PACKAGES := build-essential pkg-config liblmdb-dev libzstd-dev libprotobuf-c-dev \
  protobuf-c-compiler libzmq3-dev libcmocka-dev lmdb-utils python3 python3-dev \
  python3-pytest python3-setuptools python3-pip python3-wheel clang cppcheck \
  nats-server libnats-dev
# libFuzzer's runtime for `make fuzz` (only a Recommends of clang): installed when this
# Debian release has it under that name.
DEB_OPTIONAL := libclang-rt-14-dev
# Debian's interpreter: the one python3-* packages (pytest ...) install into.
PYTHON ?= /usr/bin/python3

PROTOS := $(wildcard schema/*.proto)
GEN_C := $(patsubst schema/%.proto,$(BUILD)/gen/schema/%.pb-c.c,$(PROTOS))
GEN_H := $(GEN_C:.c=.h)
LIB_SRCS := $(wildcard common/*.c log/*.c consumers/*.c net/*.c)
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
BENCH_SRCS := $(wildcard bench/bench_*.c)
BENCH_BINS := $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRCS))

.PHONY: mirrortest bench-mirror all deps run test test-c test-python bench bench-peers fuzz install clean check-deps format python lint
.SECONDARY:

all: $(BUILD)/libengram.a $(BUILD)/libengram.so $(BUILD)/engram

deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi; \
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

$(BUILD)/obj/%.o: %.c $(GEN_H) include/engram.h
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MF $(@:.o=.d) -MT $@ -MP -c $< -o $@.$$$$.tmp && mv $@.$$$$.tmp $@

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

# libengram.so.0 (the soname) beside it lets programs linked in the tree (test_symbols-
# shared, with an rpath to $(BUILD)) run without installing.
$(BUILD)/libengram.so: $(LIB_OBJS)
	$(CC) -shared $(ALL_LDFLAGS) -Wl,-soname,libengram.so.0 -o $@.$$$$.tmp $^ $(LDLIBS) && mv $@.$$$$.tmp $@
	ln -sf libengram.so $(BUILD)/libengram.so.0

# Only the command links libnats (engram mirror / restore, serve --mirror-nats): the
# library never depends on it.
$(BUILD)/engram: $(CLI_OBJS) $(BUILD)/libengram.a
	$(CC) $(ALL_LDFLAGS) -o $@.$$$$.tmp $(CLI_OBJS) $(BUILD)/libengram.a $(LDLIBS) -lnats && mv $@.$$$$.tmp $@

$(PUBLIC_TEST_BINS): $(BUILD)/tests/%: tests/%.c $(TEST_HELPERS) $(BUILD)/libengram.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests -o $@.$$$$.tmp $< $(TEST_HELPERS) $(BUILD)/libengram.a $(LDLIBS) -lcmocka $(ALL_LDFLAGS) && mv $@.$$$$.tmp $@

$(INTERNAL_TEST_BINS): $(BUILD)/tests/%: tests/%.c $(TEST_HELPERS) $(BUILD)/libengram-internal.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests -o $@.$$$$.tmp $< $(TEST_HELPERS) $(BUILD)/libengram-internal.a $(LDLIBS) -lcmocka $(ALL_LDFLAGS) && mv $@.$$$$.tmp $@

$(SHARED_TEST_BINS): $(BUILD)/tests/%-shared: tests/%.c $(TEST_HELPERS) $(BUILD)/libengram.so
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests -o $@.$$$$.tmp $< $(TEST_HELPERS) -L$(BUILD) -l:libengram.so -Wl,-rpath,$(abspath $(BUILD)) $(LDLIBS) -lcmocka $(ALL_LDFLAGS) && mv $@.$$$$.tmp $@

$(BUILD)/fuzz/%-replay: tests/fuzz/%.c tests/fuzz/replay_main.c $(BUILD)/libengram-internal.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@.$$$$.tmp $< tests/fuzz/replay_main.c $(BUILD)/libengram-internal.a $(LDLIBS) $(ALL_LDFLAGS) && mv $@.$$$$.tmp $@

$(BUILD)/bench/%: bench/%.c $(wildcard bench/common/*.c) $(BUILD)/libengram.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Ibench -o $@.$$$$.tmp $< $(wildcard bench/common/*.c) $(BUILD)/libengram.a $(LDLIBS) $(ALL_LDFLAGS) && mv $@.$$$$.tmp $@

# Layering: a wrong-way include fails the build.
check-deps:
	@bash tests/check-deps.sh

test: deps check-deps all $(TEST_BINS) $(SHARED_TEST_BINS) $(FUZZ_REPLAY)
	@BUILD=$(BUILD) bash tests/run-tests.sh

# The NATS mirror's real-server test at full size: 100,000 events through a 3-node
# JetStream cluster while the mirror and a node are killed (make test runs 20,000).
MIRROR_EVENTS ?= 100000
mirrortest: deps all
	@BUILD=$(BUILD) EVENTS=$(MIRROR_EVENTS) ENGRAM_TEST_TIMEOUT=1200 bash cli/test-mirror.sh

fuzz: deps
	@bash tests/fuzz/run-fuzz.sh $(FUZZ_SECONDS)

bench: deps all $(BENCH_BINS)
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
	  --suppress=missingIncludeSystem -Iinclude -Icommon -I. $(LIB_SRCS) $(CLI_SRCS)

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

install: all
	install -d $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 644 $(BUILD)/libengram.a $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(BUILD)/libengram.so $(DESTDIR)$(PREFIX)/lib/libengram.so.0
	ln -sf libengram.so.0 $(DESTDIR)$(PREFIX)/lib/libengram.so
	install -m 644 include/engram.h $(DESTDIR)$(PREFIX)/include/
	install -m 755 $(BUILD)/engram $(DESTDIR)$(PREFIX)/bin/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|0.1.0|' engram.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/engram.pc

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build
