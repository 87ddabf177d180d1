"""Checkpoint and resume: a killed fit continues where it stopped, with the same result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from daskgmm import GaussianMixture
from daskgmm.errors import CheckpointError

from .conftest import make_blobs

KW = dict(covariance_type="full", random_state=0, tol=0.0, n_init=2, chunk_rows=500)


def _fit(X, sample_weight=None, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return GaussianMixture(3, **{**KW, **kw}).fit(X, sample_weight=sample_weight)


def _assert_identical(a, b):
    for attr in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_array_equal(getattr(a, attr), getattr(b, attr), err_msg=attr)
    assert a.lower_bounds_ == b.lower_bounds_
    assert (a.n_iter_, a.converged_, a.lower_bound_) == (b.n_iter_, b.converged_,
                                                          b.lower_bound_)


def test_resume_equals_uninterrupted(tmp_path, blobs):
    clean = _fit(blobs, max_iter=25)
    _fit(blobs, max_iter=10, checkpoint_dir=tmp_path)  # "interrupted" after 10 iterations
    saved = json.loads((tmp_path / "checkpoint.json").read_text())
    assert saved["iteration"] == 10 and len(saved["states"]) == 2
    resumed = _fit(blobs, max_iter=25, checkpoint_dir=tmp_path)
    _assert_identical(resumed, clean)
    assert len(resumed.lower_bounds_) == 25


@pytest.mark.parametrize("where", ["memory", "s3"])
def test_checkpoint_at_a_url_resumes(request, blobs, where):
    """checkpoint_dir as a URL (a StoragePath carrying its storage options): written
    through the object store, refused for other data, resumed to the very same model."""
    from daskgmm.io.locations import StoragePath, parse_location

    if where == "s3":
        server = request.getfixturevalue("s3_server")
        url, options = server.url() + "/ckpt", server.storage_options
    else:
        import uuid

        url, options = f"memory://ckpt-tests/{uuid.uuid4().hex}", {}
    directory = StoragePath(url, options)
    clean = _fit(blobs, max_iter=25)
    _fit(blobs, max_iter=10, checkpoint_dir=directory)
    loc = parse_location(directory).join("checkpoint.json")
    saved = json.loads(loc.fs.cat_file(loc.path))
    assert saved["iteration"] == 10
    assert not [p for p in loc.fs.find(parse_location(directory).path) if "tmp" in p]
    with pytest.raises(CheckpointError, match="other data"):
        _fit(blobs[::-1].copy(), max_iter=25, checkpoint_dir=directory)
    resumed = _fit(blobs, max_iter=25, checkpoint_dir=directory)
    _assert_identical(resumed, clean)
    if where == "s3":  # the secret reaches the filesystem, never a message or a repr
        assert server.secret not in repr(directory)
        assert server.secret not in repr(GaussianMixture(checkpoint_dir=directory))


def test_checkpoint_every(tmp_path, blobs):
    seen = []

    class Spy:
        def iteration_finished(self, info):
            path = tmp_path / "checkpoint.json"
            seen.append(json.loads(path.read_text())["iteration"] if path.exists() else None)

    from daskgmm.diagnostics.observers import observe

    with observe(Spy()):
        _fit(blobs, max_iter=7, checkpoint_dir=tmp_path, checkpoint_every=3)
    # observers run after the checkpointer: written at 3, 6 and at the end (7)
    assert seen == [None, None, 3, 3, 3, 6, 7]


def test_refuses_checkpoint_of_other_data(tmp_path, blobs):
    _fit(blobs, max_iter=2, checkpoint_dir=tmp_path)
    other = make_blobs(seed=1)
    with pytest.raises(CheckpointError, match=r"written for other data"):
        _fit(other, max_iter=4, checkpoint_dir=tmp_path)


@pytest.mark.parametrize("row", [1, 1234, 2998])
def test_refuses_data_that_differ_in_one_interior_row(tmp_path, blobs, row):
    """Same shape, chunks and first/middle/last rows: only the digest of every chunk,
    taken in the first pass, can tell."""
    _fit(blobs, max_iter=2, checkpoint_dir=tmp_path)
    other = blobs.copy()
    other[row, 1] = np.nextafter(other[row, 1], np.inf)  # one value, by one ulp
    with pytest.raises(CheckpointError, match=r"written for other data"):
        _fit(other, max_iter=4, checkpoint_dir=tmp_path)
    resumed = _fit(blobs, max_iter=4, checkpoint_dir=tmp_path)  # the right data still do
    assert resumed.n_iter_ == 4


def test_refuses_other_sample_weights(tmp_path, blobs):
    w = np.ones(len(blobs))
    _fit(blobs, max_iter=2, checkpoint_dir=tmp_path, sample_weight=w)
    w[17] = 2.0
    with pytest.raises(CheckpointError, match=r"written for other data"):
        _fit(blobs, max_iter=4, checkpoint_dir=tmp_path, sample_weight=w)


def test_finished_checkpoint_still_checks_the_data(tmp_path, blobs):
    """A checkpoint whose candidates have all stopped is not returned without reading
    the data: it is verified by one digest pass."""
    _fit(blobs, max_iter=3, checkpoint_dir=tmp_path)
    other = blobs.copy()
    other[100, 0] += 1.0
    with pytest.raises(CheckpointError, match=r"written for other data"):
        _fit(other, max_iter=3, checkpoint_dir=tmp_path)
    again = _fit(blobs, max_iter=3, checkpoint_dir=tmp_path)
    _assert_identical(again, _fit(blobs, max_iter=3))


def test_resume_with_max_iter_below_the_checkpoint_is_refused(tmp_path, blobs):
    _fit(blobs, max_iter=5, checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointError, match=r"iteration 5, beyond max_iter=3"):
        _fit(blobs, max_iter=3, checkpoint_dir=tmp_path)


def test_random_state_instance_resumes_in_another_process(tmp_path, blobs):
    """The fingerprint records a RandomState instance as such (neither its address nor
    its state, which the interrupted fit advanced): the run resumes in another process
    with a new instance, and in this one with the same, advanced instance."""
    rs = np.random.RandomState(0)
    _fit(blobs, max_iter=2, checkpoint_dir=tmp_path, random_state=rs)
    saved = json.loads((tmp_path / "checkpoint.json").read_text())
    assert "0x" not in json.dumps(saved["fingerprint"])
    code = textwrap.dedent(f"""
        import warnings, numpy as np
        from tests.conftest import make_blobs
        from daskgmm import GaussianMixture
        warnings.simplefilter("ignore")
        gm = GaussianMixture(3, covariance_type="full", tol=0.0, n_init=2, chunk_rows=500,
                             max_iter=4, random_state=np.random.RandomState(0),
                             checkpoint_dir={str(tmp_path)!r}).fit(make_blobs())
        print(gm.n_iter_)
    """)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "4"
    assert _fit(blobs, max_iter=6, checkpoint_dir=tmp_path, random_state=rs).n_iter_ == 6


def test_refuses_checkpoint_of_other_config(tmp_path, blobs):
    _fit(blobs, max_iter=2, checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointError, match=r"another configuration .*covariance_type"):
        _fit(blobs, max_iter=4, checkpoint_dir=tmp_path, covariance_type="diag")


@pytest.mark.parametrize(("content", "match"), [
    ("{not json", "is damaged"),
    ('{"format": "something-else"}', "not a daskgmm checkpoint"),
    ('{"format": "daskgmm-checkpoint", "format_version": 99}', "format version 99"),
])
def test_refuses_damaged_or_foreign_checkpoint(tmp_path, blobs, content, match):
    (tmp_path / "checkpoint.json").write_text(content)
    with pytest.raises(CheckpointError, match=match):
        _fit(blobs, max_iter=2, checkpoint_dir=tmp_path)


SCRIPT = textwrap.dedent("""
    import sys, warnings
    from tests.conftest import make_blobs
    from daskgmm import GaussianMixture
    warnings.simplefilter("ignore")
    X = make_blobs(n=200_000, d=8, k=4, seed=5)
    GaussianMixture(4, covariance_type="full", random_state=0, tol=0.0, max_iter=60,
                    chunk_rows=20_000, checkpoint_dir=sys.argv[1]).fit(X)
