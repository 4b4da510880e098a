"""Property-based fuzzing of the whole published API (Schemathesis over ``/openapi.json``), bounded in time.

Every operation the server publishes is driven with generated requests (valid and invalid by the
schema, its coverage phase, then random fuzzing and stateful sequences) against a real server whose
datastore lies in a canary folder. Passes when no request is answered 5xx, at least 2,000 requests were
generated, and nothing under the canary folder changed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import save_nifti, sphere_volume
from test_security import snapshot

from lib.workflow.server import start_server, stop_server

pytestmark = pytest.mark.e2e  # starts real servers

FUZZ_SECONDS = 120
MIN_REQUESTS = 2000


def test_fuzzing_the_openapi_schema_finds_no_server_error_and_writes_nothing(tmp_path):
    jail = tmp_path / "jail"
    studies = jail / "studies"
    studies.mkdir(parents=True)
    for i in range(2):
        image, _ = sphere_volume(seed=i)
        save_nifti(image, studies / f"case_{i}.nii.gz")
    server = start_server(studies, tmp_path / "work", {"model_dir": str(tmp_path / "model")},
                          env={"MONAI_LABEL_SESSION_PATH": str(jail / "sessions")})
    try:
        before = snapshot(jail)
        report = tmp_path / "report.json"
        st = Path(sys.executable).parent / "st"
        run = subprocess.run(
            [str(st), "run", f"{server.url}/openapi.json", "--checks", "not_a_server_error", "--workers", "1",
             "--seed", "20261203", "--max-examples", "30", "--max-time", str(FUZZ_SECONDS), "--request-timeout", "60",
             "--generation-database", "none", "--no-color", "--report", "json", "--report-json-path", str(report)],
            capture_output=True, text=True, timeout=FUZZ_SECONDS + 240,
        )
        out = run.stdout[-6000:] + run.stderr[-2000:]
        result = json.loads(report.read_text())
        assert result["failures"] == [], out
        assert result["errors"] == [], out
        assert run.returncode == 0, out
        assert result["operations"]["tested"] >= 30, out
        print(f"fuzz: {result['test_cases']['generated']} requests over {result['operations']['tested']} operations "
              f"in {result['running_time']:.0f} s, no 5xx")
        assert result["test_cases"]["generated"] >= MIN_REQUESTS, out
        after = snapshot(jail)
        assert after == before, sorted(set(after.items()) ^ set(before.items()))[:10]
        # the server still serves
        assert server.client().info()["name"].startswith("One-shot")
    finally:
        stop_server(server)
