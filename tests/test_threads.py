"""gpt/utils.py cpu_threads: CPU threads only on the cores other programs leave free, or what the user set."""

import math
import subprocess
import sys
import time

import pytest

from gpt.utils import THREADS_ENV, busy_elsewhere, cpu_threads, own_load, shared_machine_note, usable_cpus


@pytest.fixture
def no_thread_env(monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    "cpus, load, processes, want",
    [(2, 0.0, 1, 2), (2, 0.9, 1, 1), (2, 5.0, 1, 1), (16, 3.2, 1, 13), (16, 0.0, 2, 8), (16, 10.0, 4, 1)],
)
def test_threads_fit_the_free_cores(no_thread_env, cpus, load, processes, want):
    assert cpu_threads(processes, load=load, cpus=cpus) == want


def test_the_environment_decides_when_set(no_thread_env):
    no_thread_env.setenv("OMP_NUM_THREADS", "3")
    assert cpu_threads(load=0.0, cpus=16) == 3
    no_thread_env.setenv(THREADS_ENV, "5")  # ours wins over OpenMP's
    assert cpu_threads(load=9.0, cpus=2) == 5
    no_thread_env.setenv(THREADS_ENV, "two")
    with pytest.raises(ValueError, match=f"{THREADS_ENV} must be a whole number"):
        cpu_threads()


def test_the_machine_is_read_when_not_given(no_thread_env):
    assert 1 <= cpu_threads() <= len(__import__("os").sched_getaffinity(0))


def test_a_run_given_fewer_threads_than_cpus_is_told_why_and_what_keeps_more(no_thread_env):
    busy = "cpu threads: 1 of 2, as other programs keep the rest busy (GPT_THREADS=N chooses)"
    assert shared_machine_note(1, processes=1, cpus=2, split=(2, None)) == (
        f"{busy}; beside a busy program one process per core trains faster: torchrun --standalone --nproc-per-node 2 "
        "scripts/pretrain.py <these arguments> (README: CPU threads)"
    )
    # tiny.yaml's 8 sequences a step split 4 + 4 over 2 processes: the command says so
    assert "scripts/pretrain.py <these arguments> --batch-size 4 (README" in shared_machine_note(1, 1, 2, split=(2, 4))
    assert shared_machine_note(1, processes=1, cpus=2, split=None) == busy  # a step no 2 processes can split
    assert shared_machine_note(2, processes=1, cpus=2, split=(2, None)) is None  # every core: nothing to say
    assert shared_machine_note(1, processes=2, cpus=2, split=(2, None)) is None  # already one process per core
    over = "cpu: 3 processes on 2 CPUs take turns at every gradient all-reduce"  # more processes than cores
    assert (
        shared_machine_note(1, processes=3, cpus=2, split=(2, 4))
        == f"{over}; --nproc-per-node 2 --batch-size 4 trains faster"
    )
    assert shared_machine_note(1, processes=3, cpus=2, split=None) == over
    no_thread_env.setenv(THREADS_ENV, "1")
    assert shared_machine_note(1, processes=1, cpus=2, split=(2, None)) is None  # the user chose
    no_thread_env.delenv(THREADS_ENV)
    no_thread_env.setenv("OMP_NUM_THREADS", "1")  # as torchrun sets it
    assert shared_machine_note(1, processes=1, cpus=2, split=(2, None)) is None
    assert shared_machine_note(1, processes=4, cpus=2).startswith("cpu: 4 processes on 2 CPUs")


def test_own_load_is_the_part_of_the_one_minute_average_this_process_made():
    assert own_load(0.0, 0.0) == 0.0
    assert own_load(5.0, 5.0) == pytest.approx(1 - math.exp(-5 / 60))  # 1 thread for 5 s: 0.08, not 1
    assert own_load(1200.0, 600.0) == pytest.approx(2.0, rel=1e-4)  # 2 threads for 10 minutes
    assert own_load(30.0, 3600.0) == pytest.approx(30 / 3600)  # an idle notebook


def test_a_program_that_has_just_started_is_seen_at_once(no_thread_env):
    # two spinning threads (processes) started a moment ago: the 1-minute load average has barely moved yet
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        time.sleep(1.0)
        busy = busy_elsewhere()
        threads = cpu_threads()
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    assert busy >= 1.5  # both (and whatever else the machine runs)
    assert threads <= max(1, usable_cpus() - 2)  # the cores they keep busy are left to them
