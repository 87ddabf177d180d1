"""What a hostile probe and a new user found in the command line (issues 19 and 20),
each reproduced: the command must refuse in one line (exit 2, no traceback, nothing
lost) or do the right thing.

Fast cases run ``main`` in this process (they end before any cluster starts); cases
that need a running fit or a signal run the command as a process.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml
import zarr

from daskgmm.cli.main import main
from daskgmm.io.generate import generate_mixture
from tests.cli_utils import assert_clean_error, finish, leftovers, run_cli, start_cli


def config(path: Path, source: object, out: Path, **sections: dict) -> Path:
    raw = {"data": {"path": str(source)},
           "model": {"n_components": 2, "random_state": 0},
           "cluster": {"n_workers": 1, "memory_limit": "1GiB", "dashboard_address": None},
           "output": {"dir": str(out), "plots": False}}
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(raw))
    return path


def refused(capsys, *args: object) -> str:
    """``main(ARGS)`` in this process: exit 2, one error line (returned), no traceback."""
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert_clean_error((code, err))
    return err


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("probes") / "x.zarr"
    generate_mixture(path, 40_000, 2, 2, chunk_rows=2000)
    return path


# ---------------------------------------------------------------------------------------
# refused before any work (in this process)
# ---------------------------------------------------------------------------------------


def test_sample_weights_are_an_input_that_overwrite_never_deletes(tmp_path, data, capsys):
    out = tmp_path / "out"
    out.mkdir()
    np.save(out / "w.npy", np.ones(40_000))
    path = config(tmp_path / "c.yaml", data, out, output={"overwrite": True},
                  data={"dataset": "X", "sample_weight": str(out / "w.npy")})
    err = refused(capsys, "fit", path)
    assert f"output.dir {out} contains data.sample_weight.path" in err
    assert np.load(out / "w.npy").shape == (40_000,)


def test_predict_overwrite_keeps_an_array_a_user_added(tmp_path, data, capsys):
    target = tmp_path / "labels.zarr"
    generate_mixture(target, 100, 2, 2)  # a store daskgmm wrote...
    zarr.open_group(target, mode="a").create_array("mine", data=np.arange(3.0))  # ...and not
    from daskgmm import GaussianMixture
    from daskgmm.io.readers import open_array

    GaussianMixture(2, random_state=0).fit(open_array(data).compute()).save(tmp_path / "m")
    err = refused(capsys, "predict", "--model", tmp_path / "m", "--data", data,
                  "--output", target, "--overwrite")
    assert "mine" in err and "not replaced" in err
    np.testing.assert_array_equal(zarr.open_group(target, mode="r")["mine"][:], [0, 1, 2])


def test_generate_refuses_absurd_sizes_before_writing(tmp_path, capsys):
    args = ("generate", "--n-features", 2, "--n-components", 2, "--output",
            tmp_path / "g.zarr")
    assert main([*map(str, args), "--n-samples", "100", "--separation", "1e308"]) == 2
    assert "--separation: must be a number from 0 to 1e+06" in capsys.readouterr().err
    err = refused(capsys, *args, "--n-samples", 10**15)
    assert "the data set needs 22,351,741.8 GiB and its file system has" in err  # 24 B a row
    assert not os.listdir(tmp_path)


def test_set_twice_is_refused(tmp_path, data, capsys):
    path = config(tmp_path / "c.yaml", data, tmp_path / "out")
    err = refused(capsys, "fit", path, "--set", "model.tol=0.1", "--set", "model.tol=0.2")
    assert "model.tol: given twice with --set" in err


def test_a_name_too_long_for_the_file_system(tmp_path, data, capsys):
    out = tmp_path / ("r" * 250)
    err = refused(capsys, "fit", config(tmp_path / "c.yaml", data, out))
    assert "too long" in err and not out.exists()


def test_unknown_storage_options_are_one_line(tmp_path, s3_server, capsys):
    url = s3_server.url() + "/x.zarr"
    path = config(tmp_path / "c.yaml", url, tmp_path / "out",
                  data={"storage_options": {**s3_server.storage_options, "colour": "red"}})
    err = refused(capsys, "fit", path)
    assert "the storage options do not suit the filesystem" in err and "colour" in err
    assert s3_server.secret not in err


def test_credentials_in_a_url_are_never_shown(tmp_path, capsys, monkeypatch):
    secret = "Sup3rS3cretValue"
    err = refused(capsys, "info", f"memory://AKIAEXAMPLE:{secret}@nowhere/run")
    assert secret not in err and "***" in err
    # a bug's traceback is printed with every credential masked too
    import sys

    cli_main = sys.modules["daskgmm.cli.main"]

    def buggy(args):
        raise RuntimeError(f"boom at https://user:{secret}@host/x?sig=abc123")

    monkeypatch.setitem(cli_main._COMMANDS, "info", buggy)
    assert main(["info", "x"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: boom" in err
    assert secret not in err and "abc123" not in err


def test_ucx_says_the_transport_is_not_available(tmp_path, capsys):
    path = config(tmp_path / "c.yaml", "sklearn:iris", tmp_path / "out",
                  cluster={"address": "ucx://127.0.0.1:12345"})
    err = refused(capsys, "fit", path)
    assert "the ucx transport is not available in this installation" in err


def test_an_address_where_no_scheduler_answers(tmp_path, http_server, capsys):
    address = "tcp://" + http_server.base.split("://", 1)[1]
    path = config(tmp_path / "c.yaml", "sklearn:iris", tmp_path / "out",
                  cluster={"address": address})
    t0 = time.monotonic()
    err = refused(capsys, "fit", path)
    assert "accepts connections but does not answer as a Dask scheduler" in err
    assert time.monotonic() - t0 < 60


# ---------------------------------------------------------------------------------------
# while a fit runs (processes)
# ---------------------------------------------------------------------------------------


def _until(proc, prefix: str, timeout: float = 120) -> list[str]:
    lines, deadline = [], time.monotonic() + timeout
    for line in proc.stderr:
        lines.append(line)
        if line.startswith(prefix) or time.monotonic() > deadline:
            break
    assert lines and lines[-1].startswith(prefix), "".join(lines)
    return lines


@pytest.mark.slow
def test_a_second_fit_to_the_same_output_fails_at_once(tmp_path, data):
    out = tmp_path / "out"
    path = config(tmp_path / "c.yaml", data, out, data={"dataset": "X"},
                  model={"tol": 0.0, "max_iter": 100_000, "init_params": "random"})
    first = start_cli("fit", path, new_session=True)
    try:
        _until(first, "iter 2/")
        t0 = time.monotonic()
        second = run_cli("fit", path)
        assert_clean_error(second, f"another daskgmm process is writing {out} now")
        assert time.monotonic() - t0 < 30
        assert not any(line.startswith("iter ") for line in second.stderr.splitlines())
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()


@pytest.mark.slow
def test_an_output_dir_created_during_the_fit_is_not_replaced(tmp_path, data):
    out = tmp_path / "out"
    path = config(tmp_path / "c.yaml", data, out, data={"dataset": "X"},
                  model={"tol": 0.0, "max_iter": 8})
    proc = start_cli("fit", path)
    _until(proc, "iter 1/")
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    _, err = finish(proc, 120)
    assert_clean_error((proc.returncode, err), f"{out} appeared while the output was being "
                                               "written")
    assert sorted(os.listdir(out)) == ["mine.txt"] and not leftovers(tmp_path)


def _sigint_when(proc, ready) -> str:
    """Send Ctrl-C to the command's process group (as a terminal does) once ``ready``."""
    deadline = time.monotonic() + 120
    while not ready(proc) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = finish(proc, 60)
    return err


