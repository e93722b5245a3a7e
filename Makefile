# kvlora — plain C99, libc and libm only; OpenMP when the compiler has it.
#
#   make            build ./kvlora (the command-line tool)
#   make test       build and run the tests (no Python, no network, no GPU)
#   make run        the main job: the needle test on the built-in model in data/model
#   make data       train the built-in needle model from nothing (not part of the tests)
#   make bench      forward and distillation speed on a random SmolLM2-135M-shaped model
#   make bench-tokenizer   encoding speed of a 50k-vocabulary byte-level BPE
#   make libkvlora.so      the library as a shared object (data/pretrain_search.py loads it)
#   make sanitize   the tests under ASan + UBSan (also part of make test where supported)
#   make test-s390x     the tests big-endian, cross-compiled and run under qemu-user
#   make test-aarch64   the tests on 64-bit Arm, cross-compiled and run under qemu-user
#   make test-windows   the tests built with MinGW-w64 and run under Wine
#   make fuzz       fuzz the parsers and loaders (libFuzzer with clang; FUZZ_SECONDS each)
#   make OMP=0      build without OpenMP (same results, one thread)
#   make ARCH=      build for the generic target instead of this machine's CPU
#
# Never add -ffast-math or -Ofast: they let the compiler reorder sums and the results
# would no longer be the reference numbers the tests check.

CC      ?= cc
OPT     ?= -O3
WARN    ?= -Wall -Wextra -pedantic -Wvla
CFLAGS  ?= -std=c99 $(OPT) $(WARN)
LDLIBS  ?= -lm
OMP     ?= 1

# -march=native when the compiler accepts it (vector width of this CPU; the numbers do
# not change with it, since no sum is reordered and no multiply-add fused).
ARCH    ?= $(shell $(CC) -march=native -x c -c /dev/null -o /dev/null >/dev/null 2>&1 && echo -march=native)
ifeq ($(OMP),1)
OMPFLAGS := $(shell printf 'int main(void){return 0;}' | $(CC) -fopenmp -x c - -o /dev/null >/dev/null 2>&1 && echo -fopenmp)
endif
ALL_CFLAGS = $(CFLAGS) $(ARCH) $(OMPFLAGS) -ffp-contract=off
# make test also runs the suite under the sanitizers when the compiler can build them
SANITIZE ?= $(shell printf 'int main(void){return 0;}' | $(CC) -fsanitize=address,undefined -x c - -o /dev/null >/dev/null 2>&1 && echo 1)


.PHONY: all test test-binaries run data bench bench-tokenizer sanitize sanitize-first-half sanitize-second-half fuzz valgrind test-s390x test-aarch64 test-windows test-tcc clean

all: kvlora

kvlora: kvlora.c kvlora.h
	$(CC) $(ALL_CFLAGS) -DKVLORA_MAIN -o $@ kvlora.c $(LDLIBS)

test_kvlora: test.c kvlora.c kvlora.h
	$(CC) $(ALL_CFLAGS) '-DKVLORA_CC="$(CC)"' -o $@ test.c $(LDLIBS)

# the same tool without OpenMP, and at -O1 (it compiles in a third of the time): the tests
# check that it writes the same bits, so neither OpenMP nor the optimisation level may
# change a result
kvlora_noomp: kvlora.c kvlora.h
	$(CC) $(CFLAGS) -O1 $(ARCH) -ffp-contract=off -DKVLORA_MAIN -o $@ kvlora.c $(LDLIBS)

# The test binaries are independent, so make test builds them JOBS at a time (each takes
# 10-20 s to compile at -O3 or under the sanitizers), then runs the suites one after another.
JOBS ?= 2
test:
	@$(MAKE) --no-print-directory -j$(JOBS) test-binaries
	./test_kvlora
ifeq ($(SANITIZE),1)
	@$(MAKE) --no-print-directory -j$(JOBS) sanitize
endif

# listed longest first, so that two jobs finish together
test-binaries: $(if $(filter 1,$(SANITIZE)),test_san) test_kvlora kvlora kvlora_noomp

