"""Tests of daskgmm.cli.config: YAML run configurations, overrides and error messages."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from daskgmm.cli.config import (
    RunConfig,
    apply_overrides,
    load_config,
    parse_config,
)
from daskgmm.errors import ConfigError
from daskgmm.io.locations import Location

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
EXAMPLES = sorted([*CONFIG_DIR.glob("*.yaml"), *CONFIG_DIR.glob("*.yml")])

MINIMAL = {"data": {"path": "data/x.npy"}, "output": {"dir": "runs/x"}}


def minimal(**sections: dict) -> dict:
    """The minimal config with some sections replaced or added."""
    raw = {key: dict(value) for key, value in MINIMAL.items()}
    raw.update(sections)
    return raw


def problems(raw: object, **kwargs: object) -> list[str]:
    """The problem lines of the ConfigError that ``parse_config(raw)`` raises."""
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "configs/x.yaml", **kwargs)
    header, *lines = str(info.value).splitlines()
    n = len(lines)
    assert header == f"configs/x.yaml: {n} problem{'s' if n != 1 else ''}:"
    assert all(line.startswith("  ") for line in lines)
    return [line.strip() for line in lines]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- valid


def test_minimal_config_fills_defaults(tmp_path):
    config = parse_config(MINIMAL, base_dir=tmp_path)
    assert isinstance(config, RunConfig)
    assert config.name is None
    assert config.data.path == Location(str(tmp_path / "data" / "x.npy"))
    assert config.data.dataset is None and config.data.chunk_rows is None
    model = config.model
    assert (model.n_components, model.covariance_type, model.tol, model.reg_covar) == (
        1, "full", 1e-3, 1e-6)
    assert (model.max_iter, model.n_init, model.init_params) == (100, 1, "kmeans")
    assert model.weights_init is None and model.means_init is None
    assert model.precisions_init is None and model.random_state is None
    assert (model.warm_start, model.verbose, model.verbose_interval) == (False, 0, 10)
    assert (model.split_every, model.dtype, model.cache) == (8, "float64", "auto")
    cluster = config.cluster
    assert cluster.address is None and cluster.scheduler_file is None and cluster.tls is None
    assert (cluster.n_workers, cluster.threads_per_worker) == (2, 1)
    assert (cluster.memory_limit, cluster.dashboard_address) == ("2GiB", "127.0.0.1:0")
    out = config.output
    assert out.dir.path == str(tmp_path / "runs" / "x")
    assert (out.labels, out.responsibilities, out.plots, out.overwrite) == (
        False, False, True, False)
    assert (config.checkpoint.dir, config.checkpoint.every) == (None, 1)


def test_estimator_params_defaults_match_scikit_learn():
    from sklearn.mixture import GaussianMixture

    params = parse_config(MINIMAL).estimator().get_params()
    sk = GaussianMixture().get_params()
    for key, value in sk.items():
        assert params[key] == value, key
    assert set(params) - set(sk) == {"split_every", "dtype", "cache", "algorithm",
                                     "batch_chunks", "learning_decay", "learning_offset",
                                     "chunk_rows", "checkpoint_dir", "checkpoint_every",
                                     "missing"}


def test_full_config(tmp_path):
    ca, cert, key = (write(tmp_path / "certs" / n, "x") for n in ("ca.pem", "c.pem", "c.key"))
    raw = {
        "name": "full",
        "data": {"path": "/abs/data.h5", "dataset": "X", "chunk_rows": 1000},
        "model": {
            "n_components": 2, "covariance_type": "diag", "tol": "1e-4", "reg_covar": 0,
            "max_iter": 0, "n_init": 3, "init_params": "random_from_data",
            "weights_init": [0.25, 0.75], "means_init": [[0, 1], [2.5, 3]],
            "precisions_init": [[1, 1], [2, 2]], "random_state": 7, "warm_start": True,
            "verbose": 2, "verbose_interval": 1, "split_every": 2, "dtype": "float32",
            "cache": False,
        },
        "cluster": {
            "address": "tls://10.0.0.1:8786", "n_workers": 4, "threads_per_worker": 2,
            "memory_limit": "500MB", "dashboard_address": None,
            "tls": {"ca_file": "certs/ca.pem", "cert_file": str(cert),
                    "key_file": "certs/c.key", "require_encryption": False},
        },
        "output": {"dir": "out", "labels": True, "responsibilities": True, "plots": False,
                   "overwrite": True},
        "checkpoint": {"dir": "ckpt", "every": 5},
    }
    config = parse_config(raw, base_dir=tmp_path)
    assert config.name == "full"
    assert config.data.path.path == "/abs/data.h5" and config.data.chunk_rows == 1000
    assert config.model.tol == 1e-4 and config.model.cache is False
    assert config.cluster.tls.ca_file == str(ca)
    assert config.cluster.tls.key_file == str(key)
    assert config.cluster.tls.require_encryption is False
    assert config.checkpoint.dir.path == str(tmp_path / "ckpt")

    params = config.estimator().get_params()
    assert isinstance(params["means_init"], np.ndarray)
    assert params["means_init"].dtype == np.float64 and params["means_init"].shape == (2, 2)
    np.testing.assert_array_equal(params["weights_init"], [0.25, 0.75])
    np.testing.assert_array_equal(params["precisions_init"], [[1, 1], [2, 2]])
    assert params["random_state"] == 7 and params["dtype"] == "float32"
    assert params["verbose"] == 0 and params["checkpoint_every"] == 5  # the run's display


@pytest.mark.parametrize("value", ["auto", True, False])
def test_cache_values(value):
    assert parse_config(minimal(model={"cache": value})).model.cache == value


@pytest.mark.parametrize("value", ["auto", "2GiB", "500MB", "1.5 GB", 0, 2**30])
def test_memory_limit_values(value):
    assert parse_config(minimal(cluster={"memory_limit": value})).cluster.memory_limit == value


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:8786", "ucx://node-1:1234",
                                     "tcp://[::1]:8786", "tcp://scheduler.example.org:1"])
def test_cluster_addresses(address):
    assert parse_config(minimal(cluster={"address": address})).cluster.address == address


def test_empty_sections_are_defaults():
    config = parse_config(minimal(model=None, cluster=None, checkpoint=None))
    assert config.model.n_components == 1 and config.cluster.n_workers == 2


def test_scheduler_file_alone_is_fine(tmp_path):
    config = parse_config(minimal(cluster={"scheduler_file": "s.json"}), base_dir=tmp_path)
    assert config.cluster.scheduler_file == str(tmp_path / "s.json")


# --------------------------------------------------------------------------- errors


def test_too_small():
    assert problems(minimal(model={"n_components": 0})) == [
        "model.n_components: must be an integer >= 1, got 0"]


@pytest.mark.parametrize(("section", "key", "value", "expected"), [
    ("model", "tol", -1.0, "must be a number >= 0.0, got -1.0"),
    ("model", "reg_covar", -1e-9, "must be a number >= 0.0, got -1e-09"),
    ("model", "max_iter", -1, "must be an integer >= 0, got -1"),
    ("model", "n_init", 0, "must be an integer >= 1, got 0"),
    ("model", "random_state", -1, "must be an integer from 0 to 4294967295 or null, got -1"),
    ("model", "random_state", 2**32,
     f"must be an integer from 0 to 4294967295 or null, got {2**32}"),
    ("model", "verbose", -1, "must be an integer >= 0, true or false, got -1"),
    ("model", "verbose_interval", 0, "must be an integer >= 1, got 0"),
    ("model", "split_every", 1, "must be an integer >= 2, got 1"),
    ("cluster", "n_workers", 0, "must be >= 1, got 0"),
    ("cluster", "threads_per_worker", 0, "must be >= 1, got 0"),
    ("checkpoint", "every", 0, "must be >= 1, got 0"),
    ("data", "chunk_rows", 0, "must be >= 1, got 0"),
])
def test_bounds_in_the_estimators_words(section, key, value, expected):
    """The model's bounds are the estimator's own (its _validate_params), worded for
    YAML; the other sections' are the schema's."""
    raw = minimal(**{section: {**MINIMAL.get(section, {}), key: value}})
    assert problems(raw) == [f"{section}.{key}: {expected}"]


def test_literal():
    assert problems(minimal(model={"covariance_type": "fll"})) == [
        "model.covariance_type: must be one of 'diag', 'full', 'spherical', 'tied', "
        "got 'fll'"]
    assert problems(minimal(model={"init_params": "kmean"})) == [
        "model.init_params: must be one of 'k-means++', 'kmeans', 'random', "
        "'random_from_data', 'robust', got 'kmean'"]
    assert problems(minimal(model={"dtype": "float16"})) == [
        "model.dtype: must be one of 'float32', 'float64', got 'float16'"]


@pytest.mark.parametrize("value", [1, 0, "yes", "true", None])
def test_cache_literal(value):
    shown = {1: "1", 0: "0", "yes": "'yes'", "true": "'true'", None: "null"}[value]
    assert problems(minimal(model={"cache": value})) == [
        f"model.cache: must be one of 'auto' or true or false, got {shown}"]


def test_unknown_key_with_suggestion():
    assert problems(minimal(model={"n_componets": 3})) == [
        "model.n_componets: unknown key (did you mean 'n_components'?)"]
    assert problems(minimal(output={"dir": "o", "label": True})) == [
        "output.label: unknown key (did you mean 'labels'?)"]


def test_unknown_key_without_suggestion():
    assert problems(minimal(model={"zzz": 3})) == ["model.zzz: unknown key"]


def test_unknown_top_level_section():
    assert problems(minimal(modle={"n_components": 3})) == [
        "modle: unknown section (did you mean 'model'?)"]
    lines = problems(minimal(extras={}))
    assert lines == ["extras: unknown section (expected name, data, model, cluster, output, "
                     "checkpoint, selection)"]


def test_missing():
    assert problems({"output": {"dir": "o"}}) == ["data: required key is missing"]
    assert problems({"data": {}, "output": {"dir": "o"}}) == [
        "data.path: required key is missing"]
    assert problems({"data": None, "output": {"dir": "o"}}) == [
        "data.path: required key is missing"]
    assert problems({"data": {"path": "x"}, "output": {}}) == [
        "output.dir: required key is missing"]


@pytest.mark.parametrize(("section", "key", "value", "expected"), [
    ("model", "tol", "abc", "must be a number, got 'abc'"),
    ("model", "tol", True, "must be a number, got true"),
    ("model", "tol", float("nan"), "must be a finite number, got nan"),
    ("model", "reg_covar", [1], "must be a number, got [1]"),
    ("model", "n_components", "3", "must be an integer, got '3'"),
    ("model", "n_components", 2.5, "must be an integer, got 2.5"),
    ("model", "n_components", True, "must be an integer, got true"),
    ("model", "warm_start", "yes", "must be true or false, got 'yes'"),
    ("model", "warm_start", 1, "must be true or false, got 1"),
    ("output", "plots", "no", "must be true or false, got 'no'"),
    ("data", "dataset", 5, "must be a string, got 5"),
    ("data", "path", "", "must be a path or URL, got ''"),
    ("model", "weights_init", 0.5, "must be a list of numbers or null, got 0.5"),
    ("model", "precisions_init", "eye", "must be a list of numbers or null, got 'eye'"),
])
def test_wrong_types(section, key, value, expected):
    raw = minimal(**{section: {**MINIMAL.get(section, {}), key: value}})
    assert problems(raw) == [f"{section}.{key}: {expected}"]


def test_section_not_a_mapping():
    assert problems(minimal(model=[1, 2])) == ["model: must be a mapping of keys, got [1, 2]"]


def test_nested_lists_must_be_rectangular_numbers():
    assert problems(minimal(model={"n_components": 2, "means_init": [[0, "a"], 3]})) == [
        "model.means_init: must be a rectangular nested list of numbers (rows of equal "
        "length), got [[0, 'a'], 3]"]
    assert problems(minimal(model={"precisions_init": [[1, 2], [3]]})) == [
        "model.precisions_init: must be a rectangular nested list of numbers (rows of "
        "equal length), got [[1, 2], [3]]"]
    # shapes against n_components and the features are the estimator's to check, at fit
    assert parse_config(minimal(model={"n_components": 2, "weights_init": [1.0]}))


@pytest.mark.parametrize("value", ["lots", "", "-1GB", -5, True, 1.5])
def test_bad_memory_limit(value):
    (line,) = problems(minimal(cluster={"memory_limit": value}))
    assert line.startswith("cluster.memory_limit: must be ")
    assert line.endswith(f", got {value!r}" if not isinstance(value, bool) else ", got true")


@pytest.mark.parametrize("address", ["127.0.0.1:8786", "tcp://127.0.0.1", "http://h:80",
                                     "tcp://h:99999", "tcp://:8786", "ws://h:80"])
def test_bad_address(address):
    assert problems(minimal(cluster={"address": address})) == [
        "cluster.address: must look like scheme://host:port with scheme tcp, tls or "
        f"ucx (e.g. 'tcp://127.0.0.1:8786'), got {address!r}"]


@pytest.mark.parametrize("address", ["inproc://", "inproc://10.0.0.1/123/1",
                                     "INPROC://x/1/2"])
def test_inproc_address_is_refused_with_a_reason(address):
    (line,) = problems(minimal(cluster={"address": address}))
    assert line.startswith("cluster.address: inproc:// addresses exist only inside the "
                           "process that made them")
    assert line.endswith(f"got {address!r}")


def test_address_and_scheduler_file_are_exclusive():
    raw = minimal(cluster={"address": "tcp://h:1", "scheduler_file": "s.json"})
    assert problems(raw) == [
        "cluster.scheduler_file: cannot be given together with cluster.address; set only one "
        "of them"]


def test_several_problems_reported_together():
    raw = {
        "data": {"path": "x", "chunk_rows": 0},
        "model": {"n_components": 0, "covariance_type": "fll", "n_componets": 3,
                  "tol": "abc"},
        "cluster": {"address": "nowhere"},
        "outptu": {"dir": "o"},
    }
    lines = problems(raw)
    # (the estimator judges the model's values once their YAML types are right)
    assert set(lines) == {
        "data.chunk_rows: must be >= 1, got 0",
        "model.tol: must be a number, got 'abc'",
        "cluster.address: must look like scheme://host:port with scheme tcp, tls or "
        "ucx (e.g. 'tcp://127.0.0.1:8786'), got 'nowhere'",
        "output: required key is missing",
        "outptu: unknown section (did you mean 'output'?)",
    }
    raw["model"] = {"n_components": 0, "covariance_type": "fll", "n_componets": 3}
    assert set(problems(raw)) - set(lines) == {
        "model.n_componets: unknown key (did you mean 'n_components'?)",
        "model.n_components: must be an integer >= 1, got 0",
        "model.covariance_type: must be one of 'diag', 'full', 'spherical', 'tied', "
        "got 'fll'"}


@pytest.mark.parametrize(("raw", "given"), [
    ([1, 2], "list [1, 2]"), ("text", "str 'text'"), (None, "an empty file")])
def test_top_level_not_a_mapping(raw, given):
    assert problems(raw) == [
        "(top level): must be a mapping of sections (data, model, cluster, output, "
        f"checkpoint), got {given}"]


def test_non_string_keys():
    assert problems({**MINIMAL, 1: "x"}) == ["1: keys must be strings"]


def test_config_error_is_value_error():
    with pytest.raises(ValueError, match="n_components"):
        parse_config(minimal(model={"n_components": 0}))


def test_default_source_name():
    with pytest.raises(ConfigError, match=r"^<config>: 1 problem:\n"):
        parse_config(minimal(model={"n_components": 0}))


# --------------------------------------------------------------------------- TLS


def test_tls_required_for_tls_address():
    assert problems(minimal(cluster={"address": "tls://h:8786"})) == [
        "cluster.tls: required when cluster.address uses tls:// (give ca_file and cert_file), "
        "got nothing"]


def test_tls_files_must_exist(tmp_path):
    write(tmp_path / "ca.pem", "x")
    raw = minimal(cluster={"address": "tls://h:8786",
                           "tls": {"ca_file": "ca.pem", "cert_file": "missing.pem",
                                   "key_file": str(tmp_path)}})
    assert problems(raw, base_dir=tmp_path) == [
        f"cluster.tls.cert_file: file not found: {tmp_path / 'missing.pem'}",
        f"cluster.tls.key_file: file not found: {tmp_path}",
    ]


def test_tls_needs_ca_and_cert(tmp_path):
    raw = minimal(cluster={"address": "tls://h:8786", "tls": {"require_encryption": 1}})
    assert problems(raw, base_dir=tmp_path) == [
        "cluster.tls.ca_file: required key is missing",
        "cluster.tls.cert_file: required key is missing",
        "cluster.tls.require_encryption: must be true or false, got 1",
    ]


def test_tls_with_plain_address(tmp_path):
    write(tmp_path / "ca.pem", "x")
    raw = minimal(cluster={"address": "tcp://h:8786",
                           "tls": {"ca_file": "ca.pem", "cert_file": "ca.pem"}})
    assert problems(raw, base_dir=tmp_path) == [
        "cluster.address: must use tls:// when cluster.tls is given, got 'tcp://h:8786'"]


def test_tls_without_address_is_allowed(tmp_path):
    write(tmp_path / "ca.pem", "x")
    raw = minimal(cluster={"tls": {"ca_file": "ca.pem", "cert_file": "ca.pem"}})
    assert parse_config(raw, base_dir=tmp_path).cluster.tls.key_file is None


# --------------------------------------------------------------------------- overrides


def test_override_value_types():
    raw = apply_overrides(MINIMAL, [
        "model.n_components=5", "model.warm_start=true", "model.tol=0.5",
        "model.means_init=[[1, 2], [3, 4]]", "model.random_state=null",
        "cluster.address=tcp://1.2.3.4:8786", "name=run 1", "model.covariance_type=diag",
    ])
    model = raw["model"]
    assert model["n_components"] == 5 and model["warm_start"] is True
    assert model["tol"] == 0.5 and model["means_init"] == [[1, 2], [3, 4]]
    assert model["random_state"] is None and model["covariance_type"] == "diag"
    assert raw["cluster"]["address"] == "tcp://1.2.3.4:8786"
    assert raw["name"] == "run 1"


def test_override_creates_sections_and_copies():
    raw = {"data": {"path": "x"}, "model": None}
    out = apply_overrides(raw, ["cluster.tls.require_encryption=false", "model.n_init=2",
                                "output.dir=o", "data.path=y"])
    assert out["cluster"] == {"tls": {"require_encryption": False}}
    assert out["model"] == {"n_init": 2} and out["output"] == {"dir": "o"}
    assert out["data"]["path"] == "y"
    assert raw == {"data": {"path": "x"}, "model": None}  # the input is not modified


def test_override_value_with_equals_sign():
    assert apply_overrides({}, ["name=a=b"]) == {"name": "a=b"}


@pytest.mark.parametrize(("override", "expected"), [
    ("model.n_components", "'model.n_components': expected KEY.PATH=VALUE, "
                           "e.g. model.n_components=5"),
    ("=5", "'=5': expected KEY.PATH=VALUE, e.g. model.n_components=5"),
    ("model..tol=1", "'model..tol=1': expected KEY.PATH=VALUE, e.g. model.n_components=5"),
    ("model.=1", "'model.=1': expected KEY.PATH=VALUE, e.g. model.n_components=5"),
    ("model.tol=1 model.tol=2".split()[1],
     "model.tol: given twice with --set; give each key once"),
])
def test_bad_override(override, expected):
    with pytest.raises(ConfigError) as info:
        apply_overrides(MINIMAL, ["model.tol=1", override] if override == "model.tol=2"
                        else [override])
    assert str(info.value) == f"overrides: 1 problem:\n  {expected}"


def test_bad_override_yaml_value():
    with pytest.raises(ConfigError, match=r"'model.means_init=\[1,': the value is not valid "
                                          r"YAML"):
        apply_overrides(MINIMAL, ["model.means_init=[1,"])


def test_override_through_a_value():
    with pytest.raises(ConfigError) as info:
        apply_overrides({"data": {"path": "x"}}, ["data.path.x=1"])
    assert str(info.value) == ("overrides: 1 problem:\n  data.path.x: cannot set a key inside "
                               "data.path, which is 'x' and not a section")


def test_several_bad_overrides_reported_together():
    with pytest.raises(ConfigError) as info:
        apply_overrides(MINIMAL, ["a", "b", "=c"])
    assert str(info.value).startswith("overrides: 3 problems:\n")


def test_load_config_applies_overrides(tmp_path, monkeypatch):
    path = write(tmp_path / "conf" / "run.yaml", yaml.safe_dump(MINIMAL))
    monkeypatch.chdir(tmp_path)
    config = load_config(path, ["model.n_components=4", "output.dir=elsewhere"])
    assert config.model.n_components == 4
    # paths from the file are relative to the file; paths from overrides to the cwd
    assert config.data.path.path == str(tmp_path / "conf" / "data" / "x.npy")
    assert config.output.dir.path == str(tmp_path / "elsewhere")


def test_override_errors_are_marked(tmp_path):
    path = write(tmp_path / "run.yaml", yaml.safe_dump(MINIMAL))
    with pytest.raises(ConfigError) as info:
        load_config(path, ["model.n_componets=4"])
    assert str(info.value) == (
        f"{path}: 1 problem:\n"
        "  model.n_componets: unknown key (did you mean 'n_components'?) (from override)")


def test_overrides_on_an_empty_file(tmp_path):
    path = write(tmp_path / "run.yaml", "# nothing yet\n")
    config = load_config(path, ["data.path=x", "output.dir=o"])
    assert config.data.path.path == os.path.abspath("x")


# --------------------------------------------------------------------------- paths


def test_relative_paths_resolve_against_config_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "cfg" / "certs" / "ca.pem", "x")
    path = write(tmp_path / "cfg" / "run.yaml", """
