"""Export a trained run as a TensorFlow SavedModel for serving: uint8 patches in, tumour probability out.

    pcam-export --model_dir=runs/baseline --output_dir=export/baseline/1
    pcam-export --model_dir=runs/baseline --output_dir=export/baseline/1 --calibrate
    python -m trainer.inference.export ...       # the same command

The `serving_default` signature takes `images`: uint8 [batch, 96, 96, 3] (RGB, as the Kaggle TIFFs
decode) and returns `probability`: float32 [batch]. Casting and scaling happen inside, so a client
sends raw pixels (4x fewer bytes than float32). The probabilities are the model's own, as pcam-predict
writes them; --calibrate passes them through the run's temperature fitted on validation (calibration.json). Loading needs
TensorFlow only: `tf.saved_model.load(DIR).signatures["serving_default"](images=...)`. config.json
beside it tells whole-slide tools the patch size, microns per pixel, class names and input dtype. Serving it with
TensorFlow Serving: BUILD.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json

from absl import flags, logging

from pcam_tfds.core.folder_lock import atomic_path
from trainer import errors
from trainer.config import cli, options
from trainer.config.options import option

FLAGS = flags.FLAGS
SIGNATURE = "serving_default"
INPUT_NAME = "images"
OUTPUT_NAME = "probability"
SLIDE_CONFIG_FILE = "config.json"  # beside the SavedModel, for whole-slide tools (WSInfer-style)


def export(model_dir: str, output_dir: str, calibrate: bool = False) -> dict:
    """Writes the SavedModel to output_dir; returns what was exported (also written as export.json there).
    calibrate: the probabilities through the run's fitted temperature (MissingInput if it has none)."""
    import tensorflow as tf
    from etils import epath

    from trainer.inference import calibration, probabilities

    model = probabilities.load_model(model_dir)
    height, width, channels = model.input_shape[1:]
    temperature = calibration.read_temperature(model_dir) if calibrate else None

    class Serving(tf.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None, height, width, channels], tf.uint8, name=INPUT_NAME)])
        def serve(self, images):
            p = tf.cast(tf.reshape(self.model(tf.cast(images, tf.float32), training=False), [-1]), tf.float32)
            if temperature is not None:
                p = probabilities.scale_probabilities(p, temperature)
            return {OUTPUT_NAME: p}

    module = Serving()
    final = epath.Path(output_dir)
    if final.exists() and any(final.iterdir()):
        raise errors.UsageError(f"--output_dir={output_dir!r} is not empty; give a new (version) folder")
    # A local export is written beside its folder and renamed into place once whole, so TensorFlow Serving
    # (which watches the folder above the versions) and a rerun never see half an export.
    final.parent.mkdir(parents=True, exist_ok=True)
    local = "://" not in output_dir
    with atomic_path(final) if local else contextlib.nullcontext(final) as out:
        return _write(module, out, model_dir, model, temperature)


def _write(module, out, model_dir: str, model, temperature: float | None) -> dict:
    """The SavedModel, export.json and config.json into the folder OUT; returns export.json's content."""
    import tensorflow as tf

    height, width, channels = model.input_shape[1:]
    tf.saved_model.save(module, str(out), signatures={SIGNATURE: module.serve})
    info = {
        "model_dir": model_dir,
        "model": model.name,
        "signature": SIGNATURE,
        "input": {"name": INPUT_NAME, "dtype": "uint8", "shape": [None, height, width, channels]},
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": [None]},
        "temperature": temperature,
    }
    (out / "export.json").write_text(json.dumps(info, indent=2) + "\n")
    (out / SLIDE_CONFIG_FILE).write_text(json.dumps(slide_config(model, temperature), indent=2) + "\n")
    return info


def slide_config(model, temperature: float | None) -> dict:
    """config.json: what a whole-slide tool needs to run the SavedModel, in the spirit of WSInfer's model config."""
    from pcam_tfds.core import record_spec
    from pcam_tfds.core.patches import PATCH_MPP

    return {
        "spec_version": "1.0",
        "architecture": model.name,
        "num_classes": len(record_spec.LABEL_NAMES),
        "class_names": list(record_spec.LABEL_NAMES),
        "output": f"{OUTPUT_NAME}: float32 [n], the probability of {record_spec.LABEL_NAMES[1]!r}",
        "patch_size_pixels": int(model.input_shape[1]),
        "spacing_um_px": PATCH_MPP,
        "input_dtype": "uint8",
        "input_range": [0, 255],
        "channels": "RGB",
        "transform": [],
        "preprocessing": "inside the model: cast to float32 and the run's own normalisation; send raw RGB pixels",
        "calibrated": temperature is not None,
    }


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """What pcam-export does; each field is also its flag."""

    model_dir: str = option(help="Finished trainer run folder (model.keras).", required=True)
    output_dir: str = options.output_dir("the SavedModel, export.json and config.json (TF Serving wants MODEL/VERSION)")
    calibrate: bool = options.calibrate()


def define_flags(flag_values: flags.FlagValues) -> None:
    cli.define(flag_values, ExportConfig)


def _main(argv) -> int:
    config = cli.make(FLAGS, ExportConfig, argv[1:])
    info = export(config.model_dir, config.output_dir, config.calibrate)
    logging.info("exported %s", info)
    calibrated = f", calibrated with temperature {info['temperature']:.3f}" if info["temperature"] else ""
    shape = ", ".join(map(str, info["input"]["shape"][1:]))
    print(f"wrote {config.output_dir}: {SIGNATURE}(images: uint8 [n, {shape}]) -> probability [n]{calibrated}")
    return 0


def main() -> None:
    """The console script `pcam-export` (and `python -m trainer.inference.export`)."""
    define_flags(FLAGS)
    errors.run(_main, tensorflow=True)


if __name__ == "__main__":
    main()
