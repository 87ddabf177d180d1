"""Tests of daskgmm.diagnostics.progress: the lines, the ETAs and the three displays."""

from __future__ import annotations

import io
import math
from types import SimpleNamespace

import numpy as np
import pytest

from daskgmm.diagnostics import observers
from daskgmm.diagnostics.progress import (
    ProgressObserver,
    fit_eta,
    format_clock,
    format_iteration,
    format_sweep_iteration,
    iterations_left,
)


def _state(iteration, bounds, converged=False, index=0, active=True):
    return SimpleNamespace(index=index, n_iter=iteration, lower_bound=bounds[-1],
                           lower_bounds=list(bounds), converged=converged, active=active)


def _info(iteration, bounds, seconds=0.5, converged=False, index=0):
    return SimpleNamespace(iteration=iteration, states=[_state(iteration, bounds, converged,
                                                                index)],
                           seconds=seconds)


def _events(observer, *events):
    """Deliver events the way a fit does (daskgmm.diagnostics.observers.notify)."""
    with observers.observe(observer):
        for name, *args in events:
            observers.notify(name, *args)
        return observers.wants("chunks_done")


def test_format_iteration():
    assert format_iteration(_info(1, [-1.5]), timing=False) == [
        "iter 1  loglik -1.500000  change -"]
    assert format_iteration(_info(1, [-1.5])) == ["iter 1  loglik -1.500000  change -  "
                                                  "0.50 s/iter"]
    assert format_iteration(_info(7, [-1.2346, -1.234567], 3.21), max_iter=100, eta=41,
                            timing=True) == [
        "iter 7/100  loglik -1.234567  change 3.3e-05  3.21 s/iter  ETA 0:41"]
    stale = _state(3, [-1.0], converged=True, index=1)
    info = _info(5, [-2.0, -1.9], converged=True)
    info.states.append(stale)
    assert format_iteration(info, max_iter=9, eta=10, timing=False) == [
        "iter 5/9  init 0  loglik -1.900000  change 1.0e-01  converged"]


@pytest.mark.parametrize(("seconds", "text"), [(0, "0:00"), (41.4, "0:41"), (61, "1:01"),
                                                (3723, "1:02:03"), (None, "?"),
                                                (math.inf, "?"), (-1, "?")])
def test_format_clock(seconds, text):
    assert format_clock(seconds) == text


@pytest.mark.parametrize(("gains", "tol", "iteration", "max_iter", "left"), [
    ([1e-1, 1e-2, 1e-3], 1e-6, 3, 100, 3),      # factor 10 per iteration: 3 more
    ([1e-1, 5e-2, 2.5e-2], 1e-3, 3, 100, 5),    # factor 2: 25e-3 -> below 1e-3 in 5
    ([1e-1, 1e-2, 1e-3], 1e-6, 98, 100, 2),     # capped by max_iter
    ([1e-1, 2e-1, 3e-1], 1e-6, 3, 10, None),    # growing gains: no estimate
    ([1e-1, 1e-2, 1e-3], 0.0, 3, 10, None),     # tol 0 never converges
    ([1e-1, 1e-2], 1e-6, 2, 10, None),          # too few gains to see a rate
    ([1e-2, -1e-3, 1e-4], 1e-6, 3, 10, None),   # a negative gain: no trend
    ([1e-2, 1e-7], 1e-6, 2, 10, 0),             # already below tol
    # the demo (20M x 16, K=6) at iteration 4: 3 more were run (gains 2.9e-3, 1.2e-3,
    # 4.8e-4); an average of the ratios (0.34) said 2, the latest (0.55) says 4
    ([5.4e-2, 1.1e-2, 6.1e-3], 1e-3, 4, 100, 4),
])
def test_iterations_left_comes_from_the_rate_or_not_at_all(gains, tol, iteration,
                                                           max_iter, left):
    assert iterations_left(gains, tol, iteration, max_iter) == left