data: {path: ../data/x.npy}
output: {dir: out/run}
checkpoint: {dir: ./ckpt}
cluster:
  address: tls://h:8786
  tls: {ca_file: certs/ca.pem, cert_file: certs/ca.pem}
""")
    config = load_config(Path("cfg") / "run.yaml")
    assert config.data.path.path == str(tmp_path / "data" / "x.npy")
    assert config.output.dir.path == str(tmp_path / "cfg" / "out" / "run")
    assert config.checkpoint.dir.path == str(tmp_path / "cfg" / "ckpt")
    assert config.cluster.tls.ca_file == str(tmp_path / "cfg" / "certs" / "ca.pem")
    assert config.source == os.path.join("cfg", "run.yaml")
    assert path.exists()


def test_absolute_paths_and_urls_stay(tmp_path):
    raw = minimal(data={"path": "s3://bucket/x.zarr"}, output={"dir": "/abs/out"})
    config = parse_config(raw, base_dir=tmp_path)
    assert config.data.path.url == "s3://bucket/x.zarr"
    assert config.data.path.protocol == "s3" and config.data.path.path == "bucket/x.zarr"
    assert config.output.dir.path == os.path.normpath("/abs/out")


def test_home_is_expanded(tmp_path):
    config = parse_config(minimal(output={"dir": "~/runs"}), base_dir=tmp_path)
    assert config.output.dir.path == os.path.join(os.path.expanduser("~"), "runs")


def test_data_need_not_exist(tmp_path):
    config = parse_config(minimal(data={"path": "no/such/file.npy"}), base_dir=tmp_path)
    assert not os.path.exists(config.data.path.path)


# --------------------------------------------------------------------------- files


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"^config file not found: .*nope\.yaml$"):
        load_config(missing)


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def test_yaml_syntax_error_gives_line_and_column(tmp_path):
    path = write(tmp_path / "bad.yaml", "data:\n  path: x\n  bad: [1, 2\noutput:\n  dir: o\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: invalid YAML at line 4, column 7: ")
    assert "\n" not in message


def test_yaml_tab_error(tmp_path):
    path = write(tmp_path / "tab.yaml", "data:\n\tpath: x\n")
    with pytest.raises(ConfigError, match=r"invalid YAML at line 2, column 1"):
        load_config(path)


def test_yaml_is_loaded_safely(tmp_path):
    path = write(tmp_path / "evil.yaml", "name: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(path)


def test_top_level_list_file(tmp_path):
    path = write(tmp_path / "list.yaml", "- data\n- output\n")
    with pytest.raises(ConfigError, match=r"\(top level\): must be a mapping of sections"):
        load_config(path)


def test_empty_file(tmp_path):
    path = write(tmp_path / "empty.yaml", "")
    with pytest.raises(ConfigError, match="got an empty file"):
        load_config(path)


def test_error_message_names_the_file_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "configs" / "x.yaml",
          "data: {path: x}\noutput: {dir: o}\nmodel: {n_components: 0, tol: abc}\n")
    with pytest.raises(ConfigError) as info:
        load_config("configs/x.yaml")
    assert str(info.value) == (
        "configs/x.yaml: 1 problem:\n"
        "  model.tol: must be a number, got 'abc'")


def test_yaml_1e3_is_a_number(tmp_path):
    path = write(tmp_path / "x.yaml", "data: {path: x}\noutput: {dir: o}\nmodel: {tol: 1e-3}\n")
    assert load_config(path).model.tol == 1e-3


# --------------------------------------------------------------------------- to_dict


def test_to_dict_is_json_serialisable_and_round_trips(tmp_path):
    raw = minimal(model={"n_components": 2, "means_init": [[0, 1], [2, 3]], "cache": True},
                  cluster={"memory_limit": 10**9})
    config = parse_config(raw, base_dir=tmp_path)
    data = config.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert set(data) == {"name", "data", "model", "cluster", "output", "checkpoint",
                         "selection"}
    assert data["model"]["means_init"] == [[0.0, 1.0], [2.0, 3.0]]
    assert data["model"]["cache"] is True and data["cluster"]["memory_limit"] == 10**9
    assert parse_config(data) == config


# --------------------------------------------------------------------------- examples


def test_examples_exist():
    names = {p.name for p in EXAMPLES}
    assert {"iris.yaml", "cluster.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_configs_validate(path):
    raw = yaml.safe_load(path.read_text())
    assert isinstance(raw, dict)
    config = load_config(path)
    assert json.loads(json.dumps(config.to_dict())) == config.to_dict()


def test_iris_example():
    config = load_config(CONFIG_DIR / "iris.yaml")
    assert config.data.path.url == "sklearn:iris"
    assert config.output.dir.path == str(CONFIG_DIR.parent / "runs" / "iris")
    assert (config.model.n_components, config.model.covariance_type) == (3, "full")
    assert config.model.random_state == 0


def test_cluster_example():
    config = load_config(CONFIG_DIR / "cluster.yaml")
    assert config.cluster.address == "tcp://127.0.0.1:8786"
    assert config.cluster.tls is None
    assert config.data.path.name.endswith(".zarr")


# --------------------------------------------------------------------------- YAML limits


BOMB = """\
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
data: {path: *i}
output: {dir: o}
"""


def _one_line_error(path: Path, *fragments: str, seconds: float = 2.0) -> str:
    import time

    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        load_config(path)
    elapsed = time.perf_counter() - t0
    message = str(info.value)
    assert elapsed < seconds, elapsed
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def test_alias_bomb_is_refused_quickly(tmp_path):
    assert len(BOMB) < 700
    path = write(tmp_path / "bomb.yaml", BOMB)
    _one_line_error(path, "bomb.yaml", "aliases would expand", "write the values out")
    # The same bomb as a --set value.
    config = write(tmp_path / "c.yaml", "data: {path: x}\noutput: {dir: o}\n")
    inline = "[" + ", ".join(["&x0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"] + [
        f"&x{i} [" + ", ".join([f"*x{i - 1}"] * 10) + "]" for i in range(1, 9)]) + "]"
    with pytest.raises(ConfigError, match="aliases would expand"):
        load_config(config, [f"model.means_init={inline}"])


def test_modest_aliases_are_fine(tmp_path):
    path = write(tmp_path / "ok.yaml", "data: {path: &p x.npy}\noutput: {dir: *p}\n"
                                       "model: {means_init: &m [[1, 2]], n_components: 1}\n")
    config = load_config(path)
    assert config.output.dir.path == config.data.path.path == str(tmp_path / "x.npy")


@pytest.mark.parametrize("text", ["a: &a [*a]\ndata: {path: x}\noutput: {dir: o}\n",
                                  "a: &a {b: *a}\ndata: {path: x}\noutput: {dir: o}\n",
                                  "data: &d {path: x, again: *d}\noutput: {dir: o}\n"])
def test_self_referencing_alias_is_refused(tmp_path, text):
    path = write(tmp_path / "loop.yaml", text)
    _one_line_error(path, "loop.yaml", "self-referencing anchor")


def test_deep_nesting_is_refused_without_recursion_error(tmp_path):
    path = write(tmp_path / "deep.yaml", "data: {path: " + "[" * 5000 + "]" * 5000
                 + "}\noutput: {dir: o}\n")
    _one_line_error(path, "deep.yaml", "nested more than 64 levels deep at line 1")


def test_huge_value_is_truncated_in_the_message(tmp_path):
    big = "model: {tol: [" + ", ".join(["1"] * 20_000) + "]}\ndata: {path: x}\n" \
          "output: {dir: o}\n"
    path = write(tmp_path / "big.yaml", big)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (line,) = str(info.value).splitlines()[1:]
    assert line.startswith("  model.tol: must be a number, got [1, 1, 1, 1, 1, 1, ...]")
    assert len(line) < 120


@pytest.mark.parametrize(("text", "key", "line", "first"), [
    ("data: {path: x}\noutput: {dir: o}\nmodel:\n  n_components: 2\n  tol: 0.1\n"
     "  n_components: 3\n", "n_components", 6, 4),
    ("data: {path: x}\noutput: {dir: o}\ndata: {path: y}\n", "data", 3, 1),
    ("data: {path: x, path: y}\noutput: {dir: o}\n", "path", 1, 1),
])
def test_duplicate_keys_are_an_error(tmp_path, text, key, line, first):
    path = write(tmp_path / "dup.yaml", text)
    _one_line_error(path, f"dup.yaml: duplicate key {key!r} at line {line} "
                          f"(first given at line {first})")


def test_merge_keys_still_work(tmp_path):
    path = write(tmp_path / "merge.yaml",
                 "base: &base {n_components: 2, tol: 0.5}\ndata: {path: x}\n"
                 "output: {dir: o}\nmodel:\n  <<: *base\n  tol: 0.25\n")
    with pytest.raises(ConfigError, match="base: unknown section"):
        load_config(path)  # (the anchor's own section is not a known one)
    path.write_text("data: {path: x}\noutput: {dir: o}\nmodel:\n  <<: {n_components: 2, "
                    "tol: 0.5}\n  tol: 0.25\n")
    config = load_config(path)
    assert (config.model.n_components, config.model.tol) == (2, 0.25)


def test_override_with_duplicate_keys_is_an_error(tmp_path):
    config = write(tmp_path / "c.yaml", "data: {path: x}\noutput: {dir: o}\n")
    with pytest.raises(ConfigError, match=r"--set model: duplicate key 'tol'"):
        load_config(config, ["model={tol: 1.0, tol: 2.0}"])


# --------------------------------------------------------------------------- cluster


@pytest.mark.parametrize("value", ["100MB", "255MiB", 100 * 2**20, "1kB"])
def test_memory_limit_floor(value):
    (line,) = problems(minimal(cluster={"memory_limit": value}))
    assert line.startswith("cluster.memory_limit: must be at least 256 MiB per worker")
    assert "pauses at 80% of its limit" in line


@pytest.mark.parametrize(("value", "kept"), [
    (":0", "127.0.0.1:0"), (":8787", "127.0.0.1:8787"), ("127.0.0.1:8787", "127.0.0.1:8787"),
    ("localhost:0", "127.0.0.1:0"), (8787, "127.0.0.1:8787"), (None, None)])
def test_dashboard_addresses(value, kept):
    config = parse_config(minimal(cluster={"dashboard_address": value}))
    assert config.cluster.dashboard_address == kept


@pytest.mark.parametrize("value", ["0.0.0.0:8787", "10.1.2.3:0", "example.org:80"])
def test_dashboard_on_other_interfaces_is_refused(value):
    (line,) = problems(minimal(cluster={"dashboard_address": value}))
    assert "listens on 127.0.0.1 only" in line and "SSH tunnel" in line


@pytest.mark.parametrize("value", ["x", ":http", ":99999", [8787]])
def test_bad_dashboard_address(value):
    (line,) = problems(minimal(cluster={"dashboard_address": value}))
    assert line.startswith("cluster.dashboard_address: must be ':PORT'")


def test_factory_section():
    raw = minimal(cluster={"factory": {"class": "dask_jobqueue.SLURMCluster",
                                       "options": {"cores": 8, "memory": "32GiB"},
                                       "adapt": {"maximum": 20}},
                           "wait_for_workers": 2, "wait_timeout": 600})
    config = parse_config(raw)
    factory = config.cluster.factory
    assert factory.class_ == "dask_jobqueue.SLURMCluster"
    assert factory.options == {"cores": 8, "memory": "32GiB"}
    assert (factory.adapt.minimum, factory.adapt.maximum, factory.scale) == (0, 20, None)
    assert (config.cluster.wait_for_workers, config.cluster.wait_timeout) == (2, 600)
    dumped = config.to_dict()
    assert dumped["cluster"]["factory"]["class"] == "dask_jobqueue.SLURMCluster"
    assert parse_config(dumped) == config


@pytest.mark.parametrize(("factory", "expected"), [
    ({"class": "SLURMCluster"}, "cluster.factory.class: must be a dotted class path"),
    ({"options": {}}, "cluster.factory.class: required key is missing"),
    ({"class": "a.B", "scale": 0}, "cluster.factory.scale: must be >= 1, got 0"),
    ({"class": "a.B", "scale": 2, "adapt": {"maximum": 3}},
     "cluster.factory.adapt: cannot be given together with cluster.factory.scale"),
    ({"class": "a.B", "adapt": {"minimum": 4, "maximum": 3}},
     "cluster.factory.adapt.minimum: must be <= maximum (3), got 4"),
    ({"class": "a.B", "adapt": {"minimum": 1}},
     "cluster.factory.adapt.maximum: required key is missing"),
    ({"class": "a.B", "optoins": {}},
     "cluster.factory.optoins: unknown key (did you mean 'options'?)"),
])
def test_bad_factory(factory, expected):
    (line,) = problems(minimal(cluster={"factory": factory}))
    assert line.startswith(expected), line


def test_factory_excludes_address():
    (line,) = problems(minimal(cluster={"factory": {"class": "a.B"},
                                        "address": "tcp://h:1"}))
    assert line.startswith("cluster.factory: cannot be given together with cluster.address")


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("stall_timeout", 0, "must be > 0, got 0"),
    ("wait_timeout", -1, "must be > 0, got -1"),
    ("wait_for_workers", 0, "must be >= 1, got 0"),
    ("connect_timeout", "soon", "must be a number, got 'soon'"),
])
def test_cluster_timeouts(key, value, expected):
    assert problems(minimal(cluster={key: value})) == [f"cluster.{key}: {expected}"]


def test_stall_timeout_may_be_disabled():
    assert parse_config(minimal(cluster={"stall_timeout": None})).cluster.stall_timeout is None


# --------------------------------------------------------------------------- model schema


def test_model_keys_and_defaults_come_from_the_estimator():
    from daskgmm import BayesianGaussianMixture, GaussianMixture
    from daskgmm.cli.config import MANAGED_ELSEWHERE

    for kind, cls in (("gaussian", GaussianMixture), ("bayesian", BayesianGaussianMixture)):
        model = parse_config(minimal(model={"kind": kind})).model
        defaults = cls().get_params()
        assert model.params == {k: v for k, v in defaults.items()
                                if k not in MANAGED_ELSEWHERE}
        assert model.kind == kind and type(model.estimator()) is cls


@pytest.mark.parametrize("key", ["checkpoint_dir", "checkpoint_every", "chunk_rows"])
def test_parameters_set_by_other_sections(key):
    (line,) = problems(minimal(model={key: 1}))
    assert line.startswith(f"model.{key}: not a model key here: set ")


def test_new_estimator_parameters_appear_without_edits(monkeypatch):
    """A parameter added to an estimator is a YAML key, with its default and the
    estimator's own checks, without an edit to the configuration module."""
    from numbers import Real

    from sklearn.utils._param_validation import Interval

    from daskgmm import GaussianMixture
    from daskgmm.cli import config as config_module

    class Extended(GaussianMixture):
        _parameter_constraints: ClassVar[dict] = {
            **GaussianMixture._parameter_constraints,
            "smoothing": [Interval(Real, 0.5, 1.0, closed="right")]}

        def __init__(self, n_components=1, *, smoothing=0.75, **kwargs):
            super().__init__(n_components, **kwargs)
            self.smoothing = smoothing

        @classmethod
        def _get_param_names(cls):
            return sorted({*GaussianMixture._get_param_names(), "smoothing"})

    monkeypatch.setattr(config_module, "estimator_class", lambda kind: Extended)
    section = config_module.section_of(Extended, "gaussian")
    model = section.model_validate({"smoothing": "0.9"})
    assert model.smoothing == 0.9 and model.estimator().smoothing == 0.9
    assert section.model_validate({}).smoothing == 0.75
    for raw, expected in (({"smothing": 1}, "unknown key (did you mean 'smoothing'?)"),
                          ({"smoothing": 0.3}, "must be a float in the range (0.5, 1.0], "
                                               "got 0.3")):
        with pytest.raises(ValidationError, match=re.escape(expected)):
            section.model_validate(raw)


