"""Write one synthetic demo slide (pyramidal TIFF) and its label both as a level-0 mask TIFF
and as QuPath GeoJSON (the demo's slide list says which one labels it)."""

import argparse

from cohortseg.workflow.cli import json_arg, run
from cohortseg.wsi.cohort import demo_image
from cohortseg.wsi.demo import synthetic_slide, write_synthetic_slide


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--wsi", type=json_arg, required=True, help="the wsi config (JSON)")
    parser.add_argument("--subject", required=True, help="demo slide id, e.g. wsi-001")
    args = parser.parse_args()
    demo, classes = args.wsi["demo"], args.wsi["classes"]
    image = demo_image(args.subject)
    index = int(args.subject.rsplit("-", 1)[1])
    geometry = synthetic_slide(int(demo["height"]), int(demo["width"]), int(demo["seed"]) + index)
    write_synthetic_slide(
        image,
        geometry,
        float(demo["pixel_size_um"]),
        mask_path=image.removesuffix(".tif") + ".mask.tif",
        geojson_path=image.removesuffix(".tif") + ".geojson",
        class_name=classes[0],
    )


if __name__ == "__main__":
    run(main)
