"""Tests of daskgmm.serialize.model_files: saving and loading models, no pickle."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import pathlib
import pickle
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning, NotFittedError

from daskgmm.errors import ModelFormatError
from daskgmm.models import load as load_model
from daskgmm.models import model_summary, save_model
from daskgmm.models.gaussian import GaussianMixture

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


@pytest.fixture(scope="module")
def X() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(200, 3))


@pytest.fixture(scope="module")
def fitted(X) -> dict[str, GaussianMixture]:
    return {cov: GaussianMixture(2, covariance_type=cov, random_state=0).fit(X)
            for cov in COVARIANCE_TYPES}


@pytest.fixture
def saved(tmp_path, fitted) -> Path:
    return save_model(fitted["full"], tmp_path / "model")


def assert_same_predictions(a: GaussianMixture, b: GaussianMixture, X: np.ndarray) -> None:
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    np.testing.assert_array_equal(a.score_samples(X), b.score_samples(X))


def assert_same_params(a: GaussianMixture, b: GaussianMixture) -> None:
    pa, pb = a.get_params(), b.get_params()
    assert pa.keys() == pb.keys()
    for key, value in pa.items():
        if isinstance(value, np.ndarray) or isinstance(pb[key], np.ndarray):
            np.testing.assert_array_equal(np.asarray(value, dtype=float), pb[key])
        else:
            assert value == pb[key], key


# --------------------------------------------------------------------------------------
# round trips
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_round_trip_gives_identical_predictions(tmp_path, fitted, X, cov):
    model = fitted[cov]
    path = save_model(model, tmp_path / f"gm-{cov}")
    assert path == tmp_path / f"gm-{cov}"
    # the model's two files and the marker that lets overwrite replace only what
    # daskgmm wrote
    assert sorted(p.name for p in path.iterdir()) == [".daskgmm.json", "arrays.npz",
                                                      "model.json"]
    loaded = load_model(path)
    assert type(loaded) is GaussianMixture
    assert_same_predictions(model, loaded, X)
    assert loaded.score(X) == model.score(X)
    for name in ("weights_", "means_", "covariances_", "precisions_",
                 "precisions_cholesky_"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name))
        assert getattr(loaded, name).dtype == np.float64
    assert loaded.lower_bounds_ == model.lower_bounds_
    for name in ("converged_", "n_iter_", "lower_bound_", "n_features_in_"):
        assert getattr(loaded, name) == getattr(model, name)
        assert type(getattr(loaded, name)) is type(getattr(model, name))
    assert_same_params(model, loaded)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_params_round_trip_including_init_arrays(tmp_path, X):
    model = GaussianMixture(
        2, covariance_type="diag", tol=1e-4, reg_covar=1e-5, max_iter=50,
        weights_init=[0.25, 0.75], means_init=[[0.0, 0.0, 0.0], [1.0, -1.0, 0.5]],
        precisions_init=np.ones((2, 3)), random_state=7, chunk_rows=64, split_every=4,
    ).fit(X)
    loaded = load_model(save_model(model, tmp_path / "m"))
    assert_same_params(model, loaded)
    assert isinstance(loaded.means_init, np.ndarray)
    np.testing.assert_array_equal(loaded.means_init, [[0.0, 0.0, 0.0], [1.0, -1.0, 0.5]])
    assert_same_predictions(model, loaded, X)
    # The loaded estimator refits exactly as the original does.
    assert_same_predictions(GaussianMixture(**model.get_params()).fit(X),
                            loaded.fit(X), X)


def test_arrays_are_plain_float64_npz(saved):
    with np.load(saved / "arrays.npz", allow_pickle=False) as npz:
        assert sorted(npz.files) == sorted(
            ["weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_",
             "lower_bounds_"])
        assert all(npz[name].dtype == np.float64 for name in npz.files)
    meta = json.loads((saved / "model.json").read_text())
    assert meta["format"] == "daskgmm-model"
    assert meta["format_version"] == 2
    assert meta["class"] == "GaussianMixture"
    assert meta["fitted"]["covariance_type"] == "full"
    assert meta["fitted"]["n_components"] == 2
    assert meta["fitted"]["n_features_in_"] == 3
    assert set(meta["arrays"]["means_"]) == {"shape", "dtype", "sha256"}


def test_random_state_instance_is_stored_as_null_with_a_note(tmp_path, X):
    model = GaussianMixture(2, random_state=np.random.RandomState(0)).fit(X)
    path = save_model(model, tmp_path / "m")
    loaded = load_model(path)
    assert loaded.random_state is None
    assert_same_predictions(model, loaded, X)
    meta = json.loads((path / "model.json").read_text())
    assert meta["params"]["random_state"] is None
    assert any("RandomState" in note for note in meta["notes"])
    assert "RandomState" in model_summary(path)


def test_numpy_integer_random_state(tmp_path, X):
    model = GaussianMixture(2, random_state=np.int64(3)).fit(X)
    loaded = load_model(save_model(model, tmp_path / "m"))
    assert loaded.random_state == 3 and type(loaded.random_state) is int


def test_infinite_lower_bound_is_strict_json(tmp_path, X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = GaussianMixture(2, max_iter=0, random_state=0).fit(X)
    assert model.lower_bound_ == -np.inf
    path = save_model(model, tmp_path / "m")

    def refuse(constant):
        raise AssertionError(f"non-standard JSON constant {constant}")

    json.loads((path / "model.json").read_text(), parse_constant=refuse)
    loaded = load_model(path)
    assert loaded.lower_bound_ == -np.inf
    assert loaded.lower_bounds_ == []
    assert_same_predictions(model, loaded, X)


def test_extra_metadata_and_summary(tmp_path, fitted):
    path = save_model(fitted["diag"], tmp_path / "m", extra_metadata={
        "data_shape": (np.int64(1_000_000), 3), "source": pathlib.Path("/data/x.zarr"),
        "seconds": np.float32(1.5)})
    meta = json.loads((path / "model.json").read_text())
    assert meta["metadata"] == {"data_shape": [1_000_000, 3], "source": "/data/x.zarr",
                                "seconds": 1.5}
    text = model_summary(path)
    model = fitted["diag"]
    assert str(path) in text
    assert "daskgmm-model v2" in text
    assert "covariance_type='diag'" in text
    assert "K=2" in text and "D=3" in text
    assert f"after {model.n_iter_} iterations" in text
    assert "converged" in text
    assert f"{model.weights_[0]:.4f}" in text
    assert "data_shape:" in text and "[1000000, 3]" in text
    assert "/data/x.zarr" in text
    assert len(text.splitlines()) < 15


def test_unserialisable_extra_metadata_writes_nothing(tmp_path, fitted):
    with pytest.raises(TypeError, match="JSON"):
        save_model(fitted["full"], tmp_path / "m", extra_metadata={"x": object()})
    assert list(tmp_path.iterdir()) == []


def test_feature_names_round_trip(tmp_path, fitted, X):
    model = GaussianMixture(**fitted["full"].get_params())
    model.__dict__.update({k: v for k, v in fitted["full"].__dict__.items()
                           if k.endswith("_")})
    model.feature_names_in_ = np.array(["a", "b", "c"], dtype=object)
    loaded = load_model(save_model(model, tmp_path / "m"))
    np.testing.assert_array_equal(loaded.feature_names_in_, ["a", "b", "c"])


# --------------------------------------------------------------------------------------
# refusing to save
# --------------------------------------------------------------------------------------
def test_unfitted_model_is_refused(tmp_path):
    with pytest.raises(NotFittedError):
        save_model(GaussianMixture(2), tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


def test_non_daskgmm_model_is_refused(tmp_path, X):
    from sklearn.mixture import GaussianMixture as SkGM

    with pytest.raises(TypeError, match=r"daskgmm\.GaussianMixture"):
        save_model(SkGM(2).fit(X), tmp_path / "m")


def test_refuses_to_overwrite(saved, fitted, X):
    before = {p.name: p.read_bytes() for p in saved.iterdir()}
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_model(fitted["tied"], saved)
    assert {p.name: p.read_bytes() for p in saved.iterdir()} == before
    assert_same_predictions(load_model(saved), fitted["full"], X)


def test_overwrite_replaces(saved, fitted, X):
    save_model(fitted["tied"], saved, overwrite=True)
    loaded = load_model(saved)
    assert loaded.covariance_type == "tied"
    assert_same_predictions(loaded, fitted["tied"], X)
    assert [p.name for p in saved.parent.iterdir()] == [saved.name]


def test_overwrite_replaces_an_empty_directory(tmp_path, fitted):
    (tmp_path / "m").mkdir()
    save_model(fitted["full"], tmp_path / "m", overwrite=True)
    assert load_model(tmp_path / "m").n_components == 2


@pytest.mark.parametrize("kind", ["file", "directory"])
def test_overwrite_never_replaces_something_that_is_not_a_model(tmp_path, fitted, kind):
    target = tmp_path / "precious"
    if kind == "file":
        target.write_text("keep me")
    else:
        target.mkdir()
        (target / "thesis.tex").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a daskgmm model directory"):
        save_model(fitted["full"], target, overwrite=True)
    assert (target if kind == "file" else target / "thesis.tex").read_text() == "keep me"


# --------------------------------------------------------------------------------------
# refusing to load
# --------------------------------------------------------------------------------------
def read_meta(path: Path) -> dict:
    return json.loads((path / "model.json").read_text())


def write_meta(path: Path, meta: dict) -> None:
    (path / "model.json").write_text(json.dumps(meta, indent=2))


def edit_meta(path: Path, edit) -> None:
    meta = read_meta(path)
    edit(meta)
    write_meta(path, meta)


def rewrite_arrays(path: Path, *, update_meta: bool = True, drop=(), **changes) -> None:
    """Rewrite arrays.npz with some arrays changed, keeping model.json consistent."""
    with np.load(path / "arrays.npz") as npz:
        arrays = {name: npz[name] for name in npz.files if name not in drop}
    arrays.update(changes)
    np.savez(path / "arrays.npz", **arrays)
    if update_meta:
        meta = read_meta(path)
        meta["arrays"] = {
            name: {"shape": list(a.shape), "dtype": a.dtype.str,
                   "sha256": hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()}
            for name, a in arrays.items()}
        write_meta(path, meta)


def means(path: Path) -> np.ndarray:
    with np.load(path / "arrays.npz") as npz:
        return npz["means_"]


def weights(path: Path) -> np.ndarray:
    with np.load(path / "arrays.npz") as npz:
        return npz["weights_"]


def _set(*keys_value):
    *keys, value = keys_value

    def edit(meta):
        d = meta
        for key in keys[:-1]:
            d = d[key]
        d[keys[-1]] = value
    return edit


def _delete(*keys):
    def edit(meta):
        d = meta
        for key in keys[:-1]:
            d = d[key]
        del d[keys[-1]]
    return edit


DAMAGES = {
    "missing": (lambda p: p.rename(p.with_name("elsewhere")), "no such model directory"),
    "a file": (lambda p: (p.rename(p.with_name("x")), p.write_text("hi")),
               "not a directory"),
    "no model.json (partial write)": (lambda p: (p / "model.json").unlink(),
                                      "no model.json.*GaussianMixture.save"),
    "truncated model.json": (
        lambda p: (p / "model.json").write_text((p / "model.json").read_text()[:100]),
        "not valid JSON"),
    "binary model.json": (lambda p: (p / "model.json").write_bytes(b"\xff\xfe\x00"),
                          "not UTF-8"),
    "json list": (lambda p: (p / "model.json").write_text("[1, 2]"), "JSON object"),
    "foreign format": (lambda p: edit_meta(p, _set("format", "sklearn-onnx")),
                       "foreign directory"),
    "no format": (lambda p: edit_meta(p, _delete("format")), "foreign directory"),
    "newer format": (lambda p: edit_meta(p, _set("format_version", 3)),
                     "newer daskgmm.*[Uu]pgrade"),
    "older format": (lambda p: edit_meta(p, _set("format_version", 1)),
                     "format version 1.*save it again"),
    "bad format_version": (lambda p: edit_meta(p, _set("format_version", "1")),
                           "invalid format_version"),
    "other class": (lambda p: edit_meta(p, _set("class", "KMeans")),
                    "unsupported model class"),
    "no fitted": (lambda p: edit_meta(p, _delete("fitted")), "no 'fitted'"),
    "fitted key missing": (lambda p: edit_meta(p, _delete("fitted", "n_iter_")),
                           "lacks the fitted values"),
    "fitted wrong type": (lambda p: edit_meta(p, _set("fitted", "converged_", "yes")),
                          "converged_ is not a boolean"),
    "unknown param": (lambda p: edit_meta(p, _set("params", "gpu", True)),
                      "does not know.*gpu.*upgrade"),
    "invalid param": (lambda p: edit_meta(p, _set("params", "tol", -1.0)),
                      "invalid parameters"),
    "contradicting params": (lambda p: edit_meta(p, _set("params", "n_components", 3)),
                             "contradicts"),
    "unknown covariance type": (
        lambda p: edit_meta(p, _set("fitted", "covariance_type", "banded")),
        "unknown covariance_type"),
    "arrays.npz missing": (lambda p: (p / "arrays.npz").unlink(), "arrays.npz is missing"),
    "arrays.npz truncated": (
        lambda p: (p / "arrays.npz").write_bytes((p / "arrays.npz").read_bytes()[:300]),
        "arrays.npz cannot be read"),
    "arrays.npz garbage": (lambda p: (p / "arrays.npz").write_bytes(b"\x00" * 1000),
                           r"not an \.npz \(zip\) archive"),
    "arrays.npz corrupted": (
        lambda p: (p / "arrays.npz").write_bytes(b"PK\x03\x04" + b"\x00" * 1000),
        "arrays.npz cannot be read"),
    "arrays.npz is a .npy": (lambda p: np.save(open(p / "arrays.npz", "wb"), np.zeros(3)),
                             "single .npy array"),
    "array missing from npz": (
        lambda p: rewrite_arrays(p, drop=["means_"], update_meta=False),
        r"missing \['means_'\]"),
    "extra array in npz": (
        lambda p: rewrite_arrays(p, update_meta=False, bonus=np.zeros(2)),
        r"unexpected \['bonus'\]"),
    "array undeclared": (lambda p: edit_meta(p, _delete("arrays", "covariances_")),
                         r"no entry for the arrays \['covariances_'\]"),
    "array declared extra": (
        lambda p: edit_meta(p, _set("arrays", "bonus", {"shape": [1], "dtype": "<f8",
                                                        "sha256": "0" * 64})),
        r"unexpected arrays \['bonus'\]"),
    "checksum mismatch": (lambda p: rewrite_arrays(p, update_meta=False,
                                                   means_=means(p) + 1e-12),
                          "damaged: arrays.npz does not match the checksums"),
    "checksum edited": (lambda p: edit_meta(p, _set("arrays", "weights_", "sha256",
                                                    "0" * 64)),
                        "does not match the checksums"),
    "declared shape differs": (lambda p: edit_meta(p, _set("arrays", "means_", "shape",
                                                           [3, 2])),
                               "declares shape"),
    "wrong shape": (lambda p: rewrite_arrays(p, means_=np.zeros((2, 4))),
                    r"means_ has shape \(2, 4\).*needs \(2, 3\)"),
    "wrong n_features": (lambda p: edit_meta(p, _set("fitted", "n_features_in_", 4)),
                         "needs"),
    "NaN": (lambda p: rewrite_arrays(p, means_=np.where([[1, 0, 0], [0, 0, 0]], np.nan,
                                                        means(p))),
            "NaN or infinite"),
    "int dtype array": (lambda p: rewrite_arrays(p, means_=np.zeros((2, 3), dtype=int)),
                        None),
    "bad weights": (lambda p: rewrite_arrays(p, weights_=weights(p) * 2), "summing to 1"),
    "string array": (lambda p: rewrite_arrays(p, means_=np.array([["a"] * 3] * 2)),
                     "non-numeric dtype"),
}


@pytest.mark.parametrize("case", list(DAMAGES))
def test_damaged_or_foreign_directory_is_refused(saved, case):
    damage, message = DAMAGES[case]
    damage(saved)
    if message is None:  # harmless change: integer arrays are read as float64
        assert load_model(saved).means_.dtype == np.float64
        return
    with pytest.raises(ModelFormatError, match=message) as info:
        load_model(saved)
    assert str(saved) in str(info.value)
    assert isinstance(info.value, ValueError)
    with pytest.raises(ModelFormatError):
        model_summary(saved)


def test_interrupted_overwrite_is_explained(saved):
    leftover = saved.with_name(f".{saved.name}.old-0123456789abcdef")
    saved.rename(leftover)
    with pytest.raises(ModelFormatError, match="rename it"):
        load_model(saved)
    assert load_model(leftover).n_components == 2


def test_partial_directory_is_refused(tmp_path, fitted):
    """A copy that stopped before model.json (the completion marker) is refused."""
    saved = save_model(fitted["full"], tmp_path / "m")
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "arrays.npz").write_bytes((saved / "arrays.npz").read_bytes())
    with pytest.raises(ModelFormatError, match=r"no model\.json"):
        load_model(partial)


class Payload:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_object_array_is_never_unpickled(saved, tmp_path):
    marker = tmp_path / "pwned"
    evil = np.array([Payload(marker)], dtype=object)
    rewrite_arrays(saved, update_meta=False, means_=evil)
    edit_meta(saved, _set("arrays", "means_", {"shape": [1], "dtype": "|O",
                                               "sha256": "0" * 64}))
    with pytest.raises(ModelFormatError, match="pickled"):
        load_model(saved)
    assert not marker.exists()
    # The payload is live: an unsafe loader would have run it.
    with np.load(saved / "arrays.npz", allow_pickle=True) as npz:
        npz["means_"]
    assert marker.exists()


def test_pickle_file_is_never_unpickled(saved, tmp_path):
    marker = tmp_path / "pwned"
    (saved / "arrays.npz").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(ModelFormatError, match="pickled"):
        load_model(saved)
    assert not marker.exists()


# --------------------------------------------------------------------------------------
# a writer killed with SIGKILL at random moments
# --------------------------------------------------------------------------------------
SAVE_LOOP = textwrap.dedent(
    """
    import sys
    from daskgmm.models import load as load_model
    from daskgmm.models import save_model

    model = load_model(sys.argv[1])
    print("started", flush=True)
    i = 0
    while True:
        save_model(model, sys.argv[2], overwrite=True, extra_metadata={"i": i})
        i += 1
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
@pytest.mark.parametrize("delay", [0.0, 0.05, 0.2])
def test_killed_save_leaves_a_complete_model_or_none(tmp_path, saved, fitted, X, delay):
    target = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", SAVE_LOOP, str(saved), str(target)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "started"
        if delay:
            import time

            time.sleep(delay)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()

    if target.exists():
        assert_same_predictions(load_model(target), fitted["full"], X)
    else:
        # Killed before the first save finished, or between the two renames of an
        # overwrite: then the previous version is complete beside it.
        for old in tmp_path.glob(".out.old-*"):
            assert_same_predictions(load_model(old), fitted["full"], X)
    # Whatever else is left is a temporary, never mistaken for the model.
    for entry in tmp_path.iterdir():
        assert entry.name in ("model", "out") or ".tmp-" in entry.name \
            or ".old-" in entry.name