def _forkserver_started(proc) -> bool:
    """The fork server of the workers is up and forking them (the cluster is starting;
    the command ignored SIGINT only for the instant it spawned the server)."""
    with_children = psutil.Process(proc.pid).children(recursive=True)
    return any("forkserver" in " ".join(p.cmdline()) and p.children()
               for p in with_children if p.is_running())


@pytest.mark.slow
def test_ctrl_c_while_the_cluster_starts_is_honoured(tmp_path, data):
    path = config(tmp_path / "c.yaml", data, tmp_path / "out", data={"dataset": "X"},
                  cluster={"n_workers": 2})
    proc = start_cli("fit", path, new_session=True)
    t0 = time.monotonic()
    err = _sigint_when(proc, _forkserver_started)
    assert_clean_error((proc.returncode, err), "interrupted; nothing was written", code=130)
    assert not any(line.startswith(("fitting", "iter ")) for line in err.splitlines()), err
    assert time.monotonic() - t0 < 60 and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_ctrl_c_during_initialisation_is_one_line(tmp_path, data):
    path = config(tmp_path / "c.yaml", data, tmp_path / "out",
                  data={"dataset": "X", "chunk_rows": 2000},
                  model={"n_init": 20, "init_params": "kmeans"})
    proc = start_cli("fit", path, new_session=True)
    _until(proc, "survey pass")  # (the k-means starts run on the survey's sample next)
    err = _sigint_when(proc, lambda p: True)
    assert_clean_error((proc.returncode, err), "interrupted", code=130)
    assert "CancelledError" not in err and "Exception" not in err, err


