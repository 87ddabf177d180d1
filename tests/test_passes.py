"""Passes over row chunks: several computations sharing one read of every chunk."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest

import daskgmm
from daskgmm.engine import covariance as cov_types
from daskgmm.engine.estep import (
    Components,
    estep_statistics,
    hard_assignment_statistics,
    make_plan,
)
from daskgmm.engine.passes import PassPart, RowChunks
from daskgmm.engine.starts import identity_plan
from daskgmm.engine.survey import moments_part

from .conftest import make_blobs


class Reads:
    """Observer: passes started and chunk tasks done."""

    def __init__(self) -> None:
        self.passes: list[str] = []
        self.chunks = 0

    def pass_started(self, kind: str, n_chunks: int) -> None:
        self.passes.append(kind)

    def chunks_done(self, count: int) -> None:
        self.chunks += count


def _parts(X: np.ndarray) -> list[PassPart]:
    centre = X.mean(axis=0)
    centres = X[[0, 400, 800]] + 0.05
    K, D = centres.shape
    gauss = Components(cov_types.get("diag"), centres, np.ones((K, D)), np.zeros(K))
    estep = make_plan([gauss], centre, entropy=True)
    assign = identity_plan([(cov_types.get("full"), centres)], centre)
    return [PassPart(estep_statistics, (estep,), kind="em"),
            moments_part(),
            PassPart(hard_assignment_statistics, (assign,), kind="init")]


def _same(a, b) -> None:
    """Bit-for-bit equality of nested pass results."""
    if hasattr(a, "stats"):
        _same(a.stats, b.stats)
    elif hasattr(a, "scatter"):
        _same(vars(a), vars(b))
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    else:
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _same(x, y)


@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_parts_of_one_pass_equal_their_own_passes_with_one_read(kind):
    X = make_blobs(1200, 4, 3, seed=2)
    w = np.random.default_rng(0).uniform(0.5, 2.0, len(X))
    data = X if kind == "numpy" else da.from_array(X, chunks=(250, 4))
    chunks = RowChunks(data, chunk_rows=250 if kind == "numpy" else None, weights=w)
    parts = _parts(X)
    with dask.config.set(scheduler="threads"):
        reads = Reads()
        with daskgmm.observe(reads):
            together = chunks.map_reduce_many(parts, split_every=2)
        assert reads.passes == ["em"] and reads.chunks == chunks.n_chunks == 5
        alone = [chunks.map_reduce(p.kernel, *p.args, split_every=2, combine=p.combine)
                 for p in parts]
    assert len(together) == 3
    _same(together, alone)
    # Each part is really its own computation (not three copies of one result).
    assert together[1].scatter.shape == (4, 4)
    assert together[1].n == pytest.approx(w.sum())
    assert float(together[0].stats[0]["n"]) == pytest.approx(w.sum())


def test_a_pass_needs_a_part():
    chunks = RowChunks(make_blobs(100, 2, 2))
    with pytest.raises(ValueError, match="at least one part"):
        chunks.map_reduce_many([])


@pytest.mark.parametrize("shared_bytes", [None, 0])
def test_a_pass_over_prefetched_chunks_on_a_cluster_equals_a_graph(client, monkeypatch,
                                                                   shared_bytes):
    """Prefetched chunks (the groups of incremental and online EM) are read ahead on the
    workers, and a pass over them (a task per chunk, reduced on the driver) gives the
    graph's numbers bit for bit, with the same progress, whether its arguments go with
    every task or once (``shared_bytes=0``)."""
    import daskgmm.engine.passes as passes

    if shared_bytes is not None:
        monkeypatch.setattr(passes, "SHARED_ARGUMENT_BYTES", shared_bytes)
    X = make_blobs(1200, 4, 3, seed=3)
    w = np.random.default_rng(1).uniform(0.5, 2.0, len(X))
    chunks = RowChunks(da.from_array(X, chunks=(100, 4)), weights=da.from_array(w, 100))
    (part,) = _parts(X)[:1]
    group = [7, 2, 9]
    ahead = chunks.prefetch(group)
    assert ahead.__dict__.get("_loaded") is not None  # the reads were submitted
    reads = Reads()
    with daskgmm.observe(reads):
        fetched = ahead.map_reduce(part.kernel, *part.args, split_every=2, kind="group")
    assert reads.passes == ["group"] and reads.chunks == 3
    graph = chunks.select(group).map_reduce(part.kernel, *part.args, split_every=2)
    assert chunks.select(group).__dict__.get("_loaded") is None
    _same(fetched, graph)
    assert float(fetched.stats[0]["n"]) == pytest.approx(
        sum(w[i * 100:(i + 1) * 100].sum() for i in group))


def test_a_prefetched_group_is_read_one_chunk_per_worker_thread(client):
    """The chunks of a group are read where the slots say (by default one per worker
    thread), so the group's tasks run side by side; without the placement the
    scheduler tended to put both reads, and then both tasks, on the worker that was
    free first."""
    from distributed import wait

    from daskgmm.engine.passes import worker_slots

    slots = worker_slots()
    assert sorted(slots) == sorted(client.scheduler_info()["workers"]) and len(slots) == 2
    chunks = RowChunks(da.from_array(make_blobs(1200, 4, 3), chunks=(100, 4)))
    a, b = slots
    for group, placed in (([0, 1], [a, b]), ([5, 3], [b, a]), ([11, 2], [a, a])):
        part = chunks.prefetch(group, placed)
        blocks = [block for block, _, _ in part._loaded]
        wait(blocks)
        who_has = client.who_has(blocks)
        assert [tuple(who_has[block.key]) for block in blocks] == [(w,) for w in placed]


@pytest.mark.parametrize("split_every", [2, 3, 8])
def test_a_tree_reduced_in_pieces_groups_as_the_whole_tree(split_every):
    """:class:`PartialTree`, fed the leaves in pieces held by different holders (runs
    and scattered leaves, merged in any order), combines exactly the groups that
    :func:`tree_reduce` combines: with a combine that writes its grouping down, the
    roots are the same string."""
    from daskgmm.engine.tree import PartialTree, tree_reduce

    def combine(*xs):
        return "(" + ",".join(xs) + ")"

    rng = np.random.default_rng(split_every)
    for n in [1, 2, 7, 8, 9, 17, 64, 65, 100]:
        whole = tree_reduce([str(i) for i in range(n)], combine, split_every)
        for _ in range(5):
            holder = (np.repeat(np.arange(4), -(-n // 4))[:n] if rng.random() < 0.5
                      else rng.integers(0, 4, n))
            pieces = []
            for h in rng.permutation(4):
                part = PartialTree(n, combine, split_every)
                for i in np.flatnonzero(holder == h):
                    part.add(0, int(i), str(i))
                pieces.append(part.nodes)
            tree = PartialTree(n, combine, split_every)
            for nodes in pieces:
                tree.merge(nodes)
            assert tree.root() == whole
    unfinished = PartialTree(5, combine, split_every)
    unfinished.add(0, 0, "0")
    with pytest.raises(ValueError, match="incomplete"):
        unfinished.root()


def test_a_pass_over_persisted_chunks_is_a_task_per_run_with_the_graphs_numbers(client):
    """Chunks held in the workers' memory (persisted data and weights) are passed over
    in a few tasks, each running its worker's chunks and reducing its part of the tree;
    the result equals NumPy input's (and a graph's over the same chunks) bit for bit,
    with every chunk counted, for all the chunks and for a selection of them."""
    from distributed import get_task_stream

    X = make_blobs(2400, 4, 3, seed=5)
    w = np.random.default_rng(2).uniform(0.5, 2.0, len(X))
    (part,) = _parts(X)[:1]
    lazy = RowChunks(da.from_array(X, chunks=(100, 4)), weights=da.from_array(w, 100))
    held = RowChunks(client.persist(lazy.data), weights=client.persist(lazy.weights))
    local = RowChunks(X, chunk_rows=100, weights=w)
    for select in (None, [3, 4, 5, 17, 9, 0]):
        chunks, graph, numpy = ((c if select is None else c.select(select))
                                for c in (held, lazy, local))
        runs = chunks._resident_runs(client)
        assert runs is not None and graph._resident_runs(client) is None
        assert sorted(p for _, positions, _ in runs for p in positions) == \
            list(range(chunks.n_chunks))
        reads = Reads()
        with get_task_stream(client) as stream, daskgmm.observe(reads):
            result = chunks.map_reduce(part.kernel, *part.args, split_every=3)
        tasks = [t for t in stream.data if "run_task" in str(t["key"])]
        assert len(tasks) == len(runs) < chunks.n_chunks and reads.chunks == chunks.n_chunks
        _same(result, numpy.map_reduce(part.kernel, *part.args, split_every=3))
        _same(result, graph.map_reduce(part.kernel, *part.args, split_every=3))


def _where_and_stats(block, weights, row_start):
    from distributed import get_worker

    return {get_worker().address: 1}, {row_start: float(np.sum(block * weights[:, None]))}


def _merge_where_and_stats(*parts):
    where, stats = {}, {}
    for w, st in parts:
        for k, v in w.items():
            where[k] = where.get(k, 0) + v
        stats.update(st)
    return where, stats


def test_chunks_held_unevenly_are_balanced_by_copies_for_later_passes(client):
    """Ten chunks persisted 7 on one worker and 3 on the other: the first pass runs them
    where they lie and starts copying two of the seven (with their weights) to the other
    worker; once the copies are there, passes run 5 and 5 chunks, with the same numbers,
    and reuse the copies instead of making more."""
    from distributed import wait

    w1, w2 = sorted(client.nthreads())
    X = make_blobs(1000, 3, 3, seed=4)
    w = np.random.default_rng(1).uniform(0.5, 2.0, len(X))
    parts = [client.persist(da.from_array(a[:700], chunks=100), workers=[w1])
             for a in (X, w)] + [client.persist(da.from_array(a[700:], chunks=100),
                                                workers=[w2]) for a in (X, w)]
    data, weights = (client.persist(da.concatenate(pair)) for pair in
                     ((parts[0], parts[2]), (parts[1], parts[3])))
    wait([data, weights])
    chunks = RowChunks(data, weights=weights)
    expected = {a: float(np.sum(X[a:a + 100] * w[a:a + 100, None])) for a in range(0, 1000, 100)}
    first = chunks.map_reduce(_where_and_stats, combine=_merge_where_and_stats)
    assert first == ({w1: 7, w2: 3}, expected)
    copies = chunks.__dict__["_copies"]
    assert len(copies) == 2 and all(target == w2 for _, target in copies)
    wait([f for pair in copies.values() for f in pair])
    for _ in range(2):
        assert chunks.map_reduce(_where_and_stats, combine=_merge_where_and_stats) == \
            ({w1: 5, w2: 5}, expected)
    assert len(chunks.__dict__["_copies"]) == 2


def _blas_threads(block, weights, row_start):
    from threadpoolctl import threadpool_info

    return {max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")}


@pytest.mark.parametrize("scheduler", ["numpy", "threads", "sync"])
def test_a_pass_in_this_process_runs_blas_on_one_thread_and_restores_it(scheduler):
    """The chunk tasks of a pass in this process (NumPy input; Dask input on the threaded
    or synchronous scheduler) see one BLAS thread; after the pass, BLAS has its threads
    back."""
    from threadpoolctl import threadpool_info, threadpool_limits

    X = make_blobs(4_000, d=3)
    data = X if scheduler == "numpy" else da.from_array(X, chunks=1_000)
    with threadpool_limits(limits=2, user_api="blas"):
        with dask.config.set(scheduler="threads" if scheduler == "numpy" else scheduler):
            seen = RowChunks(data, 1_000).map_reduce(
                _blas_threads, combine=lambda *sets: set().union(*sets))
        after = {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
    assert seen == {1}
    assert after == {2}


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
@pytest.mark.parametrize(("n", "d"), [(2_000_000, 16), (1_000_000, 32), (5_000_001, 7),
                                      (150, 4), (100_000, 16), (1_797, 64)])
def test_numpy_input_is_cut_into_equal_chunks_a_multiple_of_the_cores(monkeypatch, n, d,
                                                                     threads):
    """NumPy input without chunk_rows: chunks of at most DEFAULT_CHUNK_BYTES (or 1,024
    rows), as many as a multiple of the cores, differing by at most the rounding of the
    last one, so that the threads of a pass get equal shares; data small enough for a
    pass in the calling thread (scikit-learn's digits, 1,797 x 64) are one chunk."""
    from daskgmm.engine import passes

    monkeypatch.setattr(passes.os, "cpu_count", lambda: threads)
    X = np.lib.stride_tricks.as_strided(np.zeros(1), shape=(n, d), strides=(0, 0))
    chunks = RowChunks(X)
    sizes = [b - a for a, b in chunks.row_bounds]
    assert sum(sizes) == n
    if n * d < passes.SERIAL_VALUES:
        assert sizes == [n]
    elif max(sizes) > 1024:
        assert max(sizes) * d * 8 <= passes.DEFAULT_CHUNK_BYTES
        assert len(sizes) % threads == 0, sizes
        assert max(sizes) - min(sizes) < len(sizes), sizes
