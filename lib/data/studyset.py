"""The built data folders as one interface: the development set (``sample-data/build_devset.py``) and the sample
cohort (``sample-data/build_cohort.py``) store their studies, ground truth and support scribbles differently."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StudySet:
    """A built data folder. ``root``: its path; ``manifest``: its ``manifest.json``."""

    root: Path
    manifest: dict

    @classmethod
    def open(cls, root: Path | str) -> "StudySet":
        root = Path(root)
        path = root / "manifest.json"
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: build the data first (sample-data/README.md)")
        return cls(root, json.loads(path.read_text()))

    @property
    def is_cohort(self) -> bool:  # the cohort lists its studies; the development set describes each
        return isinstance(self.manifest["studies"], list)

    def studies(self) -> list[str]:
        return list(self.manifest["studies"])

    def image(self, study: str) -> Path:
        name = f"{study}.nii.gz" if self.is_cohort else self.manifest["studies"][study]["image"]
        return self.root / "studies" / name

    def truth(self, study: str) -> Path:
        return self.root / "ground_truth" / f"{study}.nii.gz"

    def labels(self, study: str) -> dict[str, int]:
        """``{structure: id}`` of the study's ground truth."""
        return dict(self.manifest["labels"] if self.is_cohort else self.manifest["studies"][study]["labels"])

    def scribbles(self, support: str = "subject_a") -> tuple[Path, list[dict]]:
        """The support's scribbles file and its Slicer ``label_info``."""
        info = json.loads((self.root / "scribbles" / "label_info.json").read_text())
        return self.root / "scribbles" / f"{support}.nii.gz", info if self.is_cohort else info[support]
