"""Small helpers over MONAI Label's REST protocol: JSON calls, training and batch jobs with progress bars."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any, Callable

from tqdm import tqdm

from lib.config import is_true


def call(url: str, method: str = "GET", body: dict | None = None, timeout: float = 600) -> Any:
    """JSON request; RuntimeError with the server's message on an HTTP error."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            text = r.read()
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"{method} {url}: HTTP {e.code}: {e.read().decode(errors='replace')[:500]}") from None
    return json.loads(text) if text else None


def wait_until(done: Callable[[], bool], progress: Callable[[], tuple[int, int]], desc: str,
               timeout_s: float, poll_s: float = 2.0) -> None:
    """Poll ``done()`` with a progress bar fed by ``progress() -> (n, total)``; TimeoutError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    with tqdm(desc=desc, unit="step", leave=True) as bar:
        while True:
            n, total = progress()
            if total:
                bar.total = total
            bar.n = n
            bar.refresh()
            if done():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{desc}: not finished in {timeout_s:.0f} s")
            time.sleep(poll_s)


def train(server: str, model: str, params: dict, progress_keys: tuple[str, str], timeout_s: float = 6 * 3600) -> dict:
    """``POST /train/{model}`` and wait for it with a progress bar; returns the trainer's final stats.

    ``progress_keys``: (done, total) keys of the trainer's ``train_stats`` (e.g. ``("step", "max_steps")``).
    """
    def status() -> dict:
        try:
            return call(f"{server}/train/?check_if_running=false") or {}
        except RuntimeError:
            return {}

    def stats() -> dict:
        return (call(f"{server}/info/").get("train_stats") or {}).get(model) or {}

    before = stats()  # a restarted run shows 0, not the previous run's stats, until it writes its own
    restart = is_true(params.get("restart", False))
    call(f"{server}/train/{model}", "POST", params)

    def progress() -> tuple[int, int]:
        s = stats()
        done = 0 if restart and s == before else int(s.get(progress_keys[0], 0) or 0)
        return done, int(s.get(progress_keys[1], 0) or 0)

    def done() -> bool:
        s = status()
        if s.get("status") in ("SUBMITTED", "RUNNING"):
            return False
        if s.get("status") != "DONE":
            raise RuntimeError(f"training {model} ended {s.get('status')}: {str(s.get('details', ''))[-800:]}")
        return True

    time.sleep(1.0)
    wait_until(done, progress, f"train {model}", timeout_s)
    return stats()
