"""bench_sgemm.py — this machine's practical matmul limit: OpenBLAS sgemm GFLOP/s.

kvlora's matmul is compared against it (README, Speed). Run with Debian's python3-numpy
and libopenblas0-pthread as the BLAS:

    OPENBLAS_NUM_THREADS=1 /usr/bin/python3 data/bench_sgemm.py
    OPENBLAS_NUM_THREADS=2 /usr/bin/python3 data/bench_sgemm.py

Times float32 a @ b (best of 5 after a warm-up) for square sizes and for the products of
a 512-token prefill of SmolLM2-135M (M=512 tokens, K inputs, N outputs).
"""
import time
import numpy as np

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
