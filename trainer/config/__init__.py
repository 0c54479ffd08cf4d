"""The configurations of the trainer's commands.

train_config  TrainConfig, one training run: its fields (each also a pcam-train flag), validation and JSON form
"""
