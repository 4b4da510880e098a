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
