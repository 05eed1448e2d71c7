# tests/fuzz/fuzz.mk: the libFuzzer harnesses, included by the top
# Makefile (it uses B, CPPFLAGS_ALL, PKG_CFLAGS, PKG_LIBS and the source
# lists from there). clang only: libFuzzer is part of clang.
#   make fuzz-build              build every harness into build/fuzz/
#   make fuzz [FUZZ_TIME=600]    run each for FUZZ_TIME seconds, one at a time
#   make fuzz-smtpd              run one harness
# Each run starts from a copy of tests/fuzz/corpus/NAME/ in
# build/fuzz/corpus/NAME/ (new inputs stay there); a finding is written to
# build/fuzz/findings/ and fails the target.

FUZZ_CC ?= clang
FUZZ_TIME ?= 60
FUZZ_NAMES := smtpd data mailaddr reply dns cf queue map
FUZZ_DIR := $(B)/fuzz

FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CFLAGS := -g -O1 $(FUZZ_SAN)
FUZZ_SRC := $(LIB_SRC) $(INST_SRC) $(MGR_SRC)
FUZZ_OBJ := $(FUZZ_SRC:%.c=$(FUZZ_DIR)/obj/%.o) $(FUZZ_DIR)/obj/gen/embed.o $(FUZZ_DIR)/obj/tests/fuzz/fuzzutil.o
FUZZ_BINS := $(FUZZ_NAMES:%=$(FUZZ_DIR)/fuzz_%)

# The largest input per harness (-max_len).
FUZZ_MAXLEN_smtpd := 4096
FUZZ_MAXLEN_data := 8192
FUZZ_MAXLEN_mailaddr := 600
FUZZ_MAXLEN_reply := 8192
FUZZ_MAXLEN_dns := 2048
FUZZ_MAXLEN_cf := 8192
FUZZ_MAXLEN_queue := 4096
FUZZ_MAXLEN_map := 8192

fuzz-build: $(FUZZ_BINS)

# The project's code: coverage instrumentation, no libFuzzer main.
$(FUZZ_DIR)/obj/%.o: %.c $(B)/gen/embed.h
	@mkdir -p $(@D)
	$(FUZZ_CC) $(CPPFLAGS_ALL) $(PKG_CFLAGS) -fsanitize=fuzzer-no-link $(FUZZ_CFLAGS) -MMD -MP -c -o $@ $<
$(FUZZ_DIR)/obj/gen/embed.o: $(B)/gen/embed.c
	@mkdir -p $(@D)
	$(FUZZ_CC) $(CPPFLAGS_ALL) $(FUZZ_CFLAGS) -c -o $@ $<
# Harnesses pull in only what they use.
$(FUZZ_DIR)/libfuzz.a: $(FUZZ_OBJ)
	@rm -f $@
	$(AR) rcs $@ $^
$(FUZZ_DIR)/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_DIR)/libfuzz.a
	$(FUZZ_CC) $(CPPFLAGS_ALL) -Itests/fuzz $(PKG_CFLAGS) $(WARNFLAGS) -fsanitize=fuzzer \
		$(FUZZ_CFLAGS) -o $@ $< $(FUZZ_DIR)/libfuzz.a $(PKG_LIBS)

# fuzz_run NAME: one harness's run (a shell command).
fuzz_run = sh tests/fuzz/run.sh $(1) $(FUZZ_DIR) $(FUZZ_TIME) $(FUZZ_MAXLEN_$(1))

# Every harness runs, one after another; any finding fails the target.
fuzz: fuzz-build
	@fail=0; \
	$(foreach n,$(FUZZ_NAMES),$(call fuzz_run,$(n)) || fail=1;) \
	if [ $$fail != 0 ]; then echo "fuzz: FINDINGS, see $(FUZZ_DIR)/findings/"; exit 1; fi

$(FUZZ_NAMES:%=fuzz-%): fuzz-%: $(FUZZ_DIR)/fuzz_%
	@$(call fuzz_run,$*)

.PHONY: fuzz fuzz-build $(FUZZ_NAMES:%=fuzz-%)
-include $(wildcard $(FUZZ_DIR)/obj/*/*.d $(FUZZ_DIR)/obj/*/*/*.d)
