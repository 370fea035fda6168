"""A bundle's configs, in the conventions of MONAI's bundle runner, the Model Zoo and MONAI
Label: ``inference.json`` (segment a folder of NIfTI images as cohortseg does),
``train.json`` (train or fine-tune on a datalist: ``train#trainer``, ``train#dataset``,
``validate#evaluator``, ``validate#dataset``) and ``evaluate.json`` (laid over ``train.json``:
Dice on the native grid of a datalist's validation subjects).

Every cohortseg step is a member of the bundle's ``scripts/cohortseg_portable.py``
(:mod:`cohortseg.inference.bundle.portable`); the rest is MONAI's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cohortseg.inference.bundle.portable import MODULE_NAME
from cohortseg.inference.predictor import predictor_config
from cohortseg.networks.build import network_kwargs

#: What ``configs/inference.json`` reads images from and writes label maps to, by default
#: (override on the command line: ``--dataset_dir DIR --output_dir DIR``).
DEFAULT_DATASET_DIR = "data"
DEFAULT_OUTPUT_DIR = "eval"

#: ``train.json``'s datalist: a JSON file in the Medical Segmentation Decathlon's layout
#: (``{"training": [{"image": ..., "label": ...}], "validation": [...]}``, paths relative to
#: the file), read by ``monai.data.load_decathlon_datalist``.
DEFAULT_DATALIST = "datalist.json"

#: What train.json uses when the export is given no ``training`` section (cohortseg's defaults).
DEFAULT_TRAINING = {
    "epochs": 12,
    "batch_size": 2,
    "learning_rate": 0.01,
    "weight_decay": 3e-5,
    "optimizer": "adamw",
    "seed": 0,
}

IMPORTS = ["$import glob", "$import os", "$import scripts"]
DEVICE = "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')"


def portable(name: str) -> str:
    """The ``_target_`` of a member of the bundle's portable module."""
    return f"scripts.{MODULE_NAME}.{name}"


def predictor_section(plan: Mapping, inference: Mapping) -> dict:
    """The ``inference`` section the bundle's predictor is built from (``overlap``,
    ``sw_batch_size``, ``tta``), checked by :func:`cohortseg.inference.predictor.predictor_config`
    so that a bundle never holds settings the predictor refuses."""
    config = predictor_config(plan, inference)
    return {"overlap": config.overlap, "sw_batch_size": config.sw_batch_size, "tta": config.tta}


def common_config(checkpoint: Mapping, inference: Mapping) -> dict:
    """What every config of the bundle holds: the device, the plan, the predictor's settings and
    the network (``network_def`` as MONAI Label expects it)."""
    plan, model = checkpoint["plan"], checkpoint["model_config"]
    return {
        "imports": list(IMPORTS),
        "bundle_root": ".",
        "device": DEVICE,
        "plan": _jsonable(dict(plan)),
        "inference": predictor_section(plan, inference),
        "network_def": {
            "_target_": f"monai.networks.nets.{model['name']}",
            "spatial_dims": 3,
            "in_channels": 1,
            "out_channels": len(plan["classes"]) + 1,
            **_jsonable(network_kwargs(model)),
        },
        "network": "$@network_def.to(@device)",
    }


def inference_config(checkpoint: Mapping, inference: Mapping) -> dict:
    """``configs/inference.json`` for a cohortseg checkpoint (its ``model_config`` and ``plan``)
    and the ``inference`` config section (``overlap``, ``sw_batch_size``, ``tta``).

    ``preprocessing`` and ``postprocessing`` are ``Compose``s (as MONAI Label's bundle tasks
    expect); the ``inferer`` is cohortseg's predictor; the ``writer`` is apart from the
    postprocessing, since MONAI Label writes label maps itself.
    """
    return {
        **common_config(checkpoint, inference),
        "dataset_dir": DEFAULT_DATASET_DIR,
        "output_dir": DEFAULT_OUTPUT_DIR,
        "datalist": "$sorted(glob.glob(os.path.join(@dataset_dir, '*.nii*')))",
        "load_weights": (
            "$@network.load_state_dict(torch.load(os.path.join(@bundle_root, 'models', "
            "'model.pt'), map_location=@device, weights_only=True))"
        ),
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {
                    "_target_": portable("PrepareImaged"),
                    "keys": "image",
                    "plan": "@plan",
                    "device": "@device",
                }
            ],
        },
        "inferer": {"_target_": portable("Predictor"), "plan": "@plan", "inference": "@inference"},
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [{"_target_": portable("RestoreLabelsd"), "keys": "pred"}],
        },
        "writer": {
            "_target_": portable("SaveLabelsd"),
            "keys": "pred",
            "output_dir": "@output_dir",
        },
        "segment": {
            "_target_": portable("segment_images"),
            "_requires_": "@load_weights",
            "images": "@datalist",
            "preprocessing": "@preprocessing",
            "network": "@network",
            "inferer": "@inferer",
            "postprocessing": "@postprocessing",
            "writer": "@writer",
            "device": "@device",
        },
        "run": ["@segment"],
    }