# The whole suite again under AddressSanitizer + UndefinedBehaviorSanitizer, CLI included,
# its slowest tests in the reduced configuration (KVLORA_TEST_QUICK: fewer training steps;
# this pass looks for memory errors and undefined behaviour, the first pass for numbers).
# Part of `make test` when the compiler can build it (SANITIZE=0 skips it).
SAN_FLAGS = -std=c99 -g -O1 -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -ffp-contract=off
# test_san carries the tool too: ./test_san --cli ARGS is kvlora ARGS (test.c says how).
test_san: test.c kvlora.c kvlora.h
	$(CC) $(SAN_FLAGS) -DKVLORA_SANITIZED -DKVLORA_TEST_QUICK '-DKVLORA_CLI="./test_san --cli"' -o $@ test.c $(LDLIBS)
# The sanitized build has no OpenMP, so the pass runs as two halves side by side, split
# near the middle of its time (test.c's --until and --from). Each half writes a log that
# is printed whole when it ends, so that the two outputs do not interleave.
SAN_SPLIT = cli_dump_gradients
sanitize: sanitize-first-half sanitize-second-half
sanitize-first-half: HALF = --until $(SAN_SPLIT)
sanitize-second-half: HALF = --from $(SAN_SPLIT)
sanitize-first-half sanitize-second-half: test_san
	ASAN_OPTIONS=detect_leaks=1 ./test_san $(HALF) > test_san.$@.log 2>&1; s=$$?; cat test_san.$@.log; exit $$s

# Fuzzing: with clang, libFuzzer runs each target for FUZZ_SECONDS on the seed corpus in
# data/fuzz/NAME (new inputs go to FUZZ_WORK); with another compiler a plain driver replays
# the seed corpus. Every crash found becomes a file in data/fuzz/NAME.
FUZZ_TARGETS = json config safetensors tokenizer encode adapter cache
FUZZ_SECONDS ?= 60
FUZZ_CC ?= clang
FUZZ_WORK ?= /tmp/kvlora_fuzz
LIBFUZZER := $(shell printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n){(void)d;(void)n;return 0;}' | $(FUZZ_CC) -fsanitize=fuzzer -x c - -o /dev/null >/dev/null 2>&1 && echo 1)
fuzz: test.c kvlora.c kvlora.h
ifeq ($(LIBFUZZER),1)
	@for t in $(FUZZ_TARGETS); do \
	  $(FUZZ_CC) $(SAN_FLAGS) -fsanitize=fuzzer -DKVLORA_FUZZ -DKVLORA_LIBFUZZER -DFUZZ_TARGET="\"$$t\"" -o fuzz_$$t test.c $(LDLIBS) || exit 1; \
	  mkdir -p $(FUZZ_WORK)/$$t; echo "== fuzz $$t for $(FUZZ_SECONDS) s"; \
	  ./fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 -artifact_prefix=$(FUZZ_WORK)/$$t- $(FUZZ_WORK)/$$t data/fuzz/$$t \
	    > $(FUZZ_WORK)/$$t.log 2>&1; status=$$?; grep -E "Done|stat::number_of_executed_units|SUMMARY" $(FUZZ_WORK)/$$t.log; \
	  if [ $$status -ne 0 ]; then echo "fuzz $$t FAILED: $(FUZZ_WORK)/$$t.log; the input is $(FUZZ_WORK)/$$t-crash-*"; exit 1; fi; done
else
	@for t in $(FUZZ_TARGETS); do \
	  $(CC) -std=c99 -g -O1 -DKVLORA_FUZZ -DFUZZ_TARGET="\"$$t\"" -o fuzz_$$t test.c $(LDLIBS) && ./fuzz_$$t data/fuzz/$$t || exit 1; done
endif

# The main job: the needle test on the built-in model, with `kvlora needle`'s defaults:
# 5 documents of 512 tokens with 4 needles each; each document's KV cache distilled into a
# rank-2 LoRA adapter (64 self-study probes, 200 steps), then every needle's question asked
# with the context, without it, and with the adapter alone. About 1.5 minutes on 2 cores.
run: kvlora
	./kvlora needle data/model

# The built-in model, trained from nothing by kvlora itself (not part of the tests; about
# 2 h 30 min on this project's 2 AVX2 cores: 5400 steps, 1800 more than pretrain's default,
# which the needles at the end of a 512-token document need; data/model/README.md). The
# same bytes on any number of threads; `--resume` goes on after an interruption, bit for bit.
data: kvlora
	./kvlora pretrain -o data/model --seed 3 --steps 5400

