"""lib/threads.py: how many torch threads a background job takes on a CPU host."""

from __future__ import annotations

import pytest
import torch

from lib.config import ConfigError
from lib.threads import job_threads, torch_threads, usable_cpus


def test_auto_leaves_one_core_to_the_server_and_cuda_is_left_alone():
    assert job_threads("auto", "cpu") == max(1, usable_cpus() - 1)
    assert job_threads(3, "cpu") == 3
    assert job_threads(0, "cpu") is None  # torch's own default
    assert job_threads("auto", "cuda:0") is None and job_threads(3, "cuda") is None
    with pytest.raises(ConfigError, match="job_threads"):
        job_threads(-2, "cpu")


def test_torch_threads_restores_the_former_count_even_on_error():
    before = torch.get_num_threads()
    want = 1 if before > 1 else 2
    with pytest.raises(RuntimeError):
        with torch_threads(want):
            assert torch.get_num_threads() == want
            raise RuntimeError("the job failed")
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before


def test_a_cpu_training_request_may_ask_for_the_cores_this_process_may_run_on_not_the_hosts(monkeypatch):
    """In a container limited to some cores (CPU affinity), ``processes`` counts those, not the host's."""
    from lib.tasks.models import train_processes
    from lib.tasks.params import ClientError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    assert usable_cpus() == 2
    assert train_processes({"processes": 2}) == (2, [])
    with pytest.raises(ClientError, match="processes"):
        train_processes({"processes": 3})
