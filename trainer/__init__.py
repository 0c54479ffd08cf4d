"""Training, evaluation and Kaggle submissions on the `pcam` dataset (see the trainer issue)."""
