"""Fault-injection matrix of the command line: ``daskgmm fit`` and ``daskgmm predict`` run
as real processes while something goes wrong, and what they leave behind is checked.

Faults: SIGKILL of the command at several points (during initialisation, in the middle
of the EM iterations, while the outputs are being written, at start-up), a full disk
(ENOSPC, on a small tmpfs) for the outputs and for the checkpoints, a read-only output
or checkpoint location (a read-only tmpfs), the death of a separately started
``dask scheduler`` in the middle of a run, and outputs on an object store (moto behind
a proxy) whose uploads are refused in the middle: a label chunk, a copy of the commit,
the marker's copy, everything from some copy on.

After every case:

* the input data (and, for predict, the model) are byte-identical (SHA-256 of every file);
* nothing that claims to be complete is half-written: every directory holding a
  ``model.json`` under the output location loads with :func:`daskgmm.load`, and a final
  output that exists is complete (a loadable model and a report; a label array without
  a single unwritten row);
* the exit code and the one-line message are the documented ones (2 and a line naming
  the location's configuration key or flag; SIGKILL cannot be answered);
* after a SIGKILL the same command runs again to completion (``--resume`` for a fit with
  checkpoints, ``--overwrite`` for predict).

Every case is recorded in a table (``command | fault | outcome | held``), printed at the
end of the module and written to ``$DASKGMM_FAULT_MATRIX`` (Markdown) when it is set.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

import daskgmm
from daskgmm.io.generate import generate_mixture
from tests.cli_utils import cli_env, start_cli, tree_digest
from tests.clusterproc import ProcessCluster
from tests.mounts import Tmpfs
from tests.servers import flaky_s3  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")]

N, D, K, ROWS = 120_000, 4, 3, 6_000
RESULTS: list[dict[str, str]] = []


# ---------------------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def matrix_table():
    yield
    lines = ["| command | fault | outcome | held |", "| --- | --- | --- | --- |"]
    lines += [f"| {r['command']} | {r['fault']} | {r['outcome']} | {r['held']} |"
              for r in RESULTS]
    held = sum(r["held"] == "yes" for r in RESULTS)
    lines.append(f"\n{len(RESULTS)} cases tried, {held} held.")
    table = "\n".join(lines)
    print("\n" + table)
    target = os.environ.get("DASKGMM_FAULT_MATRIX")
    if target:
        Path(target).write_text(table + "\n")


class Case:
    """Records one row of the matrix: held unless an assertion fails inside."""

    def __init__(self, command: str, fault: str) -> None:
        self.row = {"command": command, "fault": fault, "outcome": "", "held": "no"}

    def __enter__(self) -> Case:
        return self

    def outcome(self, text: str) -> None:
        self.row["outcome"] = text.replace("|", "/")

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if exc_type is None:
            self.row["held"] = "yes"
        elif not self.row["outcome"]:
            self.outcome(f"FAILED: {str(exc).splitlines()[0][:120] if exc else exc_type}")
        RESULTS.append(self.row)


# ---------------------------------------------------------------------------------------
# processes and triggers
# ---------------------------------------------------------------------------------------


class Run:
    """A ``daskgmm`` process whose stderr is read by a thread (nothing blocks)."""

    def __init__(self, *args: object, env: dict[str, str] | None = None) -> None:
        self.proc = start_cli(*args, env=env or cli_env(), new_session=True)
        self.lines: list[str] = []
        self._new = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            with self._new:
                self.lines.append(line.rstrip("\n"))
                self._new.notify_all()
        with self._new:
            self._new.notify_all()

    def wait_line(self, prefix: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        with self._new:
            while not any(line.startswith(prefix) for line in self.lines):
                if self.proc.poll() is not None and not self._reader.is_alive():
                    raise AssertionError(f"exited before {prefix!r}:\n" + self.stderr)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {prefix!r} within {timeout} s:\n" + self.stderr)
                self._new.wait(min(left, 0.5))

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 120
                 ) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                raise AssertionError(f"exited before {what}:\n" + self.stderr)
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout} s:\n" + self.stderr)
            time.sleep(0.005)

    def kill(self) -> None:
        """SIGKILL the command itself (its worker processes notice and exit)."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def finish(self, timeout: float = 180) -> int:
        try:
            self.proc.wait(timeout=timeout)
        except Exception:
            self.proc.send_signal(signal.SIGABRT)
            self.proc.wait(timeout=30)
            self._reader.join(timeout=5)
            raise AssertionError(f"did not exit within {timeout} s:\n{self.stderr}") from None
        self._reader.join(timeout=10)
        return self.proc.returncode

    def cleanup(self) -> None:
        """Kill anything of this run's process group that is still alive."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    def error_line(self) -> str:
        errors = [line for line in self.lines if line.startswith("daskgmm: error")]
        assert len(errors) == 1, self.stderr
        assert "Traceback" not in self.stderr, self.stderr
        return errors[0]


def _tmp_with(parent: Path, suffix: str) -> Path | None:
    found = sorted(parent.glob(f".*{suffix}.tmp-*")) if parent.exists() else []
    return found[0] if found else None


def _leftovers(parent: Path) -> int:
    return sum(1 for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name) \
        if parent.exists() else 0


# ---------------------------------------------------------------------------------------
# the invariants
# ---------------------------------------------------------------------------------------


def assert_no_half_written_model(root: Path) -> int:
    """Every directory under ``root`` (temporaries included) with a model.json loads."""
    count = 0
    if not root.exists():
        return 0
    for meta in root.rglob("model.json"):
        daskgmm.load(meta.parent)  # raises if it claims completeness but is not
        count += 1
    return count


def assert_complete_labels(path: Path, n: int) -> None:
    labels = zarr.open_array(path, mode="r")[:]
    assert labels.shape == (n,) and labels.dtype == np.int64
    assert labels.min() >= 0, "unwritten rows (fill value -1) in a final label array"


def assert_fit_output_whole_or_absent(out: Path) -> str:
    if not out.exists():
        return "no output"
    daskgmm.load(out / "model")
    report = json.loads((out / "report.json").read_text())
    assert report["format"] == "daskgmm-report"
    if (out / "labels.zarr").exists():
        assert_complete_labels(out / "labels.zarr", N)
    return "complete output"


# ---------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def data(base) -> Path:
    path = base / "data.zarr"
    generate_mixture(path, N, D, K, seed=5, chunk_rows=ROWS)
    return path


@pytest.fixture(scope="module")
def model(base, data) -> Path:
    config = write_config(base / "model.yaml", data, base / "fitted", max_iter=10)
    run = Run("fit", config, "--quiet")
    assert run.finish() == 0, run.stderr
    return base / "fitted"


def write_config(path: Path, data: Path, out: Path, *, checkpoint: Path | None = None,
                 cluster: dict | None = None, **model) -> Path:
    raw = {
        "name": "faults",
        "data": {"path": str(data), "dataset": "X"},
        "model": {"n_components": K, "random_state": 0, "init_params": "kmeans",
                  "tol": 0.0, "max_iter": 30, **model},
        "cluster": cluster or {"n_workers": 1, "memory_limit": "1GiB",
                               "dashboard_address": None},
        "output": {"dir": str(out), "labels": True, "plots": True},
        "checkpoint": {"dir": str(checkpoint) if checkpoint else None, "every": 1},
    }
    path.write_text(yaml.safe_dump(raw))
    return path


# ---------------------------------------------------------------------------------------
# fit: SIGKILL
# ---------------------------------------------------------------------------------------

FIT_KILLS = {
    "during initialisation": lambda run, out: run.wait_line("fitting "),
    "in the middle of the EM iterations": lambda run, out: run.wait_line("iter 3/"),
    "while the labels are written": lambda run, out: run.wait_for(
        lambda: (t := _tmp_with(out.parent, out.name)) is not None
        and (t / "labels.zarr" / "c").exists(), "a label chunk"),
    "while the model is saved": lambda run, out: run.wait_for(
        lambda: (t := _tmp_with(out.parent, out.name)) is not None
        and (t / "model").exists(), "the model directory"),
}


@pytest.mark.parametrize("when", list(FIT_KILLS))
def test_fit_sigkill(tmp_path, data, when):
    out, ckpt = tmp_path / "run" / "out", tmp_path / "run" / "ckpt"
    config = write_config(tmp_path / "c.yaml", data, out, checkpoint=ckpt)
    before = tree_digest(data), tree_digest(config)
    with Case("fit", f"SIGKILL {when}") as case:
        run = Run("fit", config)
        try:
            FIT_KILLS[when](run, out)
            run.kill()
        finally:
            run.cleanup()
        assert run.proc.returncode == -signal.SIGKILL
        assert (tree_digest(data), tree_digest(config)) == before
        models = assert_no_half_written_model(tmp_path / "run")
        state = assert_fit_output_whole_or_absent(out)
        stale = _leftovers(out.parent)
        resume = ["--resume"] if (ckpt / "checkpoint.json").exists() else []
        again = Run("fit", config, "--quiet", "--set", "output.overwrite=true", *resume)
        try:
            assert again.finish() == 0, again.stderr
        finally:
            again.cleanup()
        assert assert_fit_output_whole_or_absent(out) == "complete output"
        assert tree_digest(data) == before[0]
        case.outcome(f"killed; inputs identical; {state}; {models} loadable model(s), "
                     f"{stale} stale temporaries; rerun{' --resume' if resume else ''} "
                     "completes")


# ---------------------------------------------------------------------------------------
# fit: full disk, read-only locations
# ---------------------------------------------------------------------------------------


def test_fit_output_on_a_full_disk(tmp_path, data):
    with Case("fit", "ENOSPC: output.dir on a 64 KiB tmpfs") as case, \
            Tmpfs(tmp_path / "small", size="64k") as mount:
        out = mount.path / "out"
        config = write_config(tmp_path / "c.yaml", data, out, max_iter=3)
        before = tree_digest(data)
        run = Run("fit", config)
        try:
            code = run.finish()
        finally:
            run.cleanup()
        line = run.error_line()
        assert code == 2, run.stderr
        assert line.startswith(f"daskgmm: error: output.dir {out}: no space left on the "
                               "device")
        assert tree_digest(data) == before
        assert not out.exists() and assert_no_half_written_model(mount.path) == 0
        assert _leftovers(mount.path) == 0
        case.outcome(f"exit 2, `{line[16:90]}...`; nothing left on the disk")


def test_fit_checkpoint_on_a_full_disk(tmp_path, data):
    with Case("fit", "ENOSPC: checkpoint.dir on a full tmpfs") as case, \
            Tmpfs(tmp_path / "small", size="64k") as mount:
        mount.fill(leave=0)
        out, ckpt = tmp_path / "out", mount.path / "ckpt"
        config = write_config(tmp_path / "c.yaml", data, out, checkpoint=ckpt)
        before = tree_digest(data)
        run = Run("fit", config)
        try:
            code = run.finish()
        finally:
            run.cleanup()
        line = run.error_line()
        assert code == 2, run.stderr
        assert line.startswith(f"daskgmm: error: checkpoint.dir {ckpt}: no space left on "
                               "the device"), line
        assert tree_digest(data) == before and not out.exists()
        assert not (ckpt / "checkpoint.json").exists()
        case.outcome(f"exit 2, `{line[16:90]}...`; no output")


@pytest.mark.parametrize("where", ["output.dir", "checkpoint.dir"])
def test_fit_on_a_read_only_location(tmp_path, data, where):
    with Case("fit", f"read-only {where} (read-only tmpfs)") as case, \
            Tmpfs(tmp_path / "ro", read_only=True) as mount:
        out = mount.path / "out" if where == "output.dir" else tmp_path / "out"
        ckpt = mount.path / "ckpt" if where == "checkpoint.dir" else None
        config = write_config(tmp_path / "c.yaml", data, out, checkpoint=ckpt)
        before = tree_digest(data)
        t0 = time.monotonic()
        run = Run("fit", config)
        try:
            code = run.finish()
        finally:
            run.cleanup()
        seconds = time.monotonic() - t0
        line = run.error_line()
        assert code == 2
        assert line.startswith(f"daskgmm: error: {where} ") and "read-only" in line, line
        assert not any(x.startswith(("iter ", "fitting")) for x in run.lines), \
            "refused only after starting work"
        assert tree_digest(data) == before and not out.exists()
        case.outcome(f"exit 2 before any work ({seconds:.1f} s), `{line[16:80]}...`")


# ---------------------------------------------------------------------------------------
# fit and predict: the scheduler dies
# ---------------------------------------------------------------------------------------


@pytest.fixture
def remote(tmp_path):
    """A scheduler and one worker, connected (the command's wait for workers is bounded
    by the short connect timeout below)."""
    from distributed import Client

    with ProcessCluster(tmp_path / "procs", death_timeout=20) as procs:
        procs.start_scheduler()
        procs.start_worker()
        with Client(procs.address, timeout="30s") as client:
            procs.wait_for_workers(client, 1)
        yield procs


# A pass submitted just after the scheduler died waits for the client to give up
# reconnecting: its connect timeout, 20 s by default. The runs below get a shorter one
# (the scheduler is on 127.0.0.1 and up, so connecting takes milliseconds).
LOST_SCHEDULER_ENV = {"DASKGMM_CONNECT_TIMEOUT": "5"}


def _scheduler_pid(procs: ProcessCluster) -> int:
    return procs.processes[0].pid


def test_fit_scheduler_dies(tmp_path, data, remote):
    out = tmp_path / "out"
    config = write_config(tmp_path / "c.yaml", data, out,
                          cluster={"address": remote.address, "stall_timeout": 30})
    before = tree_digest(data)
    with Case("fit", "the dask scheduler is SIGKILLed mid-EM") as case:
        run = Run("fit", config, env=cli_env(**LOST_SCHEDULER_ENV))
        try:
            run.wait_line("iter 3/")
            os.killpg(_scheduler_pid(remote), signal.SIGKILL)
            code = run.finish(120)
        finally:
            run.cleanup()
        line = run.error_line()
        assert code == 2, run.stderr
        assert line.startswith(f"daskgmm: error: lost the connection to the Dask scheduler "
                               f"at {remote.address} during the run"), line
        assert tree_digest(data) == before and not out.exists()
        assert _leftovers(out.parent) == 0
        case.outcome(f"exit 2, `{line[16:76]}...`; no output")


def test_predict_scheduler_dies(tmp_path, data, model, remote):
    target = tmp_path / "labels.zarr"
    before = tree_digest(data), tree_digest(model)
    with Case("predict", "the dask scheduler is SIGKILLed while labels are written") \
            as case:
        run = Run("predict", "--model", model, "--data", data, "--dataset", "X",
                  "--output", target, "--scheduler", remote.address,
                  env=cli_env(**LOST_SCHEDULER_ENV))
        try:
            run.wait_for(lambda: (t := _tmp_with(tmp_path, target.name)) is not None
                         and (t / "zarr.json").exists(), "the label array", timeout=120)
            os.killpg(_scheduler_pid(remote), signal.SIGKILL)
            code = run.finish(120)
        finally:
            run.cleanup()
        line = run.error_line()
        assert code == 2, run.stderr
        assert "lost the connection to the Dask scheduler" in line, line
        assert (tree_digest(data), tree_digest(model)) == before
        assert not target.exists() and _leftovers(tmp_path) == 0
        case.outcome(f"exit 2, `{line[16:76]}...`; no output")


# ---------------------------------------------------------------------------------------
# predict: SIGKILL, full disk, read-only
# ---------------------------------------------------------------------------------------

PREDICT_KILLS = {
    "at start-up (before the cluster is up)": lambda run, target: run.wait_for(
        lambda: _tmp_with(target.parent, target.name) is not None, "the temporary output"),
    "while the labels are written": lambda run, target: run.wait_for(
        lambda: (t := _tmp_with(target.parent, target.name)) is not None
        and (t / "c").exists(), "a label chunk"),
}


@pytest.mark.parametrize("when", list(PREDICT_KILLS))
def test_predict_sigkill(tmp_path, data, model, when):
    target = tmp_path / "out" / "labels.zarr"
    target.parent.mkdir()
    before = tree_digest(data), tree_digest(model)
    with Case("predict", f"SIGKILL {when}") as case:
        run = Run("predict", "--model", model, "--data", data, "--dataset", "X",
                  "--output", target)
        try:
            PREDICT_KILLS[when](run, target)
            run.kill()
        finally:
            run.cleanup()
        assert (tree_digest(data), tree_digest(model)) == before
        state = "no output"
        if target.exists():
            assert_complete_labels(target, N)
            state = "complete output"
        stale = _leftovers(target.parent)
        again = Run("predict", "--model", model, "--data", data, "--dataset", "X",
                    "--output", target, "--overwrite", "--quiet")
        try:
            assert again.finish() == 0, again.stderr
        finally:
            again.cleanup()
        assert_complete_labels(target, N)
        case.outcome(f"killed; inputs identical; {state}; {stale} stale temporaries; "
                     "rerun --overwrite completes")


def test_predict_output_on_a_full_disk(tmp_path, data, model):
    with Case("predict", "ENOSPC: --output on a 32 KiB tmpfs") as case, \
            Tmpfs(tmp_path / "small", size="32k") as mount:
        target = mount.path / "labels.zarr"
        before = tree_digest(data), tree_digest(model)
        run = Run("predict", "--model", model, "--data", data, "--dataset", "X",
                  "--output", target)
        try:
            code = run.finish()
        finally:
            run.cleanup()
        line = run.error_line()
        assert code == 2, run.stderr
        assert line.startswith(f"daskgmm: error: --output {target}: no space left on the "
                               "device"), line
        assert (tree_digest(data), tree_digest(model)) == before
        assert not target.exists() and _leftovers(mount.path) == 0
        case.outcome(f"exit 2, `{line[16:90]}...`; nothing left on the disk")


def test_predict_on_a_read_only_location(tmp_path, data, model):
    with Case("predict", "read-only --output (read-only tmpfs)") as case, \
            Tmpfs(tmp_path / "ro", read_only=True) as mount:
        target = mount.path / "labels.zarr"
        run = Run("predict", "--model", model, "--data", data, "--dataset", "X",
                  "--output", target)
        try:
            code = run.finish()
        finally:
            run.cleanup()
        line = run.error_line()
        assert code == 2 and "read-only" in line, run.stderr
        assert line.startswith(f"daskgmm: error: --output {target}")
        case.outcome(f"exit 2 before any work, `{line[16:80]}...`")


# ---------------------------------------------------------------------------------------
# object-store outputs: an upload cut in the middle
# ---------------------------------------------------------------------------------------


def _refuse(match: Callable[[str, str], bool], nth: int = 1, *, after: bool = False):
    """A proxy rule refusing (403 AccessDenied) the ``nth`` request ``match`` accepts
    (and, with ``after``, every request from then on)."""
    seen = {"n": 0, "tripped": False}

    def rule(kind: str, path: str, counts: dict) -> tuple[int, str] | None:
        if seen["tripped"] and after:
            return 403, "AccessDenied"
        if match(kind, path):
            seen["n"] += 1
            if seen["n"] == nth:
                seen["tripped"] = True
                return 403, "AccessDenied"
        return None

    return rule


UPLOAD_CUTS = {  # (a fresh rule for every case)
    "the 3rd label chunk upload refused": lambda: _refuse(
        lambda kind, path: kind == "put" and "labels.zarr/c/" in path, 3),
    "the 2nd server-side copy of the commit refused": lambda: _refuse(
        lambda kind, path: kind == "copy", 2),
    "the copy of the marker (the last) refused": lambda: _refuse(
        lambda kind, path: kind == "copy" and path.endswith(".daskgmm.json")),
    "every request refused from the 4th copy on": lambda: _refuse(
        lambda kind, path: kind == "copy", 4, after=True),
}


def _s3_invariants(url: str, so: dict) -> str:
    """Nothing at ``url`` that a reader accepts is partial: no marker unless complete;
    every model.json there loads; a label array with its metadata is complete."""
    from daskgmm.io.locations import Location
    from daskgmm.io.storage import read_output_marker, zarr_store

    target = Location(url, so)
    listing = target.find()
    if read_output_marker(target) is not None:
        return "complete output"
    for key in listing:
        if key.endswith("model.json"):
            daskgmm.load(target.join(key.rsplit("/", 1)[0]).url, storage_options=so)
        if key.endswith("labels.zarr/zarr.json"):
            labels = zarr.open_array(zarr_store(target.join("labels.zarr"),
                                                read_only=True), mode="r")[:]
            assert labels.min() >= 0, "a label array with unwritten rows"
    return f"no marker ({len(listing)} object(s) left, none accepted)"


@pytest.mark.parametrize("cut", list(UPLOAD_CUTS))
def test_fit_to_an_object_store_cut_in_the_middle(tmp_path, data, flaky_s3, cut):  # noqa: F811
    url = f"s3://{flaky_s3.bucket}/matrix-{abs(hash(cut)) % 10**8}/run"
    so = flaky_s3.storage_options
    config = write_config(tmp_path / "c.yaml", data, tmp_path / "unused", max_iter=3)
    raw = yaml.safe_load(config.read_text())
    raw["output"].update(dir=url, storage_options=so)
    raw["data"]["chunk_rows"] = ROWS  # 20 chunks, 20 label uploads
    config.write_text(yaml.safe_dump(raw))
    before = tree_digest(data)
    with Case("fit", f"object store: {cut}") as case:
        flaky_s3.reset(UPLOAD_CUTS[cut]())
        run = Run("fit", config)
        try:
            code = run.finish()
        finally:
            run.cleanup()
            flaky_s3.reset()
        line = run.error_line()
        assert code == 2 and line.startswith(f"daskgmm: error: output.dir {url}"), line
        assert flaky_s3.secret not in run.stderr
        assert tree_digest(data) == before
        state = _s3_invariants(url, so)
        assert state != "complete output"
        again = Run("fit", config, "--quiet", "--set", "output.overwrite=true")
        try:
            rerun = again.finish()
        finally:
            again.cleanup()
        if "every request" in cut:  # the clean-up was refused too
            rerun_text = "rerun completes" if rerun == 0 else (
                f"rerun at once refused: `{again.error_line()[16:90]}...`")
        else:
            assert rerun == 0, again.stderr
            assert _s3_invariants(url, so) == "complete output"
            rerun_text = "rerun completes"
        case.outcome(f"exit 2, `{line[16:70]}...`; {state}; {rerun_text}")


def test_predict_to_an_object_store_cut_in_the_middle(tmp_path, data, model,
                                                      flaky_s3):  # noqa: F811
    import json as _json

    url = f"s3://{flaky_s3.bucket}/matrix-predict/labels.zarr"
    so = flaky_s3.storage_options
    before = tree_digest(data), tree_digest(model)
    with Case("predict", "object store: the 2nd server-side copy refused") as case:
        flaky_s3.reset(UPLOAD_CUTS["the 2nd server-side copy of the commit refused"]())
        run = Run("predict", "--model", model, "--data", data, "--dataset", "X",
                  "--output", url, "--output-storage-options", _json.dumps(so))
        try:
            code = run.finish()
        finally:
            run.cleanup()
            flaky_s3.reset()
        line = run.error_line()
        assert code == 2 and line.startswith(f"daskgmm: error: --output {url}"), line
        assert (tree_digest(data), tree_digest(model)) == before
        state = _s3_invariants(url, so)
        assert state != "complete output"
        case.outcome(f"exit 2, `{line[16:70]}...`; {state}")
