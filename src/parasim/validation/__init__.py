"""Case replay: a measured benchmark case -> the simulator's prediction of the same run."""
