"""Evaluation of a run, or an ensemble of runs, on a labelled set: one module per concern.

    metrics.py   numpy only: ROC and precision-recall curves, ROC AUC with its bootstrap interval, DeLong's
                 paired test, thresholds, calibration, the metrics.json record (compute_metrics)
    plots.py     the report's figures (matplotlib's object API and the Agg canvas, no pyplot)
    files.py     the predictions CSV, a labels CSV (id,label) and the training history (training_log.csv)
    report.py    a run folder's report (metrics.json, classification_report.txt, predictions, figures,
                 galleries) and its TensorBoard summaries
    compare.py   pcam-compare: finished runs (or evaluations) side by side, with paired tests of their AUCs

The report is written by the trainer (trainer.training.loop) and by pcam-evaluate (trainer.inference.evaluate),
which predict the set first. Importing this package imports none of its modules: `from trainer.evaluation
import metrics` loads numpy alone, so pcam-compare and other readers of metrics need neither matplotlib nor Keras.
"""
