# kvlora — plain C99, libc and libm only; OpenMP when the compiler has it.
#
#   make            build ./kvlora (the command-line tool)
#   make test       build and run the tests (no Python, no network, no GPU)
#   make run        the main job on the built-in model in data/
#   make bench      prefill speed on a random SmolLM2-135M-shaped model
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

.PHONY: all test run bench clean

all: kvlora

kvlora: kvlora.c kvlora.h
	$(CC) $(ALL_CFLAGS) -DKVLORA_MAIN -o $@ kvlora.c $(LDLIBS)

test_kvlora: test.c kvlora.c kvlora.h
	$(CC) $(ALL_CFLAGS) -o $@ test.c $(LDLIBS)

test: kvlora test_kvlora
	./test_kvlora

run: kvlora
	./kvlora info data/golden/llama_gqa_f32
	./kvlora generate data/golden/llama_gqa_f32 --ids 1,5,9,12 -n 16

bench: kvlora
	./kvlora bench

clean:
	rm -f kvlora test_kvlora
