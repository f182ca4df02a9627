"""gpt/utils.py cpu_threads: CPU threads only on the cores other programs leave free, or what the user set."""

import pytest

from gpt.utils import THREADS_ENV, cpu_threads, shared_machine_note


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
    note = shared_machine_note(1, processes=1, cpus=2)
    assert note.startswith("cpu threads: 1 of 2, as other programs keep the rest busy")
    assert "torchrun --standalone --nproc-per-node 2 scripts/pretrain.py" in note
    assert shared_machine_note(2, processes=1, cpus=2) is None  # every core: nothing to say
    assert shared_machine_note(1, processes=2, cpus=2) is None  # already one process per core
    no_thread_env.setenv(THREADS_ENV, "1")
    assert shared_machine_note(1, processes=1, cpus=2) is None  # the user chose
    no_thread_env.delenv(THREADS_ENV)
    no_thread_env.setenv("OMP_NUM_THREADS", "1")
    assert shared_machine_note(1, processes=1, cpus=2) is None
