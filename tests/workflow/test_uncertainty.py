"""The per-subject uncertainty means something: on the demo's test split and degraded copies
(noise, blur, contrast shift), it ranks subjects by their segmentation error, and degraded copies
above clean ones. Reuses the model of the session's demo run."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from cohortseg.core.cohort import demo_subjects
from cohortseg.inference.uncertainty import spearman
from cohortseg.trust.perturbations import DEGRADATIONS
from cohortseg.trust.robustness import degraded_above_clean, perturbed_copies, segment_and_score
from tests.workflow.conftest import REPO

CONFIG = yaml.safe_load((REPO / "config.yaml").read_text())

pytestmark = pytest.mark.slow


def test_uncertainty_ranks_subjects_by_their_segmentation_error(demo_run, tmp_path):
    subjects = [
        (s.subject, str(demo_run / s.image), str(demo_run / s.label))
        for s in demo_subjects(CONFIG["demo"])
        if s.split == "test"
    ]
    copies = perturbed_copies(subjects, DEGRADATIONS, [1.0], tmp_path)
    assert len(copies) == len(subjects) * (1 + len(DEGRADATIONS))
    inference = {**CONFIG["inference"], "device": "cpu"}
    rows, _ = segment_and_score(
        str(demo_run / "results/model/best.pt"), copies, inference, CONFIG["classes"], tmp_path
    )
    uncertainty = [r["mean_uncertainty"] for r in rows]
    error = [1 - r["mean_dice"] for r in rows]
    # the benchmark (benchmarks/uncertainty.py) measures about 0.9 and claims >= 0.5
    assert spearman(uncertainty, error) >= 0.4
    assert degraded_above_clean(rows) >= 0.75
    clean = [r for r in rows if r["perturbation"] == "none"]
    degraded = [r for r in rows if r["perturbation"] != "none"]
    assert np.mean([r["mean_dice"] for r in degraded]) < np.mean([r["mean_dice"] for r in clean])