""")


@pytest.mark.slow
def test_sigkill_mid_fit_then_resume(tmp_path):
    ckpt = tmp_path / "ckpt"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(ckpt)], cwd=root)
    try:
        deadline = time.monotonic() + 120
        iteration = 0
        while time.monotonic() < deadline and iteration < 3:
            time.sleep(0.05)
            try:
                iteration = json.loads((ckpt / "checkpoint.json").read_text())["iteration"]
            except (FileNotFoundError, json.JSONDecodeError):
                continue
        assert proc.poll() is None, "the fit finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = json.loads((ckpt / "checkpoint.json").read_text())["iteration"]
    assert 3 <= killed_at < 60
    X = make_blobs(n=200_000, d=8, k=4, seed=5)
    kw = dict(covariance_type="full", random_state=0, tol=0.0, max_iter=60,
              chunk_rows=20_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        resumed = GaussianMixture(4, checkpoint_dir=ckpt, **kw).fit(X)
        clean = GaussianMixture(4, **kw).fit(X)
    np.testing.assert_allclose(resumed.means_, clean.means_, rtol=1e-10)
    np.testing.assert_allclose(resumed.covariances_, clean.covariances_, rtol=1e-10)
    assert resumed.lower_bounds_ == pytest.approx(clean.lower_bounds_, rel=1e-10)


# --------------------------------------------------------------------------------------
# hand edits, shared directories, stepwise walks
# --------------------------------------------------------------------------------------


def _edit(path, change, *, reseal=False):
    from daskgmm.serialize.checkpoint import seal

    body = json.loads(path.read_text())
    change(body)
    path.write_text(json.dumps(seal(body) if reseal else body))


@pytest.mark.parametrize("edit", ["mean", "digest"])
def test_hand_edited_checkpoint_is_refused_by_its_checksum(tmp_path, blobs, edit):
    """A mean moved by 0.001, or ``digest: null`` (which switched the data check off),
    no longer resumes."""
    _fit(blobs, max_iter=3, checkpoint_dir=tmp_path)
    path = tmp_path / "checkpoint.json"

    def change(body):
        if edit == "mean":
            body["states"][0]["arrays"]["means"][0][0] += 0.001
        else:
            body["digest"] = None

    _edit(path, change)
    with pytest.raises(CheckpointError, match="does not match its checksum"):
        _fit(blobs, max_iter=6, checkpoint_dir=tmp_path)
    if edit == "digest":  # even with a recomputed checksum, batch EM needs its digest
        _edit(path, lambda body: None, reseal=True)
        with pytest.raises(CheckpointError, match="holds no digest of the data"):
            _fit(blobs, max_iter=6, checkpoint_dir=tmp_path)


def test_two_fits_sharing_a_checkpoint_dir_are_detected(tmp_path, blobs):
    """Both start before either has written (so neither can refuse the other's file at
    its start); the second to write is refused instead of replacing the other's."""
    from daskgmm.serialize.checkpoint import Checkpointer

    _fit(blobs, max_iter=2, checkpoint_dir=tmp_path / "source")
    estimators = [GaussianMixture(3, **KW), GaussianMixture(3, **{**KW, "tol": 1e-3})]
    prints = [e._fingerprint(e._chunks(blobs, reset=True)) for e in estimators]

    def model_for(index):
        return estimators[0]._make_model(blobs.shape[1], 3)

    source = Checkpointer(tmp_path / "source", prints[0], 1).load(model_for)
    candidates = source.candidates
    shared = tmp_path / "shared"
    first, second = (Checkpointer(shared, p, 1) for p in prints)
    first._digest = second._digest = source.digest  # as their first passes would set
    assert first.load(model_for) is None and second.load(model_for) is None
    first.save(1, candidates)
    before = (shared / "checkpoint.json").read_bytes()
    with pytest.raises(CheckpointError, match=r"another fit with other settings \(tol: "):
        second.save(1, candidates)
    assert (shared / "checkpoint.json").read_bytes() == before  # the first's is kept
    first.save(2, candidates)  # its own file: replaced as usual
    twin = Checkpointer(shared, prints[0], 1)  # same settings, started afresh meanwhile
    twin._digest = source.digest
    with pytest.raises(CheckpointError, match="another fit with the same settings"):
        twin.save(3, candidates)
    resumed = Checkpointer(shared, prints[0], 1)
    resumed.load(model_for)
    resumed.save(3, candidates)  # a fit that resumed from the file may replace it


def test_stepwise_checkpoint_with_a_missing_group_is_refused(tmp_path, blobs):
    """A hand-edited (and resealed) incremental checkpoint whose group statistics are
    null: a CheckpointError, not a TypeError in the middle of the resumed fit."""
    _fit(blobs, max_iter=1, checkpoint_dir=tmp_path, algorithm="incremental",
         batch_chunks=2)
    path = tmp_path / "checkpoint.json"
    assert json.loads(path.read_text())["stepwise"]["groups"][0][1] is not None
    _edit(path, lambda body: body["stepwise"]["groups"][0].__setitem__(1, None),
          reseal=True)
    with pytest.raises(CheckpointError,
                       match="group 1 of candidate 0 has no statistics though it was read"):
        _fit(blobs, max_iter=3, checkpoint_dir=tmp_path, algorithm="incremental",
             batch_chunks=2)