# ---------------------------------------------------------------------------------------
# the new user's list
# ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_example_config_fits_once_data_path_is_set(tmp_path):
    result = run_cli("example-config")
    assert result.returncode == 0 and "data:\n" in result.stdout
    (tmp_path / "run.yaml").write_text(result.stdout)
    result = run_cli("fit", "run.yaml", "--set", "data.path=sklearn:iris", "--set",
                     "model.n_components=3", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "runs" / "example" / "report.json").read_text())
    assert report["fit"]["converged"] and report["data"]["shape"] == [150, 4]


def test_help_texts_and_example_comments_say_what_the_code_does(capsys):
    """chunk_rows: null merges storage chunks up to 64 MiB (it does not keep the store's
    chunking); cluster.yaml's display prints every iteration and says how to make its
    data; object-store.yaml's predict gives the endpoint's storage options."""
    from daskgmm.cli.main import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["predict", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "storage's chunking" not in text
    assert "whole storage chunks of about 64 MiB" in text
    repo = Path(__file__).resolve().parents[1]
    for name in ("iris.yaml", "cluster.yaml"):
        text = (repo / "configs" / name).read_text()
        assert "keeps the store's chunking" not in text
        assert "keeps the file's own chunking" not in text
        assert "64 MiB" in text
    assert "Print progress every 5 iterations" not in (repo / "configs" /
                                                       "cluster.yaml").read_text()
    assert "daskgmm generate" in (repo / "configs" / "cluster.yaml").read_text()
    assert "--storage-options" in (repo / "configs" / "object-store.yaml").read_text()


# ---------------------------------------------------------------------------------------
# weights that leave nothing to fit, through the command (finding 10; in this process)
# ---------------------------------------------------------------------------------------


def _weights_file(tmp_path: Path, form: str, values: np.ndarray) -> Path:
    """``values`` as a .npy file, or as a Zarr array written with zarr's defaults (chunks
    equal to the fill value are not stored: an all-zero array has none)."""
    if form == "npy":
        np.save(tmp_path / "w.npy", values)
        return tmp_path / "w.npy"
    zarr.create_array(tmp_path / "w.zarr", data=values, chunks=(2000,))
    if not values.any():
        assert [p.name for p in (tmp_path / "w.zarr").iterdir()] == ["zarr.json"]
    return tmp_path / "w.zarr"


@pytest.mark.parametrize(("form", "nonzero", "k", "message"), [
    ("npy", [], 2, "sample_weight must not be all zero"),
    ("zarr", [], 2, "sample_weight must not be all zero"),
    ("npy", [5, 9000, 31000], 5, "only 3 rows have a non-zero sample weight, fewer than "
                                 "n_components=5"),
], ids=["all-zero-npy", "all-zero-zarr", "3-non-zero-for-5-components"])
def test_weights_with_nothing_to_fit_are_one_line(tmp_path, data, capsys, form, nonzero,
                                                 k, message):
    """``data.sample_weight`` all zero (a .npy file, or a Zarr array whose zero chunks
    zarr never stored, read as the fill value), or with fewer non-zero weights than
    components: exit 2, one line, nothing written, the weights untouched."""
    from tests.cli_utils import tree_digest

    values = np.zeros(40_000)
    values[nonzero] = 1.0
    weights = _weights_file(tmp_path, form, values)
    before = tree_digest(weights)
    out = tmp_path / "out"
    path = config(tmp_path / "c.yaml", data, out, model={"n_components": k},
                  data={"dataset": "X", "sample_weight": str(weights),
                        "allow_missing_chunks": form == "zarr"})
    err = refused(capsys, "fit", path, "--quiet")
    assert message in err
    assert not out.exists() and leftovers(tmp_path) == []
    assert tree_digest(weights) == before
