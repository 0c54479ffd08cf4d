"""Training, evaluation and Kaggle submissions on the `pcam` dataset.

    config/      the commands' configurations and the flags made from them
    training/    pcam-train's run loop and its recipe, phases, schedules, budget; pcam-gpu-check
    tuning/      pcam-tune: hyperparameter search with keras-tuner
    inference/   pcam-predict, pcam-evaluate, pcam-export: using finished runs
    evaluation/  metrics, reports and plots; pcam-compare
    models/      the model registry, one module per model
    slides/      pcam-slide: whole-slide heatmaps
    data.py, augment.py, determinism.py   the input pipeline, its augmentations and its randomness
    run_folder.py, errors.py              a run folder's files and lock; how a command ends on a mistake

    import trainer, keras
    model = keras.saving.load_model("runs/baseline/model.keras")   # the project's own layers included

Importing the package imports neither Keras nor TensorFlow: it registers the layers saved models hold when Keras
is imported (trainer.saved_layers). Each command quiets TensorFlow where it starts (trainer.errors.run).
"""

from trainer import saved_layers as _saved_layers

_saved_layers.register_when_keras_loads()
