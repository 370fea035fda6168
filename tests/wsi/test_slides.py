"""Slides: pixel size, levels, tissue, labels (mask and GeoJSON) and patches, registered
across levels; bad slides refused with the slide, the file and the reason."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import tifffile

from cohortseg.core.errors import InvalidInputError
from cohortseg.wsi.demo import TUMOUR, synthetic_slide, write_synthetic_slide
from cohortseg.wsi.labels import MaskLabels, PolygonLabels, open_labels
from cohortseg.wsi.patches import sample_slide_origins, write_slide_store
from cohortseg.wsi.pyramid import array_reader, write_pyramid
from cohortseg.wsi.slides import choose_level, open_slide, slide_plan
from cohortseg.wsi.tissue import detect_tissue, saturation, tissue_mask

H, W, PX = 512, 768, 0.5  # level-0 pixels (divisible by 8: exact level factors), µm per pixel


@pytest.fixture(scope="module")
def slide_files(tmp_path_factory):
    """A synthetic pyramidal slide with its tumour as a level-0 mask TIFF and as GeoJSON."""
    d = tmp_path_factory.mktemp("wsi")
    geometry = synthetic_slide(H, W, seed=3)
    paths = {k: d / f"s.{k}" for k in ("tif", "mask.tif", "geojson")}
    write_synthetic_slide(
        paths["tif"], geometry, PX, paths["mask.tif"], paths["geojson"], "tumour", tile=128
    )
    return geometry, paths


def test_slide_levels_pixel_size_and_pixels(slide_files):
    geometry, paths = slide_files
    slide = open_slide("s", paths["tif"])
    assert slide.pixel_size_um == pytest.approx(PX)
    assert slide.dimensions[:3] == ((W, H), (W // 2, H // 2), (W // 4, H // 4))
    assert slide.downsamples[:3] == (1.0, 2.0, 4.0)
    assert slide.level_pixel_size_um(2) == pytest.approx(4 * PX)
    # level 1 holds the slide sampled at the centres of 2 × 2 blocks; JPEG (quality 75) moves
    # pixel values by a few grey levels, so compare means over a region
    got = slide.read(1, 40, 60, 64, 64).astype(float)
    want = geometry.rgb(80, 80 + 128, 2)[:, 60:124].astype(float)
    assert np.abs(got - want).mean() < 6
    # tiles read directly give the pixels tiffslide's read_region gives
    assert slide.tiles is not None and None not in slide.tiles.pages
    direct = slide.read(1, 40, 200, 100, 90)
    via_tiffslide = np.asarray(slide.handle.read_region((400, 80), 1, (90, 100)))[..., :3]
    np.testing.assert_array_equal(direct, via_tiffslide)
    # outside the slide reads white
    assert (slide.read(0, H - 4, W - 4, 8, 8)[4:, :] == 255).all()
    slide.close()


def test_level_choice():
    class Fake:
        pixel_size_um = 0.25
        downsamples = (1.0, 4.0, 16.0)
        dimensions = ((4000, 4000), (1000, 1000), (250, 250))

        def level_pixel_size_um(self, k):
            return self.pixel_size_um * self.downsamples[k]

    slide = Fake()
    assert choose_level(slide, 1.0) == 1  # exactly 1 µm/px at level 1
    assert choose_level(slide, 1.05) == 1
    assert choose_level(slide, 3.5) == 1  # level 2 (4 µm) would be coarser than asked
    assert choose_level(slide, 4.3) == 2  # within the 10 % allowance of the recorded factors
    assert choose_level(slide, 0.1) == 0
    plan = slide_plan(slide, 1.0, 256)
    assert plan["level"] == 1 and plan["patch_extent_um"] == [256.0, 256.0]


def test_pixel_size_missing_refused_unless_given(tmp_path):
    path = tmp_path / "nores.tif"
    tifffile.imwrite(path, np.full((256, 256, 3), 200, np.uint8), tile=(128, 128))
    with pytest.raises(InvalidInputError, match=r"no physical pixel size.*wsi\.pixel_size_um"):
        open_slide("s9", path)
    assert open_slide("s9", path, pixel_size_um=0.25).pixel_size_um == 0.25


def test_truncated_and_foreign_files_refused(slide_files, tmp_path):
    data = slide_files[1]["tif"].read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidInputError, match=r"^cut: .*cut\.tif: "):
        open_slide("cut", cut)
    text = tmp_path / "notes.tif"
    text.write_text("not a slide")
    with pytest.raises(InvalidInputError, match="cannot open as a slide"):
        open_slide("notes", text)
    with pytest.raises(InvalidInputError, match="does not exist"):
        open_slide("gone", tmp_path / "gone.tif")


def test_tissue_mask_finds_the_blobs(slide_files):
    geometry, paths = slide_files
    slide = open_slide("s", paths["tif"])
    mask, level = detect_tissue(slide, max_side_px=200)
    assert level == 2 and mask.shape == (H // 4, W // 4)
    x = np.arange(W // 4)[None] * 4 + 2.0
    y = np.arange(H // 4)[:, None] * 4 + 2.0
    truth = np.zeros(mask.shape, bool)
    for e in geometry.tissue:
        truth |= e.contains(x, y)
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou > 0.95  # boundary pixels of ellipses of ~100 px radius: about 2 % of the area
    # glass alone: nothing above the threshold, refused as an empty tissue mask
    assert not tissue_mask(np.full((64, 64, 3), 236, np.uint8)).any()
    assert saturation(np.array([[255, 0, 0]], np.uint8))[0] == pytest.approx(1.0)


def test_empty_slide_refused(tmp_path):
    path = tmp_path / "glass.tif"
    glass = np.full((256, 256, 3), 236, np.uint8)
    write_pyramid(path, array_reader(glass), 256, 256, PX, True, tile=128)
    with pytest.raises(InvalidInputError, match="glass: .*no tissue found"):
        detect_tissue(open_slide("glass", path))


@pytest.mark.parametrize("kind", ["mask.tif", "geojson"])
@pytest.mark.parametrize("downsample", [1, 2, 4])
def test_labels_registered_across_levels(slide_files, kind, downsample):
    geometry, paths = slide_files
    slide = open_slide("s", paths["tif"])
    labels = open_labels(slide, str(paths[kind]), ["tumour"])
    assert isinstance(labels, MaskLabels if kind == "mask.tif" else PolygonLabels)
    d = downsample
    got = labels.region(d, 5, 7, H // d - 5, W // d - 7)
    want = geometry.label(5 * d, H, d)[:, 7:]  # the analytic tumour at the centres
    assert got.shape == want.shape and want.sum() > 500
    if kind == "mask.tif":
        # the mask is level 0: a coarse pixel takes the level-0 pixel under its centre, and at
        # d > 1 that centre falls on a level-0 pixel border, half a pixel from the analytic one
        assert np.mean(got != want) <= (0.0 if d == 1 else 0.004)
    else:
        # a 96-gon inside the ellipse: at most r(1 - cos(π/96)) ≈ 0.05 % of the radius off
        assert np.mean(got != want) < 0.003


def test_misfit_labels_refused(slide_files, tmp_path):
    _, paths = slide_files
    slide = open_slide("s", paths["tif"])
    wide = tmp_path / "wide.png"
    from PIL import Image

    Image.fromarray(np.zeros((100, 300), np.uint8)).save(wide)
    with pytest.raises(InvalidInputError, match=r"mask 300×100 does not fit the slide 768×512"):
        open_labels(slide, str(wide), ["tumour"])
    big = tmp_path / "values.png"
    Image.fromarray(np.full((128, 192), 7, np.uint8)).save(big)
    with pytest.raises(InvalidInputError, match=r"holds value 7; classes are 0..1"):
        open_labels(slide, str(big), ["tumour"]).region(4, 0, 0, 128, 192)
    doc = json.loads(paths["geojson"].read_text())
    doc["features"][0]["geometry"]["coordinates"][0][3] = [W + 500.0, 10.0]
    outside = tmp_path / "outside.geojson"
    outside.write_text(json.dumps(doc))
    with pytest.raises(InvalidInputError, match="reaches outside the slide"):
        open_labels(slide, str(outside), ["tumour"])
    with pytest.raises(InvalidInputError, match=r"class 'tumour' is not one of \['stroma'\]"):
        open_labels(slide, str(paths["geojson"]), ["stroma"])


def test_patches_on_tissue_registered_with_labels(slide_files, tmp_path):
    geometry, paths = slide_files
    slide = open_slide("s", paths["tif"])
    tissue, tissue_level = detect_tissue(slide, max_side_px=200)
    level, size = 1, (64, 64)
    labels = open_labels(slide, str(paths["geojson"]), ["tumour"])
    low = labels.region(slide.downsamples[tissue_level], 0, 0, *tissue.shape)
    scale = slide.downsamples[tissue_level] / slide.downsamples[level]
    origins = sample_slide_origins(
        tissue, low, scale, (H // 2, W // 2), size, 40, 0.5, np.random.default_rng(0)
    )
    store = tmp_path / "s.h5"
    write_slide_store(store, slide, level, labels, origins, size, "lzf", 4, "abc")
    with h5py.File(store) as h5:
        assert h5["image"].dtype == np.uint8 and h5["image"].shape == (40, 3, 64, 64)
        assert h5["image"].chunks == (1, 3, 64, 64) and h5["label"].chunks == (1, 64, 64)
        assert h5["origin"].shape == (40, 2) and set(h5["level"][:]) == {1}
        assert h5.attrs["pixel_size_um"] == pytest.approx(2 * PX)
        assert h5.attrs["n_patches"] == 40 and h5.attrs["plan_hash"] == "abc"
        image, label, stored = h5["image"][:], h5["label"][:], h5["origin"][:]
    n_fg = 0
    for img, lab, (r, c) in zip(image, label, stored, strict=True):
        # the label is the analytic tumour under the patch, at level 1 (2 level-0 px a pixel)
        want = geometry.label(2 * r, 2 * (r + 64), 2)[:, c : c + 64]
        assert np.mean(lab != want) < 0.01
        centre = ((r + 32) * 2 // 4, (c + 32) * 2 // 4)  # on the tissue mask's grid
        assert tissue[centre] or low[centre]
        n_fg += bool(lab[28:36, 28:36].any())
        if lab.sum() > 200:  # the pixels labelled tumour are the purple ones
            colour = img[:, lab == 1].mean(axis=1)
            assert np.abs(colour - TUMOUR).max() < 25
    assert n_fg >= 18  # half of the patches are centred on the tumour


def test_pyramid_writer_resolution_tags(tmp_path):
    path = tmp_path / "lab.tif"
    labels = (np.arange(300 * 500).reshape(300, 500) % 3).astype(np.uint8)
    steps = write_pyramid(path, array_reader(labels), 300, 500, 2.0, False, tile=128)
    assert steps == [1, 2, 4]
    with tifffile.TiffFile(path) as tif:
        levels = tif.series[0].levels
        assert [lv.shape for lv in levels] == [(300, 500), (150, 250), (75, 125)]
        np.testing.assert_array_equal(levels[0].asarray(), labels)
        np.testing.assert_array_equal(levels[1].asarray(), labels[1::2, 1::2])
        page = levels[2].keyframe
        x_res = page.tags["XResolution"].value
        assert 1e4 / (x_res[0] / x_res[1]) == pytest.approx(8.0)  # µm per pixel at level 2


def test_qupath_geojson_holes_multipolygons_and_unclassified(slide_files, tmp_path):
    _, paths = slide_files
    slide = open_slide("s", paths["tif"])
    square = [[10, 10], [50, 10], [50, 50], [10, 50], [10, 10]]
    hole = [[20, 20], [30, 20], [30, 30], [20, 30], [20, 20]]
    far = [[[100, 100], [104, 100], [104, 104], [100, 104], [100, 100]]]
    doc = [  # QuPath may export a bare list of features
        {
            "type": "Feature",
            "geometry": {"type": "MultiPolygon", "coordinates": [[square, hole], far]},
            "properties": {"objectType": "annotation", "classification": {"name": "tumour"}},
        },
        {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [60, 0], [60, 60], [0, 0]]]},
            "properties": {"objectType": "annotation"},  # unclassified: skipped
        },
    ]
    path = tmp_path / "q.geojson"
    path.write_text(json.dumps(doc))
    labels = open_labels(slide, str(path), ["tumour"])
    full = labels.region(1, 0, 0, 128, 128)
    # pixel centres (i + 0.5) never fall on these integer edges: exact counts
    assert full.sum() == 40 * 40 - 10 * 10 + 4 * 4
    assert full[25, 25] == 0 and full[15, 15] == 1 and full[102, 102] == 1
    # the same annotations at downsample 2, read in a window that cuts the square
    part = labels.region(2, 10, 10, 20, 20)  # level-0 [20, 60) × [20, 60)
    assert part.sum() == (15 * 15 - 5 * 5)  # the square's part outside the hole


def test_mask_at_a_coarser_level(slide_files, tmp_path):
    from PIL import Image

    geometry, paths = slide_files
    slide = open_slide("s", paths["tif"])
    coarse = geometry.label(0, H, 4)  # the tumour at the centres of 4 × 4 blocks: level 2
    Image.fromarray(coarse).save(tmp_path / "level2.png")
    labels = open_labels(slide, str(tmp_path / "level2.png"), ["tumour"])
    np.testing.assert_array_equal(labels.region(4, 0, 0, H // 4, W // 4), coarse)
    # finer levels take the coarse pixel holding their centre: plain repetition
    fine = np.repeat(np.repeat(coarse, 2, 0), 2, 1)
    np.testing.assert_array_equal(labels.region(2, 0, 0, H // 2, W // 2), fine)


def test_polygon_fill_draws_the_pixels_skimage_draws():
    """The scanline fill of GeoJSON rings gives exactly ``skimage.draw.polygon``'s pixels,
    boundary pixels included: rings on integer and half-integer vertices (pixel centres on
    edges and vertices), self-intersecting ones, rings reaching past the region."""
    from skimage.draw import polygon

    from cohortseg.wsi.labels import _fill

    rng = np.random.default_rng(0)
    for k in range(600):
        height, width = (int(v) for v in rng.integers(1, 40, 2))
        ring = rng.uniform(-10, 50, (int(rng.integers(3, 12)), 2))
        ring = np.round(ring * (k % 3)) / (k % 3) if k % 3 else ring
        expected = np.zeros((height, width), bool)
        rr, cc = polygon(ring[:, 1], ring[:, 0], shape=(height, width))
        expected[rr, cc] = True
        np.testing.assert_array_equal(_fill(ring, height, width), expected, err_msg=str(k))
