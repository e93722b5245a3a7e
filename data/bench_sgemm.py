"""bench_sgemm.py — this machine's practical matmul limit: OpenBLAS sgemm GFLOP/s.

kvlora's matmul is compared against it (README, Speed). Run with Debian's python3-numpy
and libopenblas0-pthread as the BLAS:

    OPENBLAS_NUM_THREADS=1 /usr/bin/python3 data/bench_sgemm.py
    OPENBLAS_NUM_THREADS=2 /usr/bin/python3 data/bench_sgemm.py

Times float32 a @ b (best of 5 after a warm-up) for square sizes and for the products of
a 512-token prefill of SmolLM2-135M (M=512 tokens, K inputs, N outputs), and prints
GFLOP/s = 2*M*N*K / seconds.

numpy.show_config() on Debian only says "blas"; the library actually loaded is whatever
update-alternatives picks for libblas.so.3 (check it points at openblas-pthread). Mind the
environment: if OPENBLAS_CORETYPE is set (e.g. to Haswell, AVX2 only) it overrides detection
and roughly halves sgemm speed here; unset, OpenBLAS 0.3.21 detects Cooperlake (AVX-512) on
this Zen 5 EPYC. The header line prints the core in use (OPENBLAS_VERBOSE=2 prints it too):

    env -u OPENBLAS_CORETYPE OPENBLAS_NUM_THREADS=1 /usr/bin/python3 data/bench_sgemm.py
"""
import ctypes
import os
import time
import numpy as np

try:
    _ob = ctypes.CDLL("libopenblas.so.0")
    _ob.openblas_get_config.restype = ctypes.c_char_p
    _ob.openblas_get_corename.restype = ctypes.c_char_p
    print(f"{_ob.openblas_get_config().decode()}; core {_ob.openblas_get_corename().decode()}; "
          f"threads {_ob.openblas_get_num_threads()}; "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
except (OSError, AttributeError):
    print(f"OpenBLAS not found; OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}")

shapes = [(n, n, n) for n in (512, 768, 1024, 1536, 2048)] + [(512, 576, 576), (512, 576, 1536), (512, 1536, 576), (512, 576, 49152)]
rng = np.random.default_rng(0)
for m, k, n in shapes:
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    a @ b
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    print(f"M={m:5d} K={k:5d} N={n:6d}  {2.0 * m * n * k / best * 1e-9:7.1f} GFLOP/s")
