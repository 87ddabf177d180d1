"""Tests of daskgmm.cli.cluster on real clusters: where the embedded cluster listens,
a run that cannot progress stopped by the engine's stall watch (cluster.stall_timeout;
the watch itself is tested in tests/test_cluster_watch.py), and clusters started from a
``cluster.factory`` section."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from daskgmm.cli.config import parse_config
from daskgmm.cli.main import main
from daskgmm.io.generate import generate_mixture
from tests.cli_utils import assert_clean_error, cli_env, finish, start_cli
from tests.clusterproc import ProcessCluster

pytestmark = pytest.mark.slow

_LISTENING = r'''
import json, sys, urllib.error, urllib.request
import psutil
from daskgmm.cli.config import parse_config
from daskgmm.cli.cluster import connect

def listening():
    procs = [psutil.Process(), *psutil.Process().children(recursive=True)]
    return [[p.pid, c.laddr.ip, c.laddr.port] for p in procs
            for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]

cfg = parse_config({"data": {"path": "x"}, "output": {"dir": "o"},
                    "cluster": {"n_workers": 2, "memory_limit": "1GiB",
                                "dashboard_address": json.loads(sys.argv[1])}}).cluster
with connect(cfg, log=None) as (client, info):
    result = {"info": info, "listening": listening(),
              "scheduler_services": client.scheduler_info()["services"],
              "worker_services": client.run(
                  lambda dask_worker: sorted(dask_worker.services))}
    ports = [client.scheduler_info()["services"].get("dashboard"),
             *client.run(lambda dask_worker: dask_worker.http_server.port).values()]
    answers = {}
    for port in ports:
        for page in ("health", "metrics", "status"):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/{page}",
                                            timeout=10) as r:
                    answers[f"{port}/{page}"] = r.status
            except urllib.error.HTTPError as exc:
                answers[f"{port}/{page}"] = exc.code
    result["answers"] = answers
print(json.dumps(result))
'''


def _embedded(dashboard: object) -> dict:
    out = subprocess.run([sys.executable, "-c", _LISTENING, json.dumps(dashboard)],
                         capture_output=True, text=True, timeout=120, env=cli_env())
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_embedded_dashboard_listens_on_loopback_only():
    result = _embedded(":0")
    assert 200 in result["answers"].values()
    assert result["info"]["dashboard_link"].startswith("http://127.0.0.1:")
    assert result["listening"], result
    assert {ip for _, ip, _ in result["listening"]} == {"127.0.0.1"}, result["listening"]


def test_no_dashboard_means_http_servers_that_serve_nothing():
    """``dashboard_address: null``: distributed's HTTP servers get no routes (dask's
    configuration), so no page, metric or health check answers, and every port the
    cluster opens is on 127.0.0.1."""
    result = _embedded(None)
    assert result["info"]["dashboard_link"] is None
    assert len(result["answers"]) == 3 * 3  # the scheduler's and two workers' servers
    assert set(result["answers"].values()) == {404}, result["answers"]
    assert {ip for _, ip, _ in result["listening"]} == {"127.0.0.1"}


# ---------------------------------------------------------------------------------------
# the command line: stalls and lost workers
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cluster-data") / "x.zarr"
    generate_mixture(path, 20_000, 3, 3, seed=2, chunk_rows=1000)
    return path


def _config(path: Path, data: Path, out: Path, cluster: dict, **model) -> Path:
    raw = {"data": {"path": str(data), "dataset": "X"},
           "model": {"n_components": 3, "random_state": 0, **model},
           "cluster": cluster,
           "output": {"dir": str(out), "plots": False}}
    path.write_text(yaml.safe_dump(raw))
    return path


def test_fit_on_paused_workers_stops_with_one_line(tmp_path, data):
    config = _config(tmp_path / "c.yaml", data, tmp_path / "out",
                     {"n_workers": 1, "memory_limit": "1GiB", "dashboard_address": None,
                      "stall_timeout": 3})
    env = cli_env(DASK_DISTRIBUTED__WORKER__MEMORY__PAUSE="0.05")
    t0 = time.monotonic()
    proc = start_cli("fit", config, env=env)
    _, err = finish(proc, 90)
    assert_clean_error((proc.returncode, err), "every one of the 1 Dask worker(s)",
                       "has been paused for 3 s", "cluster.memory_limit",
                       "data.chunk_rows", "cluster.stall_timeout")
    assert time.monotonic() - t0 < 60
    assert not (tmp_path / "out").exists()


def test_the_outputs_pass_gives_up_on_paused_workers(data):
    """The pass the command runs itself after a fit (labels, scores, the plot's sample)
    is watched as the engine's are: on a cluster whose workers are all paused it raises
    ClusterStalledError within the stall timeout instead of waiting forever."""
    import dask
    from distributed import Client, LocalCluster

    from daskgmm import GaussianMixture
    from daskgmm.cli.outputs import output_pass
    from daskgmm.engine.watch import STALL_TIMEOUT_KEY
    from daskgmm.errors import ClusterStalledError
    from daskgmm.io.readers import open_array
    from tests.test_cluster_watch import _wait_for_paused_workers

    X = open_array(data, "X", chunk_rows=5000)
    model = GaussianMixture(3, max_iter=2, random_state=0).fit(X)  # (no cluster yet)
    outcome: dict = {}

    def outputs() -> None:
        try:
            output_pass(model, X)
        except BaseException as exc:
            outcome["error"] = exc

    with dask.config.set({"distributed.worker.memory.pause": 0.01}), \
            LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                         memory_limit="1GiB", dashboard_address=None) as cluster, \
            Client(cluster) as client, dask.config.set({STALL_TIMEOUT_KEY: 1}):
        _wait_for_paused_workers(client, 1)
        thread = threading.Thread(target=outputs, daemon=True)
        thread.start()
        thread.join(60)
        assert not thread.is_alive(), "the outputs pass still waits after 60 s"
    assert isinstance(outcome.get("error"), ClusterStalledError), outcome
    assert "has been paused for 1 s" in str(outcome["error"])


def test_fit_whose_workers_all_die_stops_with_one_line(tmp_path, data):
    with ProcessCluster(tmp_path / "procs") as procs:
        address = procs.start_scheduler()
        worker = procs.start_worker()
        config = _config(tmp_path / "c.yaml", data, tmp_path / "out",
                         {"address": address, "stall_timeout": 3}, tol=0.0, max_iter=10**6,
                         init_params="random")
        proc = start_cli("fit", config)
        try:
            for line in proc.stderr:
                if line.startswith("iter 2/"):
                    break
            procs.kill_pid(worker.pid)
            _, err = finish(proc, 90)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert_clean_error((proc.returncode, err), "the Dask cluster has had no workers for 3 s",
                       "cluster.stall_timeout")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------
# cluster.factory
# ---------------------------------------------------------------------------------------


def test_fit_on_a_cluster_started_by_a_factory(tmp_path, data, capsys):
    factory = {"class": "distributed.LocalCluster",
               "options": {"n_workers": 0, "threads_per_worker": 1, "processes": True,
                           "memory_limit": "1GiB", "dashboard_address": None},
               "scale": 2}
    config = _config(tmp_path / "c.yaml", data, tmp_path / "out",
                     {"factory": factory, "wait_for_workers": 2, "wait_timeout": 60})
    assert main(["fit", str(config), "--quiet"]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["cluster"]["kind"] == "factory"
    assert report["cluster"]["n_workers"] == 2
    assert report["config"]["cluster"]["factory"]["class"] == "distributed.LocalCluster"
    assert report["fit"]["converged"]


def test_factory_with_adapt_and_too_few_workers(tmp_path, data):
    factory = {"class": "distributed.LocalCluster",
               "options": {"n_workers": 0, "processes": True, "memory_limit": "1GiB",
                           "dashboard_address": None},
               "adapt": {"minimum": 1, "maximum": 1}}
    config = _config(tmp_path / "c.yaml", data, tmp_path / "out",
                     {"factory": factory, "wait_for_workers": 3, "wait_timeout": 5})
    proc = start_cli("fit", config)
    _, err = finish(proc, 120)
    # (the adaptive worker may not have joined within the 5 s on a loaded machine)
    assert_clean_error((proc.returncode, err), "of the 3 Dask worker(s) asked for "
                                               "(cluster.wait_for_workers)",
                       "within 5 s (cluster.wait_timeout)")
    assert "only 1 of the 3" in err or "only 0 of the 3" in err, err


@pytest.mark.parametrize(("factory", "expected"), [
    ({"class": "dask_jobqueue.SLURMCluster", "scale": 2},
     "the module dask_jobqueue is not installed; install it with `pip install "
     "dask-jobqueue`"),
    ({"class": "dask_kubernetes.operator.KubeCluster"},
     "install it with `pip install dask-kubernetes`"),
    ({"class": "collections.OrderedDict"}, "not a Dask cluster class"),
    ({"class": "distributed.NoSuchCluster"}, "distributed has no 'NoSuchCluster'"),
    ({"class": "distributed.SpecCluster", "options": {"n_wrkers": 2}},
     "cluster.factory.options: distributed.SpecCluster refused them"),
])
def test_factory_mistakes_are_one_line(tmp_path, data, factory, expected):
    config = _config(tmp_path / "c.yaml", data, tmp_path / "out", {"factory": factory})
    proc = start_cli("fit", config)
    _, err = finish(proc, 120)
    assert_clean_error((proc.returncode, err), expected)
    assert not (tmp_path / "out").exists()


def test_inproc_scheduler_is_refused_on_the_command_line(tmp_path, data):
    proc = start_cli("predict", "--model", tmp_path, "--data", data, "--output",
                     tmp_path / "l.zarr", "--scheduler", "inproc://10.0.0.1/1/2")
    _, err = finish(proc, 60)
    assert_clean_error((proc.returncode, err), "inproc:// addresses exist only inside")


def test_parse_config_keeps_factory_options_as_given():
    raw = {"data": {"path": "x"}, "output": {"dir": "o"},
           "cluster": {"factory": {"class": "dask_jobqueue.SLURMCluster",
                                   "options": {"cores": 4, "job_extra_directives":
                                               ["--qos=low"]}, "scale": 3}}}
    factory = parse_config(raw).cluster.factory
    assert factory.options == {"cores": 4, "job_extra_directives": ["--qos=low"]}


def test_a_cluster_whose_start_is_interrupted_is_closed_and_forgotten():
    """Ctrl-C while a cluster starts: the half-built cluster is closed at once and removed
    from distributed's registry, whose exit hook would otherwise close it again and print a
    traceback after the command's one-line message."""
    from distributed import LocalCluster
    from distributed.deploy.spec import SpecCluster

    from daskgmm.cli.cluster import _closed_if_interrupted

    made = []
    with pytest.raises(KeyboardInterrupt), _closed_if_interrupted():
        made.append(LocalCluster(n_workers=1, processes=False, dashboard_address=None))
        raise KeyboardInterrupt
    assert made[0].status.name == "closed"
    assert made[0] not in set(SpecCluster._instances)


def test_workers_keep_quiet_about_user_errors_and_a_heartbeat_to_a_closing_scheduler():
    """The filter the command installs on its workers' ``distributed.worker`` logger
    drops a failed heartbeat's traceback (logged when the cluster closes, after a user
    mistake too) and a task's failure by a daskgmm error, and keeps everything else."""
    import logging

    from daskgmm.cli.cluster import _QuietUserErrors

    def record(msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
        exc_info = None
        if exc:
            try:
                raise OSError("Stream is closed")
            except OSError:
                exc_info = sys.exc_info()
        return logging.LogRecord("distributed.worker", logging.ERROR, __file__, 1, msg,
                                 args, exc_info)

    quiet = _QuietUserErrors()
    assert not quiet.filter(record("Failed to communicate with scheduler during "
                                   "heartbeat.", exc=True))
    assert not quiet.filter(record("Compute Failed\nKey: %s\nException: %s", "x",
                                   "NonFiniteDataError('rows 3..4')"))
    assert quiet.filter(record("Compute Failed\nKey: %s\nException: %s", "x",
                               "ZeroDivisionError('bug')"))
    assert quiet.filter(record("Unexpected exception during heartbeat. Closing worker.",
                               exc=True))
    assert quiet.filter(record("Worker is at 85%% memory usage. Pausing worker."))
