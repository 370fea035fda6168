"""The predictor's one configuration: the shard job, validation and the bundle's inferer all
build it from the plan and the inference section with the same function."""

from __future__ import annotations

import pytest
import torch

from cohortseg.inference.predictor import (
    Predictor,
    PredictorConfig,
    predict_probabilities,
    predict_with_tta,
    predictor_config,
)

PLAN = {"patch_size": [8, 8, 4]}


class Ramp(torch.nn.Module):
    """Logits that depend on position and image: mirroring changes them."""

    def forward(self, x):
        ramp = torch.linspace(0, 3, x.shape[2]).view(1, 1, -1, 1, 1)
        return torch.cat([x + ramp, torch.zeros_like(x)], dim=1)


def test_the_config_is_the_plan_patch_size_and_the_inference_section():
    config = predictor_config(PLAN, {"overlap": 0.5, "sw_batch_size": 3, "tta": "mirror"})
    assert config == PredictorConfig((8, 8, 4), 3, 0.5, "gaussian", "mirror")
    assert predictor_config(PLAN, {"overlap": 0.25, "sw_batch_size": 1}).tta == "none"
    with pytest.raises(ValueError, match="tta"):
        predictor_config(PLAN, {"overlap": 0.5, "sw_batch_size": 1, "tta": "rotate"})


@pytest.mark.parametrize("tta", ["none", "mirror"])
def test_the_inferer_predicts_what_predict_with_tta_does(tta):
    inference = {"overlap": 0.5, "sw_batch_size": 2, "tta": tta}
    images = torch.randn(2, 1, 12, 10, 6)
    probs = Predictor(PLAN, inference)(images, Ramp())
    assert probs.shape == (2, 2, 12, 10, 6)
    for image, p in zip(images, probs, strict=True):
        torch.testing.assert_close(p, predict_with_tta(Ramp(), image, PLAN, inference)[0])
    if tta == "none":
        torch.testing.assert_close(
            probs[0], predict_probabilities(Ramp(), images[0], PLAN, inference)
        )


def test_an_inferer_with_bad_settings_fails_when_built():
    with pytest.raises(ValueError, match="tta"):
        Predictor(PLAN, {"overlap": 0.5, "sw_batch_size": 2, "tta": "flip"})
