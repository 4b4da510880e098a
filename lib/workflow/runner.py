"""The one-shot workflow through the MONAI Label REST protocol, as resumable stages.

Stages (each recorded in ``<out>/state.json`` with its wall time; a finished stage is not redone):

1. ``support``     save the support scribbles (tag ``scribbles`` + ``label_info``) on the support study;
2. ``prnet``       train PRNet, self-supervised, on the studies of the served datastore (support + train);
3. ``tau``         pseudo masks of the train studies for each τ (``prnet_prelabel``), Dice vs ground truth;
4. ``prelabel``    ``POST /batch/infer/prnet_prelabel?images=unlabeled``: drafts (tag ``original``);
5. ``test_upload`` the held-out test studies enter the datastore (``PUT /datastore``) only now;
6. ``geos_only``   GeoS pseudo masks of the test studies (``prnet_prelabel``, nothing trained on them);
7. ``seg_<s>``     train ``segmentation`` on the drafts with strategy s ∈ none, plc, oeem, mcpm (MCPM's
                   clean meta set: the validation studies' ground truth, saved as ``final`` for that run
                   only), then ``segmentation`` inference on the test studies, Dice vs ground truth;
8. ``supervised``  the upper bound: a second server whose support + train studies carry their ground
                   truth as ``final``; the same UNet and budget (strategy ``none``); same test studies.

Split: support (the scribbled study), train, validation and test are disjoint; PRNet and the UNets never
see a test study before ``test_upload``, and nothing is trained after it except on train/val labels.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
from tqdm import tqdm

from lib.atomic import atomic_write_json
from lib.evaluation.metrics import dice_per_organ, mean_dice
from lib.evaluation.split import Split
from lib.segmentation.config import STRATEGIES
from lib.workflow.rest import call, train, wait_until
from lib.workflow.server import Server, start_server, stop_server


@dataclass
class Budget:
    prnet_steps: int = 2000
    seg_epochs: int = 20
    seg_steps: int = 50
    taus: tuple[float, ...] = (0.0, 0.5, 0.9)
    strategies: tuple[str, ...] = STRATEGIES


@dataclass
class Workflow:
    cohort: Path
    out: Path
    budget: Budget | None = None  # None: the budget recorded in <out>/state.json, else the defaults
    server_url: str = ""  # a running server on a datastore holding exactly support + train; "" starts one
    conf: dict = field(default_factory=dict)  # --conf of the servers this workflow starts
    split: Split | None = None

    def __post_init__(self):
        self.cohort, self.out = Path(self.cohort).resolve(), Path(self.out).resolve()  # servers run in other folders
        self.out.mkdir(parents=True, exist_ok=True)
        self.state_path = self.out / "state.json"
        self.state = json.loads(self.state_path.read_text()) if self.state_path.exists() else {"stages": {}}
        self.split = self.split or (Split(**self.state["split"]) if "split" in self.state else Split.from_cohort(self.cohort))
        self.state["split"] = asdict(self.split)
        recorded = self.state.get("budget")
        started = any(st.get("done") for st in self.state["stages"].values())
        if self.budget is None:
            self.budget = Budget(**recorded) if recorded else Budget()
        elif started and recorded and json.loads(json.dumps(asdict(self.budget))) != recorded:
            raise ValueError(
                f"{self.out} holds a run made with the budget {recorded}; its finished stages were trained with it. "
                "Resume with the same flags, rewrite the report with --report-only, or choose another --out."
            )
        self.state["budget"] = asdict(self.budget)
        self.names = json.loads((self.cohort / "ground_truth" / "labels.json").read_text())
        self._servers: dict[str, Server] = {}

    # --- plumbing ----------------------------------------------------------------------------------
    def _save(self) -> None:
        atomic_write_json(self.state_path, self.state)

    def stage(self, name: str, fn: Callable[[], dict]) -> dict:
        done = self.state["stages"].get(name)
        if done and done.get("done"):
            print(f"== {name}: done before ({done['seconds']:.0f} s), skipped")
            return done["result"]
        print(f"== {name}")
        t0 = time.perf_counter()
        result = fn()
        self.state["stages"][name] = {"done": True, "seconds": time.perf_counter() - t0, "result": result}
        self._save()
        return result

    def truth(self, study: str) -> np.ndarray:
        return np.rint(np.asarray(nib.load(str(self.cohort / "ground_truth" / f"{study}.nii.gz")).dataobj)).astype(np.int64)

    def image(self, study: str) -> Path:
        return self.cohort / "studies" / f"{study}.nii.gz"

    def server(self, kind: str = "oneshot") -> str:
        if kind == "oneshot" and self.server_url:
            return self.server_url.rstrip("/")
        if kind not in self._servers:
            studies = self.out / f"datastore_{kind}"
            if not studies.exists():
                studies.mkdir(parents=True)
                for s in [self.split.support, *self.split.train]:
                    shutil.copy(self.image(s), studies)
            conf = {"model_dir": str(self.out / "models" / kind), **self.conf}
            self._servers[kind] = start_server(studies, self.out / "servers", conf)
        return self._servers[kind].url

    def client(self, kind: str = "oneshot"):
        from monailabel.client import MONAILabelClient

        d = Path(tempfile.mkdtemp(prefix="client-", dir=self.out))
        return MONAILabelClient(self.server(kind), tmpdir=str(d))

    def close(self) -> None:
        for s in self._servers.values():
            stop_server(s)
        self._servers.clear()
        for d in self.out.glob("client-*"):
            shutil.rmtree(d, ignore_errors=True)

    def _infer_dice(self, kind: str, model: str, studies: list[str], params: dict, keep: str | None,
                    points_of: str | None = None) -> dict:
        """Infer ``model`` on ``studies``; Dice per organ vs ground truth; predictions kept under pred/<keep>.

        ``points_of``: for this study (``prnet_prelabel``), the propagated points kept/rejected by DFD are
        asked for too and kept in ``pred/<keep>/<study>.points.json``."""
        from monailabel.client.client import MONAILabelClientException

        client, rows, extra = self.client(kind), {}, {}
        for s in tqdm(studies, desc=f"{model} {json.dumps(params) if params else ''}".strip(), unit="study"):
            try:
                path, info = client.infer(model, s, {**params, "points": True} if s == points_of and keep else params)
            except MONAILabelClientException as e:
                if "Status: 422" not in str(e.msg):  # 422: the method found nothing (e.g. no point survived DFD)
                    raise
                rows[s], extra[s] = {o: 0.0 for o in self.names}, {"error": str(e.msg)}
                continue
            pred = np.rint(np.asarray(nib.load(path).dataobj)).astype(np.int64)
            rows[s] = dice_per_organ(pred, self.truth(s), self.names, info.get("label_names") or self.names)
            extra[s] = {k: v for k, v in info.items() if k in ("prnet", "geos")}
            if keep:
                (self.out / "pred" / keep).mkdir(parents=True, exist_ok=True)
                shutil.copy(path, self.out / "pred" / keep / f"{s}.nii.gz")
                if "points" in info:
                    atomic_write_json(self.out / "pred" / keep / f"{s}.points.json", info["points"])
        return {"per_study": rows, "mean": mean_dice(list(rows.values())), "info": extra}

    # --- stages ----------------------------------------------------------------------------------
    def _support(self) -> dict:
        info = json.loads((self.cohort / "scribbles" / "label_info.json").read_text())
        info = info["label_info"] if isinstance(info, dict) else info
        self.client().save_label(self.split.support, str(self.cohort / "scribbles" / f"{self.split.support}.nii.gz"),
                                 tag="scribbles", params={"label_info": info})
        return {"support": self.split.support, "classes": [d["name"] for d in info]}

    def _prnet(self) -> dict:
        every = max(1, min(50, self.budget.prnet_steps // 4))
        return train(self.server(), "prnet", {"max_steps": self.budget.prnet_steps, "checkpoint_every": every},
                     ("step", "max_steps"))

    def _tau(self) -> dict:
        default = float(self.state.get("default_tau", 0.5))
        return {str(t): self._infer_dice("oneshot", "prnet_prelabel", self.split.train, {"tau": t},
                                         keep="pseudo" if abs(t - default) < 1e-9 else None,
                                         points_of=self.split.train[0]) for t in self.budget.taus}

    def _prelabel(self) -> dict:
        server = self.server()
        call(f"{server}/batch/infer/prnet_prelabel?images=unlabeled", "POST", {})
        wanted = [self.split.support, *self.split.train]

        def drafted() -> int:
            objects = call(f"{server}/datastore/?output=all").get("objects", {})
            return sum("original" in objects.get(s, {}).get("labels", {}) for s in wanted)

        wait_until(lambda: drafted() == len(wanted), lambda: (drafted(), len(wanted)), "pre-label (batch)",
                   timeout_s=6 * 3600, poll_s=3)
        return {"drafts": len(wanted)}

    def _test_upload(self, kind: str = "oneshot") -> dict:
        client = self.client(kind)
        for s in self.split.test:
            client.upload_image(str(self.image(s)), s)
        return {"uploaded": list(self.split.test)}

    def _seg(self, kind: str, strategy: str) -> dict:
        server = self.server(kind)
        clean = strategy == "mcpm" and kind == "oneshot"
        if clean:  # MCPM's meta set: the validation studies with their ground truth as `final`
            client = self.client(kind)
            for s in self.split.val:
                client.upload_image(str(self.image(s)), s)
                client.save_label(s, str(self.cohort / "ground_truth" / f"{s}.nii.gz"), tag="final",
                                  params={"label_names": self.names})
        try:
            stats = train(server, "segmentation", {"noise_strategy": strategy, "restart": True, "seed": 0,
                                                   "epochs": self.budget.seg_epochs, "steps_per_epoch": self.budget.seg_steps},
                          ("epoch", "epochs"))
        finally:
            if clean:
                for s in self.split.val:
                    call(f"{server}/datastore/image?id={s}", "DELETE")
        result = self._infer_dice(kind, "segmentation", self.split.test, {}, keep=f"{kind}_{strategy}")
        result["train"] = {k: stats.get(k) for k in ("epoch", "loss", "studies", "final", "elapsed_s", "device")}
        return result

    def _supervised(self) -> dict:
        client = self.client("supervised")
        for s in [self.split.support, *self.split.train]:
            client.save_label(s, str(self.cohort / "ground_truth" / f"{s}.nii.gz"), tag="final",
                              params={"label_names": self.names})
        self._test_upload("supervised")
        return self._seg("supervised", "none")

    def run(self) -> dict:
        try:
            self.stage("support", self._support)
            self.stage("prnet", self._prnet)
            self.stage("tau", self._tau)
            self.stage("prelabel", self._prelabel)
            self.stage("test_upload", self._test_upload)
            self.stage("geos_only", lambda: self._infer_dice("oneshot", "prnet_prelabel", self.split.test, {}, keep="geos_only"))
            for s in self.budget.strategies:
                self.stage(f"seg_{s}", lambda s=s: self._seg("oneshot", s))
            self.stage("supervised", self._supervised)
        finally:
            self.close()
        return self.state
