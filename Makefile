# kvlora — plain C99, libc and libm only; OpenMP when the compiler has it.
#
#   make            build ./kvlora (the command-line tool)
#   make test       build and run the tests (no Python, no network, no GPU)
#   make run        the main job on the built-in model in data/
#   make bench      forward and distillation speed on a random SmolLM2-135M-shaped model
#   make bench-tokenizer   encoding speed of a 50k-vocabulary byte-level BPE
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

.PHONY: all test run bench bench-tokenizer clean

all: kvlora

kvlora: kvlora.c kvlora.h
	$(CC) $(ALL_CFLAGS) -DKVLORA_MAIN -o $@ kvlora.c $(LDLIBS)

test_kvlora: test.c kvlora.c kvlora.h
	$(CC) $(ALL_CFLAGS) -o $@ test.c $(LDLIBS)

test: kvlora test_kvlora
	./test_kvlora

# Until the built-in needle model lands: distil a short context on a small golden model.
RUN_MODEL = data/golden/llama_gqa_f32
run: kvlora
	./kvlora info $(RUN_MODEL)
	./kvlora record $(RUN_MODEL) --context-ids 5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32 -o /tmp/kvlora_run_cache.safetensors
	./kvlora distill $(RUN_MODEL) --cache /tmp/kvlora_run_cache.safetensors --steps 60 --lr 1e-2 -o /tmp/kvlora_run_adapter
	./kvlora generate $(RUN_MODEL) --ids 1,5 -n 12 --adapter /tmp/kvlora_run_adapter

bench: kvlora
	./kvlora bench

bench-tokenizer: kvlora
	./kvlora tokenize data/tokenizers/big50k --bench

clean:
	rm -f kvlora test_kvlora
