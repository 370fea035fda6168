# Wiring of the whole-slide rules (wsi.smk): the slides of wsi.slides, their shards per stage
# (cohortseg.wsi.cohort, pure functions of the config), and the input functions of the rules.
from cohortseg.wsi import cohort as wsicohort

WSI = config["wsi"]
WSI_DEMO = WSI["slides"] == "demo"
try:
    WSI_SLIDES = {s.subject: s for s in wsicohort.load_slides(WSI, PRIVACY)}
except CohortsegError as exc:
    raise WorkflowError(f"cohortseg: {exc}") from None
WSI_SHARDS = {
    stage: wsicohort.slide_shards(
        list(WSI_SLIDES.values()), config["shard_size"], stage
    )
    for stage in wsicohort.STAGE_SPLITS
}
WSI_JSON = as_json(WSI)
PRIVACY_JSON = as_json(PRIVACY)
WSI_TABLES = {
    "tissue": wsicohort.tissue_manifest_path,
    "patches": wsicohort.patch_manifest_path,
    "infer": wsicohort.inference_manifest_path,
}


def wsi_tables(stage):
    """Every shard table of a slide stage."""
    return [WSI_TABLES[stage](shard) for shard in WSI_SHARDS[stage]]


def wsi_inputs(stage):
    """Input function: the shard's slide and label files (the demo's, made by a rule; a real
    sheet's that exist), so that a replaced slide reruns its shard."""

    def files(w):
        slides = [WSI_SLIDES[s] for s in WSI_SHARDS[stage][w.shard]]
        return markers.tracked(
            [p for s in slides for p in (s.image, s.label)], WSI_DEMO
        )

    return files


def wsi_members(stage):
    """Params function: the slide ids of the job's shard of a slide stage (a shard whose
    members change runs again)."""

    def shard_members(w):
        return WSI_SHARDS[stage][w.shard]

    return shard_members