# --------------------------------------------------------------------------------------
# trust: what cannot be read is never written; what is inconsistent never loads
# --------------------------------------------------------------------------------------
def _copy(model):
    clone = type(model)(**model.get_params())
    clone.__dict__.update({k: copy.deepcopy(v) for k, v in model.__dict__.items()
                           if k.endswith("_")})
    return clone


def _bayesian(X):
    from daskgmm import BayesianGaussianMixture

    return BayesianGaussianMixture(n_components=2, random_state=0, max_iter=20).fit(X)


SAVE_REFUSALS = {
    "tol nan": (lambda m: m.set_params(tol=float("nan")), "The 'tol' parameter"),
    "scaled weights": (lambda m: setattr(m, "weights_", m.weights_ * 2.0),
                       "weights_ are not non-negative numbers summing to 1"),
    "negated covariances": (lambda m: setattr(m, "covariances_", -m.covariances_),
                            "covariances_ are not positive definite"),
    "feature names of the wrong length": (
        lambda m: setattr(m, "feature_names_in_", np.array(["a", "b"], dtype=object)),
        "feature_names_in_ is not a list of n_features_in_ strings"),
    "a NaN mean": (lambda m: m.means_.__setitem__((0, 0), np.nan),
                   "means_ holds NaN or infinite values"),
    "a negative Bayesian prior": (
        lambda m: m.set_params(weight_concentration_prior=-1.0),
        "The 'weight_concentration_prior' parameter"),
}