def test_kind_must_be_known():
    assert problems(minimal(model={"kind": "dirichlet"})) == [
        "model.kind: must be one of 'gaussian', 'bayesian', got 'dirichlet'"]


@pytest.mark.parametrize(("sweep", "values"), [
    ({"n_components": [2, 4, 8]}, {"n_components": [2, 4, 8]}),
    ({"n_components": {"min": 1, "max": 4}}, {"n_components": [1, 2, 3, 4]}),
    ({"covariance_type": ["full", "diag"]}, {"covariance_type": ["full", "diag"]}),
    ({"n_components": [3], "covariance_type": ["tied"]},
     {"n_components": [3], "covariance_type": ["tied"]}),
])
def test_sweeps_are_accepted_with_their_values(sweep, values):
    config = parse_config(minimal(model=sweep, selection={"criterion": "aic"}))
    assert config.model.sweep == values
    selector = config.estimator()
    assert type(selector).__name__ == "GaussianMixtureSelector"
    assert selector.criterion == "aic" and selector.verbose == 0
    ks = values.get("n_components", [1])
    types = values.get("covariance_type", ["full"])
    assert selector.candidates() == [(k, t) for t in types for k in ks]
    assert parse_config(config.to_dict()).model.sweep == values


def test_selection_section():
    config = parse_config(minimal())
    assert (config.selection.criterion, config.selection.early_stopping) == ("bic", False)
    config = parse_config(minimal(selection={"criterion": "icl", "early_stopping": True}))
    assert (config.selection.criterion, config.selection.early_stopping) == ("icl", True)
    assert config.to_dict()["selection"] == {"criterion": "icl", "early_stopping": True}
    (line,) = problems(minimal(selection={"criterion": "bicc"}))
    assert line.startswith("selection.criterion: must be one of 'bic', 'aic' or 'icl'"), line
    (line,) = problems(minimal(selection={"early_stop": True}))
    assert line.startswith("selection.early_stop: unknown key"), line


