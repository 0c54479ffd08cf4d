"""The project's own Keras layers that a run's model.keras holds, made loadable by plain `keras.saving.load_model`.

    import trainer, keras
    model = keras.saving.load_model("runs/p4m/model.keras")     # P4M, stain-normalising and transfer runs too

Keras finds a saved custom layer by its registered name ("pcam>P4MLift"), which exists once the module that
defines the layer has run its `keras.saving.register_keras_serializable` decorator. Importing `trainer` stays
free of Keras and TensorFlow (a command's --help, pcam-compare), so `register_when_keras_loads` registers them
when Keras is imported: at once if it already is, else right after its first import, by an import hook that
removes itself.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

# The modules whose layers saved models hold: the P4M group layers, Reinhard normalisation, ImageNet preprocessing.
MODULES = ("trainer.models.gconv", "trainer.models.stain_norm", "trainer.models.transfer")


def register() -> None:
    """Registers the layers with Keras (imports Keras)."""
    for name in MODULES:
        importlib.import_module(name)


def register_when_keras_loads() -> None:
    """`register` now if Keras is imported, else as soon as it is."""
    if "keras" in sys.modules:
        register()
    elif not any(isinstance(finder, _AfterKeras) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterKeras())


class _AfterKeras(importlib.abc.MetaPathFinder):
    """Finds nothing itself: it hands Keras' own spec back, its loader set to register the layers once Keras has
    run, and leaves sys.meta_path."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            register()

        spec.loader.exec_module = exec_then_register
        return spec