@pytest.mark.parametrize("case", list(SAVE_REFUSALS))
def test_save_refuses_what_load_would_refuse(tmp_path, fitted, X, case):
    """save() runs load's own checks on the state it would write (one validation):
    before, each of these was written and then refused by load."""
    from daskgmm.errors import InvalidParameterError

    change, match = SAVE_REFUSALS[case]
    model = _copy(_bayesian(X) if "Bayesian" in case else fitted["full"])
    change(model)
    with pytest.raises(InvalidParameterError, match=r"daskgmm\.load would refuse it") as info:
        model.save(tmp_path / "m")
    assert match in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("change", "match"), [
    ({"n_components": 5}, r"n_components is 5 but the fitted model has 2 components"),
    ({"covariance_type": "diag"}, r"covariance_type is 'diag' but the fitted covariances_"),
])
def test_parameters_changed_after_fitting_are_refused_at_save_time(tmp_path, fitted,
                                                                   change, match):
    from daskgmm.errors import InvalidParameterError

    model = GaussianMixture(**fitted["full"].get_params())
    model.__dict__.update({k: v for k, v in fitted["full"].__dict__.items()
                           if k.endswith("_")})
    model.set_params(**change)
    with pytest.raises(InvalidParameterError, match=match):
        model.save(tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


def _spd_break(cov):
    bad = cov.copy()
    bad[0] = -np.eye(3)
    return bad


CONSISTENCY = {
    "covariance not positive definite": (
        lambda p: rewrite_arrays(p, covariances_=_spd_break(arrays(p)["covariances_"])),
        "not positive definite"),
    "cholesky not triangular": (
        lambda p: rewrite_arrays(p, precisions_cholesky_=arrays(p)["precisions_cholesky_"]
                                 + np.tril(np.ones((3, 3)), -1)),
        "not upper triangular"),
    "cholesky does not match": (
        lambda p: rewrite_arrays(p, precisions_cholesky_=arrays(p)["precisions_cholesky_"]
                                 * 1.5),
        "do not equal precisions_cholesky_"),
    "precisions do not invert covariances": (
        lambda p: rewrite_arrays(p, covariances_=arrays(p)["covariances_"] * 2.0),
        "not the inverses of covariances_"),
    "negative weights": (lambda p: rewrite_arrays(p, weights_=np.array([1.5, -0.5])),
                         "summing to 1"),
}


def arrays(path: Path) -> dict:
    with np.load(path / "arrays.npz") as npz:
        return {name: npz[name] for name in npz.files}


@pytest.mark.parametrize("case", list(CONSISTENCY))
def test_inconsistent_model_with_valid_checksums_is_refused(saved, case):
    damage, match = CONSISTENCY[case]
    damage(saved)
    with pytest.raises(ModelFormatError, match=match):
        load_model(saved)


def test_loaded_model_carries_no_checkpoint_directory(saved):
    edit_meta(saved, _set("params", "checkpoint_dir", "/somewhere/the/author/chose"))
    assert load_model(saved).checkpoint_dir is None


def _peak_of_a_refused_load(saved: Path, match: str) -> int:
    """The peak of the allocations (bytes) while ``load`` refuses ``saved`` with a
    ModelFormatError matching ``match``."""
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(ModelFormatError, match=match):
            load_model(saved)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _npz_with_a_bomb(path: Path, name: str, n_values: int) -> None:
    """Rewrite arrays.npz with ``name`` a deflated array of ``n_values`` zeros, streamed
    (never held in memory): a few hundred kB that inflate to 8 bytes per value."""
    import zipfile

    with np.load(path / "arrays.npz") as npz:
        keep = {k: npz[k] for k in npz.files if k != name}
    with zipfile.ZipFile(path / "arrays.npz", "w", zipfile.ZIP_DEFLATED) as archive:
        for key, value in keep.items():
            with archive.open(key + ".npy", "w") as member:
                np.lib.format.write_array(member, value)
        with archive.open(name + ".npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, {
                "descr": "<f8", "fortran_order": False, "shape": (n_values,)})
            zeros = bytes(2**22)
            for _ in range(n_values * 8 // len(zeros)):
                member.write(zeros)


# The bombs inflate to 128 MiB: far beyond what their ~100 kB on disk may inflate to
# (daskgmm writes its arrays uncompressed) and large enough that reading one shows in
# the allocations; a 2 GiB one only took seconds more to deflate while being written.
BOMB_VALUES = 2**24


def test_compressed_bomb_declared_in_model_json_is_refused_before_reading(saved):
    import time

    _npz_with_a_bomb(saved, "lower_bounds_", BOMB_VALUES)  # 128 MiB once inflated
    assert (saved / "arrays.npz").stat().st_size < 2**20
    edit_meta(saved, _set("arrays", "lower_bounds_", "shape", [2**28]))
    started = time.perf_counter()
    peak = _peak_of_a_refused_load(saved, "larger than any array of a model")
    assert time.perf_counter() - started < 5
    assert peak < 16 * 2**20, f"{peak / 2**20:.0f} MiB allocated: the bomb was read"


def test_compressed_bomb_behind_a_small_declared_shape_is_refused(saved):
    _npz_with_a_bomb(saved, "lower_bounds_", BOMB_VALUES)
    with pytest.raises(ModelFormatError, match=r"'lower_bounds_' would inflate"):
        load_model(saved)


def test_compressed_bomb_whose_declared_shapes_match_its_arrays_is_refused(saved):
    """The probe: K and D declared to match the arrays (here K=100,000, D=100, four
    arrays of 80 MB each inflated, under 1 MiB on disk). Refused before a member is
    decompressed, so loading it allocates little (before: every array inflated, then
    refused by its checksum: about twice their size)."""
    import zipfile

    K, D = 100_000, 100
    shapes = {"weights_": (K,), "means_": (K, D), "covariances_": (K, D),
              "precisions_": (K, D), "precisions_cholesky_": (K, D),
              "lower_bounds_": (3,)}
    with zipfile.ZipFile(saved / "arrays.npz", "w", zipfile.ZIP_DEFLATED) as archive:
        for name, shape in shapes.items():
            with archive.open(name + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array_header_1_0(member, {
                    "descr": "<f8", "fortran_order": False, "shape": shape})
                for _ in range(math.prod(shape) * 8 // 2**20):
                    member.write(bytes(2**20))
                member.write(bytes(math.prod(shape) * 8 % 2**20))
    assert (saved / "arrays.npz").stat().st_size < 2**20

    def declare(meta):
        meta["params"].update(n_components=K, covariance_type="diag")
        meta["fitted"].update(n_components=K, n_features_in_=D, covariance_type="diag")
        meta["arrays"] = {name: {"shape": list(shape), "dtype": "<f8", "sha256": "0" * 64}
                          for name, shape in shapes.items()}

    edit_meta(saved, declare)
    peak = _peak_of_a_refused_load(saved, "would inflate from")
    assert peak < 16 * 2**20, f"{peak / 2**20:.0f} MiB allocated"


def test_deeply_nested_model_json_is_refused(saved):
    (saved / "model.json").write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(ModelFormatError, match="nested more than"):
        load_model(saved)