def train_config(checkpoint: Mapping, inference: Mapping, training: Mapping | None = None) -> dict:
    """``configs/train.json``: train on a datalist's ``training`` subjects, validate on its
    ``validation`` subjects each ``val_interval`` epochs (mean foreground Dice on the plan's
    grid, predicted as cohortseg's validation predicts: without test-time augmentation) and keep
    the best network as ``models/model.pt``.

    Fine-tunes the bundle's ``models/model.pt`` unless ``fine_tune`` is false. Patches of the
    plan's ``patch_size`` are drawn half on foreground, and mirrored along each axis, scaled and
    shifted in intensity and given noise, as cohortseg's training augments. ``training``: the
    config section (``epochs``, ``batch_size``, ``learning_rate``, ``weight_decay``,
    ``optimizer``, ``seed``; ``fine_tuning``'s ``epochs`` and ``learning_rate`` win, since the
    bundle fine-tunes by default); :data:`DEFAULT_TRAINING` where absent.
    """
    settings = {**DEFAULT_TRAINING, **dict(training or {})}
    settings.update((training or {}).get("fine_tuning") or {})
    plan = checkpoint["plan"]
    patch = [int(n) for n in plan["patch_size"]]
    return {
        **common_config(checkpoint, inference),
        "ckpt_dir": "$os.path.join(@bundle_root, 'models')",
        "output_dir": "$os.path.join(@bundle_root, 'eval')",
        "dataset_dir": DEFAULT_DATASET_DIR,
        "datalist_file": f"$os.path.join(@dataset_dir, '{DEFAULT_DATALIST}')",
        "fine_tune": True,
        "max_epochs": int(settings["epochs"]),
        "val_interval": 1,
        "learning_rate": float(settings["learning_rate"]),
        "loss": {"_target_": "DiceCELoss", "to_onehot_y": True, "softmax": True},
        "optimizer": _optimizer(settings),
        "train": _train_section(patch, int(settings["batch_size"])),
        "validate": _validate_section(len(plan["classes"]) + 1),
        "initialize": [f"$monai.utils.set_determinism(seed={int(settings['seed'])})"],
        "run": ["$@train#trainer.run()"],
    }


def evaluate_config(checkpoint: Mapping) -> dict:
    """``configs/evaluate.json``, laid over ``train.json`` (``--config_file
    "['configs/train.json','configs/evaluate.json']"``): segment the datalist's ``validation``
    subjects with ``models/model.pt`` as ``inference.json`` does (test-time augmentation as
    exported) and score the label maps on their native grid against the native labels, as
    cohortseg's evaluation does: mean foreground Dice, per subject and summarised, into
    ``output_dir``."""
    n_classes = len(checkpoint["plan"]["classes"]) + 1
    return {
        "validate#preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": portable("PrepareImaged"), "keys": "image", "plan": "@plan"},
                {"_target_": portable("PrepareLabeld"), "keys": "label", "grid": "native"},
            ],
        },
        "validate#dataset#cache_rate": 0,
        "validate#inferer": {
            "_target_": portable("Predictor"),
            "plan": "@plan",
            "inference": "@inference",
        },
        "validate#postprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": portable("RestoreLabelsd"), "keys": "pred", "channel_first": True},
                {"_target_": "AsDiscreted", "keys": ["pred", "label"], "to_onehot": n_classes},
            ],
        },
        "validate#handlers": [
            {
                "_target_": "CheckpointLoader",
                "load_path": "$os.path.join(@ckpt_dir, 'model.pt')",
                "load_dict": {"model": "@network"},
                "strict": True,
            },
            {"_target_": "StatsHandler", "iteration_log": False},
            {
                "_target_": "MetricsSaver",
                "save_dir": "@output_dir",
                "metrics": ["val_mean_dice"],
                "metric_details": ["val_mean_dice"],
                "batch_transform": (
                    "$lambda batch: [{'filename_or_obj': b['image_path']} for b in batch]"
                ),
                "summary_ops": "*",
            },
        ],
        "run": ["$@validate#evaluator.run()"],
    }


def _optimizer(settings: Mapping) -> dict:
    """``training.optimizer`` as cohortseg builds it: AdamW, or SGD with Nesterov momentum 0.99."""
    common = {
        "params": "$@network.parameters()",
        "lr": "@learning_rate",
        "weight_decay": float(settings["weight_decay"]),
    }
    if settings["optimizer"] == "sgd":
        return {"_target_": "torch.optim.SGD", **common, "momentum": 0.99, "nesterov": True}
    return {"_target_": "torch.optim.AdamW", **common}