@pytest.mark.parametrize(("sweep", "expected"), [
    ({"n_components": [2, 0]}, "model.n_components[1]: must be an int >= 1, got 0"),
    ({"n_components": []}, "model.n_components: must list at least one value"),
    ({"n_components": {"min": 5, "max": 2}},
     "model.n_components: a range needs 1 <= min <= max <= min + 10000, got min 5 and "
     "max 2"),
    ({"n_components": {"min": 0, "max": 2}},
     "model.n_components: a range needs 1 <= min <= max"),
    ({"n_components": {"low": 1}},
     "model.n_components: a range is {min: A, max: B} with integers A and B"),
    ({"covariance_type": ["full", "ful"]},
     "model.covariance_type[1]: must be one of 'full', 'tied', 'diag', 'spherical', "
     "got 'ful'"),
    ({"n_components": [2, 3], "weights_init": [0.5, 0.5]},
     "model.weights_init: cannot be given with a sweep over n_components"),
    ({"n_init": [1, 2]}, "model.n_init: must be an integer, got [1, 2]"),
    ({"covariance_type": ["full", "diag"], "precisions_init": [1.0, 2.0]},
     "model.precisions_init: cannot be given with a sweep over covariance_type"),
])
def test_bad_sweeps(sweep, expected):
    (line,) = problems(minimal(model=sweep))
    assert line.startswith(expected), line


