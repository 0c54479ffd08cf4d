"""Training, evaluation and Kaggle submissions on the `pcam` dataset (see the trainer issue).

Importing the package changes nothing; each command quiets TensorFlow where it starts (`trainer.errors.run`).
"""
