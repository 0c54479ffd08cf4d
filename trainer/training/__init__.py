"""Training one model: the run loop and what it is made of.

loop        pcam-train's run: datasets, phases, callbacks, resume, the final evaluation
recipe      the training recipe: the model, the optimizer and its weight average, compile, precision
phases      the phases of a run (head, fine-tuning), their state file and the rules that resume them
schedule    the learning-rate schedules (budget, cosine, constant) as frozen values and their callback
budget      the time budget (wall-clock or CPU minutes) and the callback that stops at it
distribute  the distribution strategy; multi-worker clusters: who writes, how the workers agree
epoch_log   training_log.csv, one row per epoch, safe against a kill
gpu_check   pcam-gpu-check: is training bound by the input pipeline or by the train step?
"""
