"""Measure Zarr codecs on random float mixture data: write time, read time, ratio.

Writes the same data (samples of a Gaussian mixture, as ``daskgmm generate`` makes
them) to a local Zarr v3 store once per codec and prints, for float64 and float32, the
time to write the array, the time to read it back (decoding every chunk, in this
process, with zarr's default concurrency) and the compression ratio (uncompressed
bytes / bytes on disk). The read time is what a fit pays on every pass over
out-of-core data. Each measurement is the best of ``--repeat`` runs, codecs
alternating.

    python scripts/bench_codecs.py                      # 1,000,000 x 16, ~1 minute
    python scripts/bench_codecs.py --rows 200000        # quick
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np
import zarr
from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec

from daskgmm.io.generate import sample_parameters


def candidates() -> dict[str, object]:
    return {
        "none": None,
        "zstd (zarr default)": ZstdCodec(level=0),
        "blosc-lz4 shuffle": BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
        "blosc-lz4 bitshuffle": BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle"),
        "blosc-zstd1 shuffle": BloscCodec(cname="zstd", clevel=1, shuffle="shuffle"),
        "gzip-1": GzipCodec(level=1),
    }


def mixture(n: int, d: int, k: int, seed: int = 0) -> np.ndarray:
    params = sample_parameters(d, k, seed=seed)
    rng = np.random.default_rng(seed)
    labels = rng.choice(k, size=n, p=params["weights"])
    chols = np.linalg.cholesky(params["covariances"])
    z = rng.standard_normal((n, d))
    return np.einsum("nij,nj->ni", chols[labels], z) + params["means"][labels]


def disk_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--components", type=int, default=8)
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    base = mixture(args.rows, args.features, args.components)
    workdir = tempfile.mkdtemp(prefix="bench-codecs-")
    print(f"{args.rows:,} x {args.features} mixture (K={args.components}), chunks of "
          f"{args.chunk_rows:,} rows, best of {args.repeat}, zarr {zarr.__version__}")
    try:
        for dtype in ("float64", "float32"):
            data = base.astype(dtype)
            best: dict[str, list[float]] = {}
            ratio: dict[str, float] = {}
            for _ in range(args.repeat):
                for name, codec in candidates().items():
                    path = os.path.join(workdir, f"{dtype}-{len(best)}.zarr")
                    shutil.rmtree(path, ignore_errors=True)
                    t0 = time.perf_counter()
                    arr = zarr.create_array(path, shape=data.shape, dtype=dtype,
                                            chunks=(args.chunk_rows, args.features),
                                            compressors=codec, fill_value=np.nan)
                    arr[...] = data
                    t1 = time.perf_counter()
                    back = zarr.open_array(path, mode="r")[...]
                    t2 = time.perf_counter()
                    assert np.array_equal(back, data)
                    ratio[name] = data.nbytes / disk_bytes(path)
                    old = best.get(name, [np.inf, np.inf])
                    best[name] = [min(old[0], t1 - t0), min(old[1], t2 - t1)]
                    shutil.rmtree(path, ignore_errors=True)
            mib = data.nbytes / 2**20
            print(f"\n{dtype} ({mib:,.0f} MiB)")
            print(f"{'codec':<22} {'write s':>8} {'read s':>8} {'read MiB/s':>11} {'ratio':>6}")
            for name, (w, r) in best.items():
                print(f"{name:<22} {w:8.3f} {r:8.3f} {mib / r:11.0f} {ratio[name]:6.3f}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