# --------------------------------------------------------------------------- data where it lives


def test_storage_options_columns_and_weights(tmp_path):
    so = {"key": "AKIA-ID", "secret": "hidden-value", "client_kwargs": {
        "endpoint_url": "http://127.0.0.1:9000", "session_token": "tok-123"}}
    raw = minimal(data={"path": "s3://bucket/t.parquet", "columns": ["a", "b"],
                        "storage_options": so, "allow_missing_chunks": True,
                        "sample_weight": {"column": "w"}},
                  output={"dir": "s3://bucket/runs/x", "storage_options": so,
                          "id_column": "id", "labels": True},
                  checkpoint={"dir": "s3://bucket/ckpt", "storage_options": {"anon": True}})
    config = parse_config(raw, base_dir=tmp_path)
    assert config.data.storage_options == so and config.data.columns == ["a", "b"]
    assert config.data.allow_missing_chunks is True
    assert config.data.sample_weight.column == "w" and config.data.sample_weight.path is None
    assert config.output.id_column == "id" and config.checkpoint.storage_options == {
        "anon": True}
    assert parse_config(config.to_dict()) == config
    shown = config.to_dict(redact=True)
    text = json.dumps(shown)
    for secret in ("hidden-value", "tok-123", "AKIA-ID"):
        assert secret not in text
    assert shown["data"]["storage_options"]["client_kwargs"]["endpoint_url"] == (
        "http://127.0.0.1:9000")