def _train_section(patch: list[int], batch_size: int) -> dict:
    """``train``: the trainer, its data and handlers (validation each ``val_interval`` epochs,
    the bundle's weights loaded first when fine-tuning)."""
    loss = "$monai.handlers.from_engine(['loss'], first=True)"
    return {
        **_train_transforms(patch),
        "preprocessing": {
            "_target_": "Compose",
            "transforms": "$@train#deterministic_transforms + @train#random_transforms",
        },
        "dataset": {
            "_target_": "CacheDataset",
            "data": "$monai.data.load_decathlon_datalist(@datalist_file, True, 'training')",
            "transform": "@train#preprocessing",
            "cache_rate": 1.0,
            "num_workers": 0,
            "progress": False,
        },
        "dataloader": {
            "_target_": "DataLoader",
            "dataset": "@train#dataset",
            "batch_size": batch_size,
            "shuffle": True,
            "num_workers": 0,
        },
        "inferer": {"_target_": "SimpleInferer"},
        "handlers": [
            {
                "_target_": "CheckpointLoader",
                "_disabled_": "$not @fine_tune",
                "load_path": "$os.path.join(@ckpt_dir, 'model.pt')",
                "load_dict": {"model": "@network"},
                "strict": True,
            },
            {
                "_target_": "ValidationHandler",
                "validator": "@validate#evaluator",
                "epoch_level": True,
                "interval": "@val_interval",
            },
            {"_target_": "StatsHandler", "tag_name": "train_loss", "output_transform": loss},
        ],
        "trainer": {
            "_target_": "SupervisedTrainer",
            "max_epochs": "@max_epochs",
            "device": "@device",
            "train_data_loader": "@train#dataloader",
            "network": "@network",
            "loss_function": "@loss",
            "optimizer": "@optimizer",
            "inferer": "@train#inferer",
            "train_handlers": "@train#handlers",
            "amp": False,
        },
    }


def _train_transforms(patch: list[int]) -> dict:
    """The way in (cohortseg's, on the CPU: DataLoader workers must not hold CUDA tensors),
    then patches of the plan's size, half centred on foreground, augmented as cohortseg's
    training augments: mirrored per axis, intensity x U(0.9, 1.1) + U(-0.1, 0.1), noise."""
    keys = ["image", "label"]
    flips = [
        {"_target_": "RandFlipd", "keys": keys, "prob": 0.5, "spatial_axis": axis}
        for axis in (0, 1, 2)
    ]
    return {
        "deterministic_transforms": [
            {"_target_": portable("PrepareImaged"), "keys": "image", "plan": "@plan"},
            {"_target_": portable("PrepareLabeld"), "keys": "label", "grid": "plan"},
        ],
        "random_transforms": [
            {"_target_": "SpatialPadd", "keys": keys, "spatial_size": patch},
            {
                "_target_": "RandCropByPosNegLabeld",
                "keys": keys,
                "label_key": "label",
                "spatial_size": patch,
                "pos": 1,
                "neg": 1,
                "num_samples": 1,
            },
            *flips,
            {"_target_": "RandScaleIntensityd", "keys": "image", "factors": 0.1, "prob": 1.0},
            {"_target_": "RandShiftIntensityd", "keys": "image", "offsets": 0.1, "prob": 1.0},
            {"_target_": "RandGaussianNoised", "keys": "image", "prob": 0.3, "std": 0.05},
        ],
    }


def _validate_section(n_classes: int) -> dict:
    """``validate``: the evaluator that scores the validation subjects (mean foreground Dice
    on the plan's grid) and keeps the best network as ``models/model.pt``."""
    pred_label = "$monai.handlers.from_engine(['pred', 'label'])"
    return {
        "preprocessing": {"_target_": "Compose", "transforms": "%train#deterministic_transforms"},
        "dataset": {
            "_target_": "CacheDataset",
            "data": "$monai.data.load_decathlon_datalist(@datalist_file, True, 'validation')",
            "transform": "@validate#preprocessing",
            "cache_rate": 1.0,
            "num_workers": 0,
            "progress": False,
        },
        "dataloader": {
            "_target_": "DataLoader",
            "dataset": "@validate#dataset",
            "batch_size": 1,
            "shuffle": False,
            "num_workers": 0,
        },
        # cohortseg validates without test-time augmentation
        "inferer": {
            "_target_": portable("Predictor"),
            "plan": "@plan",
            "inference": "$dict(@inference, tta='none')",
        },
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [
                {
                    "_target_": "AsDiscreted",
                    "keys": ["pred", "label"],
                    "argmax": [True, False],
                    "to_onehot": n_classes,
                }
            ],
        },
        "key_metric": {
            "val_mean_dice": {
                "_target_": "MeanDice",
                "include_background": False,
                "output_transform": pred_label,
            }
        },
        "handlers": [
            {"_target_": "StatsHandler", "iteration_log": False},
            {
                "_target_": "CheckpointSaver",
                "save_dir": "@ckpt_dir",
                "save_dict": {"model": "@network"},
                "save_key_metric": True,
                "key_metric_filename": "model.pt",
            },
        ],
        "evaluator": {
            "_target_": "SupervisedEvaluator",
            "device": "@device",
            "val_data_loader": "@validate#dataloader",
            "network": "@network",
            "inferer": "@validate#inferer",
            "postprocessing": "@validate#postprocessing",
            "key_val_metric": "@validate#key_metric",
            "val_handlers": "@validate#handlers",
            "amp": False,
        },
    }


def _jsonable(value: Any) -> Any:
    """``value`` with tuples as lists, all the way down (what JSON holds)."""
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