def test_fit_eta_takes_the_slowest_active_restart_and_waits_for_a_rate():
    fast = _state(3, [-3.0, -2.9, -2.89, -2.889])            # gains 1e-1, 1e-2, 1e-3
    slow = _state(3, [-3.0, -2.0, -1.5, -1.25], index=1)     # gains 1, .5, .25
    done = _state(3, [-9.0, -1.0], converged=True, index=2)
    young = _state(2, [-3.0, -2.0, -1.9], index=3)           # two gains: no rate yet
    assert fit_eta([fast], 3, 100, 1e-6, 2.0) == 3 * 2.0
    assert fit_eta([fast, slow, done], 3, 100, 1e-3, 2.0) == \
        iterations_left([1, 0.5, 0.25], 1e-3, 3, 100) * 2.0
    assert fit_eta([fast, young], 3, 100, 1e-3, 2.0) is None
    assert fit_eta([done], 3, 100, 1e-3, 2.0) == 0


def test_the_first_eta_is_close_to_the_truth_and_absent_before():
    """EM's gains shrinking by 0.7 per iteration: no ETA for the first three iterations
    (no rate yet, and no guess from max_iter), then the time of the iterations that
    really remain until a gain is below tol."""
    gains = [0.7**i for i in range(40)]
    bounds = list(np.cumsum([-5.0, *gains]))
    tol = 1e-3
    # after iteration j, lower_bounds holds j values and the last gain is gains[j - 2]
    last = next(i for i, g in enumerate(gains) if g < tol) + 2  # the iteration that stops
    plain = io.StringIO()
    obs = ProgressObserver(plain)
    obs.expect(max_iter=1000, tol=tol)
    for it in range(1, 7):
        _events(obs, ("iteration_finished", _info(it, bounds[:it], seconds=2.0)))
    lines = plain.getvalue().splitlines()
    assert all("ETA" not in line for line in lines[:3])
    first = lines[3]
    assert "ETA" in first
    minutes, seconds = map(int, first.split("ETA ")[1].split(":"))
    assert abs(60 * minutes + seconds - (last - 4) * 2.0) <= 2.0, (first, last)


def test_plain_lines():
    plain = io.StringIO()
    obs = ProgressObserver(plain)
    obs.expect(max_iter=10, tol=1e-3)
    assert not obs.live
    tracked = _events(obs, ("pass_started", "kmeans", 4), ("chunks_done", 4),
                      ("pass_finished",), ("pass_started", "kmeans", 4), ("pass_finished",),
                      ("pass_started", "em", 4), ("chunks_done", 2), ("chunks_done", 2),
                      ("pass_finished",), ("iteration_finished", _info(1, [-3.0])),
                      ("pass_started", "outputs", 4), ("pass_finished",))
    assert not tracked  # nothing drawn per chunk: the passes need not track chunks
    text = plain.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    # every initialisation pass is a line as it ends (a long start is not silent)
    assert lines[0].startswith("kmeans pass 1: 4 chunks in ")
    assert lines[1].startswith("kmeans pass 2: 4 chunks in ")
    assert lines[2] == "iter 1/10  loglik -3.000000  change -"
    assert lines[3].startswith("outputs pass: 4 chunks in ")
    assert len(lines) == 4


def test_verbose_2_times_iterations():
    plain = io.StringIO()
    obs = ProgressObserver(plain, verbose=2)
    _events(obs, ("pass_started", "moments", 4), ("pass_finished",),
            ("pass_started", "em", 4), ("pass_finished",),
            ("iteration_finished", _info(1, [-3.0], seconds=0.25)))
    lines = plain.getvalue().splitlines()
    assert lines[0].startswith("moments pass 1: 4 chunks in ")
    assert lines[1] == "iter 1  loglik -3.000000  change -  0.25 s/iter"


def _screen(obs, stream):
    obs._rich.refresh()
    return stream.getvalue()


