"""The bundle's configs: what MONAI's runner, the Model Zoo's layout and MONAI Label's bundle
tasks look up is there, and every component names something that exists."""

from __future__ import annotations

import json

import pytest
from monai.bundle import ConfigParser
from monai.utils.module import locate

from cohortseg.inference.bundle.configs import train_config
from tests.inference.bundle.common import INFERENCE, load_portable

# What MONAI Label's BundleInferTask and BundleTrainTask read or override (monailabel/tasks/
# {infer,train}/bundle.py), and what MONAI's runner runs.
INFER_IDS = ["bundle_root", "device", "network_def", "preprocessing", "inferer", "postprocessing"]
TRAIN_IDS = [
    "bundle_root",
    "device",
    "network_def",
    "network",
    "train#trainer",
    "train#trainer#max_epochs",
    "train#dataset",
    "train#dataset#data",
    "train#handlers",
    "validate#evaluator",
    "validate#dataset#data",
    "run",
]


def configs(bundle):
    return {
        name: json.loads((bundle / "configs" / f"{name}.json").read_text())
        for name in ("inference", "train", "evaluate")
    }


def targets(config) -> list[str]:
    """Every ``_target_`` in a config, at any depth."""
    if isinstance(config, dict):
        found = [config["_target_"]] if isinstance(config.get("_target_"), str) else []
        return found + [t for v in config.values() for t in targets(v)]
    if isinstance(config, list):
        return [t for v in config for t in targets(v)]
    return []


def test_every_component_is_monais_or_the_portable_modules(exported):
    portable = load_portable(exported.bundle)
    parser = ConfigParser()
    names = {t for config in configs(exported.bundle).values() for t in targets(config)}
    assert {"scripts.cohortseg_portable.Predictor", "SupervisedTrainer"} <= names
    for name in sorted(names):
        if name.startswith("scripts."):
            assert hasattr(portable, name.removeprefix("scripts.cohortseg_portable.")), name
        elif "." in name:
            assert locate(name) is not None, name
        else:  # MONAI's short names (Compose, DiceCELoss), as its runner finds them
            assert parser.locator.get_component_module_name(name), name


def test_the_ids_monai_label_and_the_runner_use_are_there(exported):
    parser = ConfigParser()
    parser.read_config(str(exported.bundle / "configs" / "inference.json"))
    for name in INFER_IDS:
        assert name in parser, name
    parser = ConfigParser()
    parser.read_config(str(exported.bundle / "configs" / "train.json"))
    for name in TRAIN_IDS:
        assert name in parser, name
    evaluate = configs(exported.bundle)["evaluate"]
    assert evaluate["run"] == ["$@validate#evaluator.run()"]


def test_inference_config_holds_the_pipelines_predictor(exported):
    inference = configs(exported.bundle)["inference"]
    assert inference["inference"] == {"overlap": 0.25, "sw_batch_size": 2, "tta": "mirror"}
    assert inference["inferer"]["_target_"] == "scripts.cohortseg_portable.Predictor"
    assert inference["plan"]["patch_size"] == exported.plan["patch_size"]
    # validation predicts without test-time augmentation, as cohortseg's does; evaluation as
    # inference does
    train = configs(exported.bundle)["train"]
    assert train["validate"]["inferer"]["inference"] == "$dict(@inference, tta='none')"
    assert configs(exported.bundle)["evaluate"]["validate#inferer"]["inference"] == "@inference"


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_train_config_takes_the_training_and_fine_tuning_settings(exported, optimizer):
    model = {"name": "UNet", "channels": [4, 8], "strides": [2], "num_res_units": 0}
    checkpoint = {"plan": exported.plan, "model_config": model}
    training = {
        "epochs": 30,
        "batch_size": 3,
        "learning_rate": 0.01,
        "weight_decay": 1e-4,
        "optimizer": optimizer,
        "seed": 7,
        "fine_tuning": {"epochs": 3, "learning_rate": 0.002},
    }
    config = train_config(checkpoint, INFERENCE, training)
    assert config["max_epochs"] == 3 and config["learning_rate"] == 0.002
    assert config["train"]["dataloader"]["batch_size"] == 3
    assert (
        config["optimizer"]["_target_"] == f"torch.optim.{'SGD' if optimizer == 'sgd' else 'AdamW'}"
    )
    assert config["optimizer"]["weight_decay"] == 1e-4
    assert config["initialize"] == ["$monai.utils.set_determinism(seed=7)"]
    crop = config["train"]["random_transforms"][1]
    assert crop["spatial_size"] == exported.plan["patch_size"]
