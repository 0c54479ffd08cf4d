"""Apache Beam jobs over the Kaggle-layout PCam files: validation and dataset statistics.

Importing the package imports nothing else, Beam included: `pcam-validate` on one machine runs the local
executor (pcam_tfds.core.local_validation) and never loads Beam. The modules that do use Beam import it
through `beam_jobs.quiet_beam` first, which holds the root logger quiet while Beam loads (see there).
"""
