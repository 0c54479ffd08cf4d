"""Whole-slide tumour heatmaps (`pcam-slide`): a trained run over every tissue window of a slide.

One module per part, in the order a slide goes through them:
  reader    slide files (OpenSlide; tifffile for tiled and plain TIFF) as pyramids of RGB regions
  tissue    the thumbnail's tissue mask: which windows are predicted
  geometry  the window grid in model pixels, the level to read, resampling
  plan      the run's settings (SlideConfig) and everything checked before the output folder is touched
  dense     a model's convolutions once over a region, exact for padding-free models
  heatmap   windows predicted tile by tile, per window or densely, resumable
  outputs   one writer module per output file, summary.json last
  pyramid   the tiled pyramidal TIFF writer (heatmap.tif; the tests' and benchmarks' slides)
  command   the pcam-slide command: one slide, or a folder of them with slides.csv
"""


def main() -> None:
    """The console script `pcam-slide` (and `python -m trainer.slides`)."""
    from trainer.slides.command import main as command_main

    command_main()


def define_flags(flag_values) -> None:
    """pcam-slide's flags on `flag_values` (the fields of trainer.slides.command.SlideCommand)."""
    from trainer.slides.command import define_flags as command_define_flags

    command_define_flags(flag_values)
