"""Using finished runs: probabilities, submissions, evaluations on any labelled set, SavedModel export.

probabilities  a run's model.keras, and probabilities from one or several models, with 8-fold TTA
predict        pcam-predict: a Kaggle submission from a built split or a folder of patch files
evaluate       pcam-evaluate: runs (or their ensemble) on a labelled set, with the training's report
export         pcam-export: a TensorFlow SavedModel that takes uint8 patches
calibration    temperature scaling fitted on validation, and the run's validation thresholds
patch_folder   reading a folder of patch files, naming the unreadable ones
explain        Grad-CAM heatmaps of a model's decision
"""
