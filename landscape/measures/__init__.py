"""Every measurement on any model: pure functions over (model or parameters, data, loss) that
write nothing. Nothing here imports the layers above (training, runs, analysis, figures, cli).

sources (data as tensors, splits or DataLoaders), evaluation (whole-data loss, accuracy, gradients),
stack (K parameter sets as one vmapped model), model (how a user's module and state are taken),
options (the settings that determine a result), filternorm (Li et al.'s normalization), slices (Sec.
5.3), gradients (Sec. 5.2), objective (a loss over any data, dict batches too), operators and fisher
(the Hessian, GGN and empirical Fisher as linear operators), spectrum, trace, split (the trace as
the GGN's plus the rest's) and density (their estimators), hessian (the Hessian measures at the
root), trajectory (PCA of a path), theorem1 (Sec. 5.4), connectivity (the linear path and fitted
curves between two models); the generalization measures: batches (their shared set-up), worstcase
(worst-case and m-sharpness), pacbayes (PAC-Bayes flatness), norms (weight and path norms, distance
from init), outputs (margin, Fisher-Rao norm, gradient noise) and generalization (all of them as one
dict). `import landscape` gives the public functions; this package imports nothing until a module of
it is asked for.
"""
