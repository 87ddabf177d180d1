"""What the sections of one benchmark run share, created when first needed: the main
cluster (2 worker processes x 1 thread, distributed's defaults), the base dataset and its
initial parameters, and the machine's GEMM speed."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any

import numpy as np

from benchlib import cluster, data, flops
from benchlib.fits import run_daskgmm
from benchlib.util import log


class Context:
    def __init__(self, args: argparse.Namespace, stack: contextlib.ExitStack) -> None:
        self.args = args
        self.stack = stack
        self.data_dir = Path(args.data_dir)
        self.out_dir = Path(args.out)
        self.datasets: dict[str, Any] = {}
        self.clusters: dict[str, Any] = {}
        self._client: Any = None
        self._base: dict[str, Any] | None = None
        self._init: dict[str, np.ndarray] | None = None
        self._gemm: dict[str, Any] | None = None

    @property
    def client(self) -> Any:
        """The main LocalCluster's client (2 worker processes, 1 thread each)."""
        if self._client is None:
            self._client = cluster.start_cluster(self.stack, 2, 1)
            self.clusters["main"] = {"n_workers": 2, "threads_per_worker": 1,
                                     "processes": True, **cluster.cluster_info(self._client)}
        return self._client

    @property
    def base(self) -> dict[str, Any]:
        """The base Zarr dataset (N x D, K components, float64)."""
        if self._base is None:
            a = self.args
            self._base = data.ensure_dataset(self.data_dir, a.n_samples, a.n_features,
                                             a.n_components, a.chunk_rows)
            self.datasets["base"] = self._base
        return self._base

    @property
    def init(self) -> dict[str, np.ndarray]:
        """The base dataset's initial parameters: a short scikit-learn fit on a sample."""
        if self._init is None:
            a = self.args
            sample = data.sample_rows(self.base["path"], data.INIT_SAMPLE_ROWS, data.SEED)
            self._init = data.initial_parameters(sample, a.n_components, "full")
            self.datasets["base"]["init"] = (
                f"sklearn GaussianMixture(max_iter={data.INIT_MAX_ITER}, "
                f"random_state={data.SEED}) on {len(sample):,} uniformly sampled rows")
            self.out_dir.mkdir(parents=True, exist_ok=True)
            np.savez(self.out_dir / "init_params.npz", **self._init)
        return self._init

    @property
    def gemm(self) -> dict[str, Any]:
        """Square-GEMM speed, float64 and float32 (measured once per run)."""
        if self._gemm is None:
            size = 1000 if self.args.quick else 2000
            self._gemm = {dt: flops.measure_gemm(dt, size) for dt in ("float64", "float32")}
            log("square GEMM: " + ", ".join(
                f"{dt} {g['flops_per_s'] / 1e9:.1f} GFLOP/s" for dt, g in self._gemm.items()))
        return self._gemm

    def fit(self, X: Any, **kw: Any) -> tuple[dict[str, Any], Any]:
        """A daskgmm fit of the base shape from the base initial parameters (overridable)."""
        a = self.args
        kw.setdefault("k", a.n_components)
        kw.setdefault("iters", a.iters)
        init = kw.pop("init", None)
        return run_daskgmm(X, init if init is not None else self.init,
                           interval=a.monitor_interval, **kw)
