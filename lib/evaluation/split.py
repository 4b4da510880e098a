"""The sample cohort's split (``sample-data/build_cohort.py``): the scribbled support, then train, validation and
test studies, disjoint. The workflow (``lib/workflow/runner.py``) and the benchmarks use this one split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_COHORT = Path(__file__).resolve().parents[2] / "sample-data" / "cohort"


@dataclass
class Split:
    support: str
    train: list[str]
    val: list[str]
    test: list[str]

    @classmethod
    def from_cohort(cls, cohort: Path, n_val: int = 1, n_test: int = 3) -> "Split":
        """The scribbled study is the support; of the others (sorted), the last ``n_test`` are test and the
        ``n_val`` before them validation."""
        support = sorted(p.name.split(".")[0] for p in (cohort / "scribbles").glob("*.nii.gz"))[0]
        others = sorted(p.name.split(".")[0] for p in (cohort / "studies").glob("*.nii.gz") if not p.name.startswith(support + "."))
        if len(others) < n_val + n_test + 1:
            raise ValueError(f"{len(others)} studies besides the support: need at least {n_val + n_test + 1}")
        return cls(support, others[: len(others) - n_val - n_test], others[len(others) - n_val - n_test: len(others) - n_test],
                   others[len(others) - n_test:])

    @property
    def studies(self) -> list[str]:
        """Every study of the split: the support, train, validation, test."""
        return [self.support, *self.train, *self.val, *self.test]

    @property
    def train_and_val(self) -> list[str]:
        """The studies a noise benchmark trains on when it needs no validation study (train, then validation)."""
        return [*self.train, *self.val]


def sample_split(cohort: Path = DEFAULT_COHORT) -> Split:
    """The default split of the sample cohort: support ``subject_a``; train pseudo_01..04; validation pseudo_05;
    test pseudo_06..08."""
    return Split.from_cohort(cohort)
