"""The configurations of the trainer's commands, and the command line made from them.

options       `option`: a config field with its flag's help, choices and default; the choice lists
train_config  TrainConfig, one training run; `resolved` makes it from the options a user gave
defaults      the defaults that depend on the schedule and the machine (recipe, precision, XLA)
validation    TrainConfig's checks: values and their combinations, then the model registry and the files
hparams       a tuning result (--hparams): its keys, read and mapped onto TrainConfig fields
restart       RUN_DIR/config.json, and the fields a restart may change

The other commands' configs live beside their command (PredictConfig in trainer.inference.predict, ...).
"""
