"""A run's model in a notebook: after `import trainer`, plain keras.saving.load_model reads models that hold the
project's own layers (P4M group convolutions, Reinhard stain normalisation), and importing trainer loads no Keras."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from cli_runs import REPO

_BUILD = """
import sys, numpy as np
from trainer import models
folder = sys.argv[1]
x = np.random.default_rng(0).integers(0, 256, (2, 96, 96, 3)).astype("float32")
np.save(f"{folder}/x.npy", x)
for name, model in [("p4m", models.build("p4m", filters=(8, 16), dense=8)),
                    ("reinhard", models.build("baseline", stain_norm="reinhard"))]:
    model.save(f"{folder}/{name}.keras")
    np.save(f"{folder}/{name}.npy", model(x).numpy())
print("saved")
"""

_LOAD = """
import json, sys
{imports}
import numpy as np
folder = sys.argv[1]
x = np.load(f"{{folder}}/x.npy")
out = {{}}
for name in ("p4m", "reinhard"):
    model = keras.saving.load_model(f"{{folder}}/{{name}}.keras")
    out[name] = float(np.abs(model(x).numpy() - np.load(f"{{folder}}/{{name}}.npy")).max())
print(json.dumps(out))
"""

# Importing trainer first: no Keras, no TensorFlow until the notebook imports Keras itself.
_TRAINER_FIRST = (
    "import trainer\n"
    "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules, 'import trainer loaded Keras'\n"
    "import keras"
)


def _python(code: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved")
    _python(_BUILD, str(folder))
    return folder


@pytest.mark.parametrize(
    "imports", [_TRAINER_FIRST, "import keras\nimport trainer"], ids=["trainer-first", "keras-first"]
)
def test_keras_load_model_reads_p4m_and_stain_normalising_models_after_import_trainer(saved, imports):
    differences = json.loads(_python(_LOAD.format(imports=imports), str(saved)))
    assert differences == {"p4m": 0.0, "reinhard": 0.0}


def test_without_import_trainer_keras_cannot_find_the_layers(saved):
    """What the registration fixes: Keras alone does not know the project's layers."""
    proc = subprocess.run(
        [sys.executable, "-c", f"import keras; keras.saving.load_model({str(saved / 'p4m.keras')!r})"],
        capture_output=True, text=True, cwd=REPO, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode != 0 and "P4MLift" in proc.stderr


def test_registering_again_is_harmless_and_leaves_no_hook_once_keras_is_imported():
    import keras

    from trainer import saved_layers

    saved_layers.register_when_keras_loads()
    saved_layers.register()
    assert not any(isinstance(f, saved_layers._AfterKeras) for f in sys.meta_path)
    assert keras.saving.get_registered_object("pcam>P4MLift") is not None
