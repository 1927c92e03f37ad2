"""The metric classes a prediction's expected error is given for, in a module of their own so that
a reader of saved results (the HTML report, drawn in a process forked before the simulators are
imported: report/worker.py) gets them without importing the validation machinery."""

#: serving predictions carry one entry per metric class; the first is the headline
SERVING_METRICS = ("throughput", "ttft", "tpot", "e2e")
TRAINING_METRICS = ("throughput",)
