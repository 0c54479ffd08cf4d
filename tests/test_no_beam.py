"""A local build and the trainer's readers import no Apache Beam (issue 12): run in a subprocess whose first act
is an import hook that refuses `apache_beam`, so any import of it, however deep or guarded, is recorded. The
local build of `pcam` imports no TensorFlow either (issue 39).

The build runs through TFDS' Python API (`download_and_prepare`), as `tfds build` does. The `tfds` command
itself cannot be checked so: TFDS 4.9's CLI imports Beam on start-up (its convert_format_utils defines a
`beam.DoFn` at module level, defeating the lazy import), before any of this project's code runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from cli_runs import REPO
from kaggle_folders import make_clean

# Installed before anything else in the child: refuses apache_beam and every submodule, and remembers each try.
REFUSE_BEAM = """
import sys
REFUSED = []
class RefuseBeam:
    def find_spec(self, name, path=None, target=None):
        if name == "apache_beam" or name.startswith("apache_beam."):
            REFUSED.append(name)
            raise ModuleNotFoundError(f"refused by the test: {name}", name=name)
        return None
sys.meta_path.insert(0, RefuseBeam())
"""


def run_without_beam(body: str, tmp_path) -> dict:
    """Runs BODY after the hook in a child Python; returns what it printed last (JSON) with 'refused' added."""
    script = tmp_path / "child.py"
    script.write_text(
        REFUSE_BEAM
        + body
        + "\nimport json\nprint(json.dumps({'refused': REFUSED, 'beam_loaded': 'apache_beam' in sys.modules, **OUT}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PCAM_VALIDATION_DIR"}  # the build validates itself
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))  # this checkout
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_local_build_of_pcam_full_imports_no_beam(tmp_path):
    kaggle = make_clean(tmp_path / "kaggle", num_train=20, num_test=5, seed=0)
    body = f"""
import tensorflow_datasets as tfds
from pcam_tfds.pcam.pcam_dataset_builder import Builder
builder = Builder(data_dir={str(tmp_path / "tfds")!r}, config="full")
builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir={str(kaggle)!r}))
OUT = {{"splits": {{name: s.num_examples for name, s in builder.info.splits.items()}}}}
OUT["tensorflow_loaded"] = "tensorflow" in sys.modules
"""
    out = run_without_beam(body, tmp_path)
    assert out["refused"] == [] and not out["beam_loaded"]
    assert sum(out["splits"].values()) == 25 and out["splits"]["test"] == 5
    # Nor TensorFlow (issue 39): the records are serialized and written without it, and pcam-build does not load it.
    assert not out["tensorflow_loaded"]


def test_reading_a_local_folder_and_its_validation_imports_no_beam(tmp_path):
    kaggle = make_clean(tmp_path / "kaggle", num_train=12, num_test=3, seed=1)
    body = f"""
from pcam_tfds.core import channel_stats, layout, local_validation, validated
check = local_validation.LocalValidation({str(kaggle)!r})
doc = check.write_outputs({str(tmp_path / "checks")!r})
rows = validated.load_records({str(tmp_path / "checks")!r}, {str(kaggle)!r})
copied = validated.copy_outputs({str(tmp_path / "checks")!r}, {str(tmp_path / "copy")!r})
layout.check_labels_header(layout.join({str(kaggle)!r}, layout.LABELS_CSV))
OUT = {{"total": doc["total"], "rows": len(rows), "copied_total": copied["total"]}}
"""
    out = run_without_beam(body, tmp_path)
    assert out == {"refused": [], "beam_loaded": False, "total": 15, "rows": 15, "copied_total": 15}


def test_pcam_validate_on_this_machine_imports_no_beam(tmp_path):
    """The command's local path, as `python -m beam_jobs.validate` runs it: the package and the job module load no
    Beam (importing it cost about 1 s of every validation)."""
    kaggle = make_clean(tmp_path / "kaggle", num_train=12, num_test=3, seed=2)
    body = f"""
from beam_jobs import validate
summary = validate.run(["--manual_dir={kaggle}", "--output_dir={tmp_path / "out"}"])
OUT = {{"total": summary["total"]}}
"""
    out = run_without_beam(body, tmp_path)
    assert out == {"refused": [], "beam_loaded": False, "total": 15}