bench: kvlora
	./kvlora bench

bench-tokenizer: kvlora
	./kvlora tokenize data/tokenizers/big50k --bench

# Portability checks (their toolchains are for checking only, never needed to build):
#   make test-s390x     big-endian: Debian's gcc-s390x-linux-gnu, the tests run under qemu-user
#   make test-aarch64   64-bit Arm: Debian's gcc-aarch64-linux-gnu, the tests run under qemu-user
#   make test-windows   MinGW-w64, the tests run under Wine
#   make test-tcc       the Tiny C Compiler (no OpenMP, no sanitizers)
# Each cross compiler is named by its prefix (S390X_CROSS, AARCH64_CROSS). Under qemu-user
# the slowest tests run a reduced configuration (EMULATED_FLAGS; test.c says what it cuts,
# and the output says so): on 2 cores about 5 minutes for aarch64 and 20 for s390x,
# instead of half an hour and an hour. EMULATED_FLAGS= runs them in full.
EMULATED_FLAGS ?= -DKVLORA_TEST_QUICK
S390X_CROSS ?= s390x-linux-gnu-
test-s390x:
	$(S390X_CROSS)gcc -std=c99 -O2 -static -ffp-contract=off -DKVLORA_MAIN -o kvlora_s390x kvlora.c -lm
	$(S390X_CROSS)gcc -std=c99 -O2 -static -ffp-contract=off $(EMULATED_FLAGS) '-DKVLORA_CLI="qemu-s390x ./kvlora_s390x"' -o test_s390x test.c -lm
	qemu-s390x ./test_s390x

AARCH64_CROSS ?= aarch64-linux-gnu-
test-aarch64:
	$(AARCH64_CROSS)gcc -std=c99 -O2 -static -ffp-contract=off -DKVLORA_MAIN -o kvlora_aarch64 kvlora.c -lm
	$(AARCH64_CROSS)gcc -std=c99 -O2 -static -ffp-contract=off $(EMULATED_FLAGS) '-DKVLORA_CLI="qemu-aarch64 ./kvlora_aarch64"' -o test_aarch64 test.c -lm
	qemu-aarch64 ./test_aarch64

# Windows: MinGW-w64 builds kvlora.exe and the tests, Wine runs them (system() runs cmd.exe
# there, so the few tests that need sh itself say SKIP). Needs
# apt-get install gcc-mingw-w64-x86-64 wine
MINGW ?= x86_64-w64-mingw32-
WINE  ?= wine
test-windows:
	$(MINGW)gcc -std=c99 -O2 -ffp-contract=off -DKVLORA_MAIN -o kvlora.exe kvlora.c
	$(MINGW)gcc -std=c99 -O2 -ffp-contract=off '-DKVLORA_CLI="kvlora.exe"' '-DKVLORA_CC=""' -o test_windows.exe test.c
	WINEDEBUG=-all $(WINE) test_windows.exe

# A short distillation under valgrind memcheck (generic build: valgrind lacks AVX-512).
valgrind:
	$(CC) -std=c99 -O1 -g -ffp-contract=off -DKVLORA_MAIN -o kvlora_vg kvlora.c $(LDLIBS)
	valgrind --leak-check=full --show-leak-kinds=all --errors-for-leak-kinds=all --error-exitcode=9 ./kvlora_vg distill \
	  data/golden/llama_gqa_f32 --context-ids 5,6,7,8,9,10,11,12,13,14,15,16 --self-study 2 --self-study-len 4 --steps 3 -o /tmp/kvlora_vg_adapter

# kvlora as a shared library, for data/pretrain_search.py (ctypes)
libkvlora.so: kvlora.c kvlora.h
	$(CC) $(ALL_CFLAGS) -shared -fPIC -o $@ kvlora.c $(LDLIBS)

test-tcc:
	$(MAKE) --no-print-directory CC=tcc OMP=0 SANITIZE=0 -B test

clean:
	rm -f kvlora libkvlora.so kvlora_noomp test_kvlora test_san test_san.sanitize-first-half.log test_san.sanitize-second-half.log kvlora_vg kvlora_s390x test_s390x kvlora_aarch64 test_aarch64 $(addprefix fuzz_,$(FUZZ_TARGETS)) kvlora.exe test_windows.exe
