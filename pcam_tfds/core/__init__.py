"""The rules of the data with no executor in them: the patch reader, the Kaggle layout and its labels, the splits.

Nothing here imports Apache Beam or TensorFlow; `beam_jobs` (Beam) and `pcam_tfds` (the local build and the TFDS
builder) both execute these rules, and `trainer` reads patches through them.
"""