def test_redacted_config_masks_passwords_in_urls(tmp_path):
    raw = minimal(data={"path": "https://alice:pa55@example.org/x.npy"})
    shown = parse_config(raw, base_dir=tmp_path).to_dict(redact=True)
    assert shown["data"]["path"] == "https://alice:***@example.org/x.npy"


def test_sample_weight_forms(tmp_path):
    def weight(value):
        return parse_config(minimal(data={"path": "d.zarr", "sample_weight": value}),
                            base_dir=tmp_path).data.sample_weight

    short = weight("w.npy")
    assert short.path.path == str(tmp_path / "w.npy") and short.dataset is None
    other = weight({"path": "s3://b/w.h5", "dataset": "w", "storage_options": {"anon": True}})
    assert (other.path.url, other.dataset) == ("s3://b/w.h5", "w")
    assert other.path.storage_options == {"anon": True}  # the location carries them
    same = weight({"dataset": "w"})
    assert same.path is None and same.dataset == "w"
    assert weight({"column": "w"}).column == "w"


@pytest.mark.parametrize(("section", "expected"), [
    ({"sample_weight": {"column": "w", "dataset": "w"}},
     "data.sample_weight.column: cannot be given together with dataset"),
    ({"sample_weight": {}}, "data.sample_weight.path: give path (a file of weights)"),
    ({"sample_weight": {"colum": "w"}},
     "data.sample_weight.colum: unknown key (did you mean 'column'?)"),
    ({"columns": ["a", "a"]}, "data.columns: has duplicates"),
    ({"columns": []}, "data.columns:"),
    ({"columns": ["a", "w"], "sample_weight": {"column": "w"}},
     "data.sample_weight.column: 'w' is also one of data.columns"),
    ({"storage_options": ["anon"]}, "data.storage_options: must be a mapping"),
    ({"allow_missing_chunks": "yes"}, "data.allow_missing_chunks: must be true or false"),
])
def test_bad_data_sections(section, expected):
    found = problems(minimal(data={"path": "x.parquet", **section}))
    assert any(line.startswith(expected) for line in found), found


