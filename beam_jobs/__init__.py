"""Apache Beam jobs over the Kaggle-layout PCam files: validation and dataset statistics."""
