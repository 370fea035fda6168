"""Slide inference: windows on tissue only, blending independent of the memory-bounded block
size, the label pyramid registered with the level-0 mask, overview, areas and Dice."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
import torch

from cohortseg.networks.build import build_network
from cohortseg.wsi.demo import synthetic_slide, write_synthetic_slide
from cohortseg.wsi.inference import (
    block_size,
    class_areas_mm2,
    gaussian_weights,
    overview,
    segment_slide,
    window_starts,
    write_label_pyramid,
)
from cohortseg.wsi.labels import open_labels
from cohortseg.wsi.slides import open_slide
from cohortseg.wsi.stages import label_dice
from cohortseg.wsi.tissue import detect_tissue
from cohortseg.wsi.training import slide_predictor

H, W, PX, LEVEL, WINDOW = 512, 768, 0.5, 1, 64


def colour_oracle(calls: list[int] | None = None, ramp: bool = False):
    """A predictor that knows the phantom's colours: tumour where red is low (purple) — what a
    trained network learns, without training. ``ramp`` weighs it by the position in the
    window, so that the blending of overlapping windows changes the result."""

    def predict(rgb: np.ndarray) -> np.ndarray:
        if calls is not None:
            calls.append(len(rgb))
        red = rgb[:, 0].astype(np.float32)
        p1 = 1 / (1 + np.exp((red - 175) / 8))
        if ramp:
            p1 = p1 * np.linspace(0.6, 1.4, rgb.shape[-1], dtype=np.float32)
            p1 = np.clip(p1, 0, 1)
        return np.stack([1 - p1, p1], 1)

    return predict


@pytest.fixture(scope="module")
def slide_case(tmp_path_factory):
    d = tmp_path_factory.mktemp("wsi_infer")
    geometry = synthetic_slide(H, W, seed=5)
    write_synthetic_slide(d / "s.tif", geometry, PX, d / "m.tif", d / "s.geojson", tile=128)
    slide = open_slide("s", d / "s.tif")
    tissue, tissue_level = detect_tissue(slide, max_side_px=200)
    return d, geometry, slide, tissue, tissue_level


def test_window_grid_and_memory_bound():
    assert window_starts(100, 64, 48) == [0, 36]
    assert window_starts(40, 64, 48) == [0]
    assert window_starts(256, 64, 48) == [0, 48, 96, 144, 192]
    for mb, classes in ((1, 2), (64, 3), (1024, 2)):
        side = block_size(mb, classes, 256)
        assert side % 256 == 0 and side >= 256
        if side > 256:  # the accumulators fit the budget (the minimum block aside)
            assert (classes + 1) * 4 * (side + 512) ** 2 <= mb * 2**20
    weights = gaussian_weights(64)
    # an even window has no centre pixel: its peak is exp(-0.5² / (2 (σ = 8 px)²))² ≈ 0.996
    assert weights.max() == pytest.approx(1.0, abs=0.005) and weights.min() >= 1e-3


def test_prediction_lands_on_the_mask_at_every_level(slide_case):
    d, geometry, slide, tissue, tissue_level = slide_case
    calls: list[int] = []
    counts = segment_slide(
        slide,
        LEVEL,
        colour_oracle(calls),
        1,
        tissue,
        tissue_level,
        d / "scratch.h5",
        window=WINDOW,
        overlap=0.25,
        batch_size=8,
        max_memory_mb=64,  # one block: no repeats
    )
    all_windows = len(window_starts(H // 2, WINDOW, 48)) * len(window_starts(W // 2, WINDOW, 48))
    assert 0 < sum(calls) < all_windows  # glass-only windows are never predicted
    write_label_pyramid(d / "scratch.h5", d / "pred.tif", slide.level_pixel_size_um(LEVEL))
    mask0 = tifffile.imread(d / "m.tif")  # the tumour at level 0
    with tifffile.TiffFile(d / "pred.tif") as tif:
        levels = [lv.asarray() for lv in tif.series[0].levels]
        x_res = tif.series[0].levels[0].keyframe.tags["XResolution"].value
    assert 1e4 * x_res[1] / x_res[0] == pytest.approx(2 * PX)  # µm per pixel of the label map
    assert levels[0].shape == (H // 2, W // 2)
    # back to level 0: every level-0 pixel takes the prediction of the label-map pixel holding
    # it; they disagree only in a band of about one label pixel (2 level-0 px) along the
    # boundary (JPEG and the colour threshold): perimeter × 2 px / area ≈ 2 % of the tumour
    up = np.repeat(np.repeat(levels[0], 2, 0), 2, 1)
    assert ((up == 1) & (mask0 == 1)).sum() / (mask0 == 1).sum() > 0.95
    assert np.mean(up != mask0) < 0.005
    for k, lab in enumerate(levels):
        step = 2 * 2**k  # level-0 pixels per label pixel at pyramid level k
        want = geometry.label(0, H, step)
        assert lab.shape == want.shape
        # nearest sampling puts a pyramid pixel half a label pixel from the analytic centre
        assert np.mean(lab != want) < 0.01 + 0.5 / min(lab.shape)
    area = class_areas_mm2(counts, 2 * PX)[0]
    analytic = sum(np.pi * e.rx * e.ry for e in geometry.tumour) * (PX * 1e-3) ** 2
    assert area == pytest.approx(analytic, rel=0.03)
    labels = open_labels(slide, str(d / "s.geojson"), ["tumour"])
    assert label_dice(d / "scratch.h5", labels, 2.0, 1)[0] > 0.97
    overview(slide, LEVEL, d / "scratch.h5", d / "ov.png", max_side_px=256)
    from PIL import Image

    with Image.open(d / "ov.png") as image:
        assert image.size == (W // 4, H // 4)


def test_blending_does_not_depend_on_block_size(slide_case, tmp_path):
    _, _, slide, tissue, tissue_level = slide_case
    maps, predicted = [], []
    for mb, name in ((0.5, "small"), (512, "large")):
        path = tmp_path / f"{name}.h5"
        calls: list[int] = []
        segment_slide(
            slide,
            LEVEL,
            colour_oracle(calls, ramp=True),
            1,
            tissue,
            tissue_level,
            path,
            window=WINDOW,
            overlap=0.5,
            batch_size=3,
            max_memory_mb=mb,
        )
        with h5py.File(path) as h5:
            maps.append(h5["label"][:])
        predicted.append(sum(calls))
        assert not Path(f"{path}.carry.h5").exists()  # the border sums are removed
    assert block_size(0.5, 2, WINDOW) == 256 and block_size(512, 2, WINDOW) >= 768
    # each window is predicted once, in the block where it starts, however many blocks of 256
    # pixels it straddles (one block holds the whole level in the second run)
    assert predicted[0] == predicted[1] > 0
    # the same windows are blended into each pixel; with small blocks the sums carried across
    # block borders are added in another order, which changes a float32 sum by ~1e-7 of its
    # value: a label could only flip where two classes tie that closely (none do here)
    np.testing.assert_array_equal(maps[0], maps[1])
    assert maps[0].any()


def test_2d_network_and_predictor():
    model = {"name": "UNet", "channels": [4, 8], "strides": [2], "num_res_units": 0, "kwargs": {}}
    net = build_network(model, 2, spatial_dims=2, in_channels=3).eval()
    predict = slide_predictor(net, torch.device("cpu"))
    out = predict(np.zeros((2, 3, 32, 32), np.uint8))
    assert out.shape == (2, 2, 32, 32)
    np.testing.assert_allclose(out.sum(1), 1.0, rtol=1e-5)  # softmax in float32