def test_storage_option_values_are_not_quoted_in_errors():
    found = problems(minimal(output={"dir": "o", "storage_options": "secret-in-a-string"}))
    assert found and all("secret-in-a-string" not in line for line in found)


def test_weight_path_override_is_relative_to_the_working_directory(tmp_path, monkeypatch):
    path = write(tmp_path / "cfg" / "run.yaml", yaml.safe_dump(MINIMAL))
    monkeypatch.chdir(tmp_path)
    config = load_config(path, ["data.sample_weight=w.npy"])
    assert config.data.sample_weight.path.path == str(tmp_path / "w.npy")


def test_generate_chunk_rows_default_to_the_default_chunk_size():
    raw = minimal(data={"path": "x.zarr", "generate": {
        "n_samples": 10, "n_features": 2, "n_components": 1}})
    assert parse_config(raw).data.generate.chunk_rows is None


# --------------------------------------------------------------------------- size limits


def test_a_config_larger_than_the_limit_is_refused_without_reading_it(tmp_path):
    """A 40 MB file (or /dev/zero) is refused after reading MAX_CONFIG_BYTES + 1 bytes."""
    from daskgmm.cli.config import MAX_CONFIG_BYTES

    big = tmp_path / "big.yaml"
    with open(big, "wb") as handle:
        handle.truncate(40 * 2**20)
    message = _one_line_error(big, "big.yaml: larger than 1 MiB")
    assert "a complete one is a few KiB" in message
    if os.path.exists("/dev/zero"):
        _one_line_error(Path("/dev/zero"), "/dev/zero: larger than 1 MiB")
    assert MAX_CONFIG_BYTES == 2**20


