"""Analyses: run files or a user's checkpoints -> result files (Section 5 of the paper and beyond).

The rule for what goes where: the mathematics of a measurement lives in `landscape.measures` (any
model, writes nothing); a module here chooses what to measure from its inputs (the paper's models,
saved epochs, a pool of fresh data), resumes and shares the work (torchrun), and writes one HDF5
result file with the parameters that produced it (`landscape.results`); the figure is drawn from
that file by `landscape.figures`. One module per section: memorization (5.1), gradnorm (5.2),
flatness with sliced and directions (5.3), mse (5.4), sharpness (beyond), selection (Tables 2
and 3), curves (Fig. 2's averages); loading (a run's data, model and weights), usermodel and
usercheckpoints (the same analyses on a user's model and checkpoint files), figures (which
figures a set of inputs can draw). Run files are read, never written into.
"""
