"""The `pcam_hdf5` TFDS dataset (the official PatchCamelyon HDF5 files, with their own splits)."""
