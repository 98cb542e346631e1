"""How fast can a count sketch of VGG-16's update be on one CPU thread? The scatter alone, compiled.

    cd benchmarks && python bench_sketch_floor.py   # numba: a flarebench dependency (flarebench/jit.py)

FetchSGD's client payload at flarebench's defaults (count_sketch.py: rows = 5, columns = max(10 k,
0.077 P)) for the 14,719,818 entries of ``vgg16-15m`` is a [5, 1,133,426] float32 table (22 MB); every
entry is added, with a random sign, into one random cell of every row. This script times that scatter
as a numba loop over precomputed int32 codes (the hashes flarebench keeps per device), the unsketch's
gathers + median of 5 the same way, and torch's ``index_add_`` (what count_sketch.py runs), against the
training step of bench_compressors.py, one thread each. The scatter alone is far above 10% of a step:
the table is larger than the caches, so every add is a cache miss whichever code issues it.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from bench_wire import build, train_step_fn
from flarebench.flat import Layout


def main() -> None:
    import numba

    torch.set_num_threads(1)
    numba.set_num_threads(1)

    @numba.njit(cache=False)
    def scatter(x, codes, table):
        for j in range(codes.shape[0]):
            for i in range(x.size):
                c = codes[j, i]
                table[j, c >> 1] += (np.float32(1.0) - np.float32(2.0) * np.float32(c & 1)) * x[i]

    @numba.njit(cache=False)
    def unsketch(codes, table, out):
        rows = codes.shape[0]
        vals = np.empty(rows, np.float32)
        for i in range(out.size):
            for j in range(rows):  # insertion sort of the row estimates as they are read
                c = codes[j, i]
                e = (np.float32(1.0) - np.float32(2.0) * np.float32(c & 1)) * table[j, c >> 1]
                m = j
                while m > 0 and vals[m - 1] > e:
                    vals[m] = vals[m - 1]
                    m -= 1
                vals[m] = e
            out[i] = vals[rows // 2]

    model = build("vgg16-15m")
    P = Layout.of(model).num_params
    rows, cols = 5, int(np.ceil(0.077 * P))
    rng = np.random.default_rng(0)
    x = rng.standard_normal(P, dtype=np.float32)
    codes = (rng.integers(0, cols, (rows, P), dtype=np.int32) << 1) | rng.integers(0, 2, (rows, P), dtype=np.int32)
    table = np.zeros((rows, cols), np.float32)
    est = np.empty(P, np.float32)
    t_codes = torch.from_numpy(codes.astype(np.int64) >> 1)
    t_x, t_table = torch.from_numpy(x), torch.zeros(rows * cols)

    def torch_scatter():
        for j in range(rows):
            t_table.index_add_(0, t_codes[j] + j * cols, t_x)

    scatter(x, codes, table)
    unsketch(codes, table, est)  # compile
    step = train_step_fn(model)
    times: dict[str, list[float]] = {"step": [], "numba scatter": [], "numba unsketch": [], "torch index_add_": []}
    fns = {"step": step, "numba scatter": lambda: scatter(x, codes, table), "numba unsketch": lambda: unsketch(codes, table, est),
           "torch index_add_": torch_scatter}
    for _ in range(3):
        for name, fn in fns.items():
            t0 = time.process_time()
            fn()
            times[name].append(1e3 * (time.process_time() - t0))
    s = statistics.median(times["step"])
    print(f"vgg16-15m: {P:,} entries, sketch [{rows}, {cols:,}]; one training step {s:.0f} ms (1 thread, median of 3)")
    for name in ("numba scatter", "numba unsketch", "torch index_add_"):
        m = statistics.median(times[name])
        print(f"{name}: {m:,.0f} ms = {100 * m / s:.0f}% of a step")


if __name__ == "__main__":
    main()
