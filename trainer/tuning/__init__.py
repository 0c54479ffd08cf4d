"""Hyperparameter search (pcam-tune) with keras-tuner: its best values go to pcam-train --hparams.

tune          the pcam-tune command
tune_config   the search's settings, their validation, and the check that a restart keeps them
search        runs (or continues) a search and writes its reports
hypermodel    the search spaces of the tuned and p4m CNNs, built and compiled as pcam-train does
tuners        the keras-tuner algorithms, with the trainer's time budget and determinism
tune_reports  trials.json, trials.md and best_hyperparameters.json
memory        what a long search must release between trials
"""