def test_live_display_shows_passes_iterations_and_etas():
    live = io.StringIO()
    obs = ProgressObserver(live, live=True)
    obs.expect(max_iter=50, tol=1e-3)
    assert _events(obs, ("pass_started", "kmeans", 40), ("chunks_done", 12))
    screen = _screen(obs, live)
    assert "kmeans pass 1" in screen and "12/40 chunks" in screen
    _events(obs, ("chunks_done", 28), ("pass_finished",), ("pass_started", "em", 40),
            ("chunks_done", 10))
    assert "em iteration 1/50" in _screen(obs, live)
    for it in range(1, 5):
        bounds = [-3.0 + 1 - 0.5**i for i in range(it)]
        _events(obs, ("chunks_done", 30), ("pass_finished",),
                ("iteration_finished", _info(it, bounds)), ("pass_started", "em", 40),
                ("chunks_done", 20))
    screen = _screen(obs, live)
    assert "iter 1/50  loglik" in screen and "4/50 iter" in screen
    assert "em iteration 5/50" in screen and "ETA" in screen
    obs.close()
    assert obs._rich is None


def test_each_pass_restarts_its_elapsed_time():
    live = io.StringIO()
    obs = ProgressObserver(live, live=True)
    _events(obs, ("pass_started", "kmeans", 4))
    task = obs._tasks["pass"]
    first = obs._rich.tasks[task].start_time
    _events(obs, ("chunks_done", 4), ("pass_finished",), ("pass_started", "kmeans", 4))
    assert obs._rich.tasks[task].start_time > first
    assert not obs._rich.tasks[task].finished
    obs.close()


def test_counts_after_resume_start_at_the_checkpoint():
    live = io.StringIO()
    obs = ProgressObserver(live, live=True)
    obs.expect(max_iter=100, tol=1e-3, start_iteration=37)
    _events(obs, ("pass_started", "em", 4))
    screen = _screen(obs, live)
    assert "em iteration 38/100" in screen and "37/100 iter" in screen
    obs.close()


def test_a_sweep_prints_one_line_per_iteration():
    plain = io.StringIO()
    obs = ProgressObserver(plain, sweep=True)
    obs.fit_started(SimpleNamespace(max_iter=100, tol=1e-3, n_candidates=4))
    states = [SimpleNamespace(label=f"K={k} full #0", index=k, n_iter=1, lower_bound=-1.0,
                              lower_bounds=[-1.0], converged=False, active=True)
              for k in (1, 2)]
    _events(obs, ("iteration_finished", SimpleNamespace(iteration=1, states=states,
                                                        seconds=0.5)))
    assert plain.getvalue() == "iter 1/100  running 2/4  initialising 2\n"
    assert format_sweep_iteration(SimpleNamespace(iteration=1, states=states, seconds=0.5),
                                  timing=True) == "iter 1  running 2/2  0.50 s/iter"


def test_quiet_prints_nothing_but_warnings():
    quiet = io.StringIO()
    obs = ProgressObserver(quiet, quiet=True)
    _events(obs, ("pass_started", "em", 2), ("chunks_done", 2), ("pass_finished",),
            ("iteration_finished", _info(1, [-1.0])))
    obs.message("hello")
    assert quiet.getvalue() == ""
    obs.warning("disk nearly full")
    assert quiet.getvalue() == "daskgmm: warning: disk nearly full\n"


def test_generate_pass_is_shown():
    plain = io.StringIO()
    _events(ProgressObserver(plain), ("pass_started", "generate", 8), ("pass_finished",))
    assert plain.getvalue().startswith("generate pass: 8 chunks in ")
    live = io.StringIO()
    obs = ProgressObserver(live, live=True)
    _events(obs, ("pass_started", "generate", 8), ("chunks_done", 3))
    assert "generate" in _screen(obs, live) and "3/8 chunks" in live.getvalue()
    obs.close()


def test_a_bayesian_fit_shows_its_bound_not_a_log_likelihood():
    from daskgmm import BayesianGaussianMixture, GaussianMixture

    lines = []

    class Lines:
        def iteration_finished(self, info):
            lines.extend(format_iteration(info, timing=False))

    import numpy as np

    X = np.random.default_rng(0).normal(size=(300, 2))
    with observers.observe(Lines()):
        BayesianGaussianMixture(n_components=2, max_iter=2, random_state=0).fit(X)
        GaussianMixture(n_components=2, max_iter=2, random_state=0).fit(X)
    assert [line.split()[2] for line in lines] == ["bound", "bound", "loglik", "loglik"]
