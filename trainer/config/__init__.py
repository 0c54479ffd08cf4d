"""The configurations of the trainer's commands, and the command line made from them.

options       `option`: a config field with its flag's help, choices and default; the options several
              commands share, each declared once
cli           the absl flags of a config's fields, and a config from parsed flags: the one flag system
choices       the values some options may take (read by the models too)
train_config  TrainConfig, one training run; `resolved` makes it from the options a user gave
defaults      the defaults that depend on the schedule and the machine (recipe, precision, XLA)
validation    TrainConfig's checks: values and their combinations, then the model registry and the files
hparams       a tuning result (--hparams): its keys, read and mapped onto TrainConfig fields
restart       RUN_DIR/config.json, and the fields a restart may change

The other commands' configs live beside their command, each a frozen dataclass whose fields are its flags:
PredictConfig, EvaluateConfig and ExportConfig in trainer.inference, CompareConfig in trainer.evaluation.compare,
GpuCheckConfig in trainer.training.gpu_check, TuneOptions in trainer.tuning.tune_config, SlideCommand in
trainer.slides.command.
"""