def test_a_flood_of_unknown_keys_prints_a_bounded_message(tmp_path):
    from daskgmm.cli.config import MAX_PROBLEMS

    keys = "\n".join(f"  key{i}: 1" for i in range(5_000))
    path = write(tmp_path / "flood.yaml", f"data: {{path: x}}\noutput: {{dir: o}}\n"
                                          f"model:\n{keys}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    lines = str(info.value).splitlines()
    assert lines[0] == f"{path}: 5000 problems:"
    assert len(lines) == 1 + MAX_PROBLEMS + 1
    assert lines[-1] == f"  ... and {5_000 - MAX_PROBLEMS:,} more problems"


def test_n_workers_is_bounded_by_the_machine():
    limit = 4 * (os.cpu_count() or 1)
    assert parse_config(minimal(cluster={"n_workers": limit})).cluster.n_workers == limit
    (line,) = problems(minimal(cluster={"n_workers": limit + 1}))
    assert line.startswith(f"cluster.n_workers: at most {limit} (4 per core")
    assert line.endswith(f"got {limit + 1}")


def test_storage_option_values_never_reach_the_report(tmp_path):
    """Only known harmless values are shown (endpoint, region...): headers, cookies and
    tokens under any name are masked, and so are a signed URL's query values."""
    so = {"headers": {"Cookie": "session=abc123"}, "client_kwargs": {
        "endpoint_url": "http://127.0.0.1:9000", "region_name": "eu"}, "anon": False,
          "weird_name": "s3cr3t-v4lue"}
    raw = minimal(data={"path": "https://h/x.npy?code=0xSIGNED", "storage_options": so})
    shown = json.dumps(parse_config(raw, base_dir=tmp_path).to_dict(redact=True))
    for secret in ("abc123", "s3cr3t-v4lue", "0xSIGNED"):
        assert secret not in shown
    assert "http://127.0.0.1:9000" in shown and '"region_name": "eu"' in shown


# --------------------------------------------------------------------------- example-config


def _example() -> dict:
    from importlib.resources import files

    return yaml.safe_load(files("daskgmm.cli").joinpath("example-config.yaml")
                          .read_text("utf-8"))


def test_the_example_config_is_complete_and_states_the_defaults(tmp_path):
    """Every key of every section (and every GaussianMixture parameter) is in the
    example, at the value the schema gives it when it is left out."""
    raw = _example()
    raw["data"]["path"] = "x.npy"
    config = parse_config(raw, base_dir=tmp_path)
    defaults = parse_config({"data": {"path": "x.npy"}, "output": {"dir": "runs/example"}},
                            base_dir=tmp_path).to_dict()
    assert config.to_dict() == defaults
    for section, values in defaults.items():
        if isinstance(values, dict):
            assert set(values) <= set(raw[section]), (section, set(values) - set(raw[section]))
    assert raw["data"] is not None and _example()["data"]["path"] is None


def test_the_example_config_needs_only_data_path(tmp_path):
    assert problems(_example(), base_dir=tmp_path) == [
        "data.path: must be a path or URL, got null"]
