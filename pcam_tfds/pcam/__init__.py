"""The `pcam` TFDS dataset (Kaggle Histopathologic Cancer Detection patches)."""
