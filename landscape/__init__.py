"""landscape: flooding (Ishida et al., ICML 2020) and the loss landscape.

Train with and without flooding into HDF5 run files, analyse them (Section 5 of the paper), and
measure any PyTorch model the same way:

    import landscape
    loss = landscape.flood(criterion(model(x), y), b=0.02)     # in a training loop
    line = landscape.loss_slice(model, loader)                  # a filter-normalized slice
    top = landscape.hessian_top_eigenvalue(model, (x, y))
    result = landscape.train(landscape.expand(landscape.RunConfig(landscape.DataConfig(
        "two_gaussians", noise=0.1)), floods=[0, 0.3], seeds=[0]))

Everything common is importable from here (`__all__`); the subpackages are the layers beneath,
each importing only those below it: measures (any model, pure), training, runs (the run file),
analysis (result files), figures (no torch), cli.
"""

__version__ = "0.1.0"

# name -> module: imported on first use, so that `import landscape` (and the command's --help)
# stays free of torch until something that needs it is asked for
_PUBLIC = {
    "flood": "flooding", "iflood": "flooding",
    "loss_slice": "measures.slices", "loss_surface": "measures.slices", "Slice": "measures.slices",
    "gradient_amplitude": "measures.gradients",
    **{name: "measures.worstcase" for name in ("worst_case_sharpness", "Sharpness")},
    **{name: "measures.pacbayes" for name in ("pac_bayes_sigma", "PacBayes")},
    **{name: "measures.norms" for name in (
        "frobenius_product", "frobenius_sum", "spectral_product", "path_norm",
        "distance_from_init", "frobenius_distance")},
    **{name: "measures.outputs" for name in ("output_margin", "fisher_rao_norm",
                                             "gradient_noise")},
    **{name: "measures.generalization" for name in ("generalization_measures",
                                                    "slice_flatness")},
    **{name: "measures.hessian" for name in (
        "hessian_top_eigenvalue", "hessian_eigenvalues", "hessian_density", "hessian_trace",
        "average_sharpness")},
    **{name: "measures.operators" for name in ("Operator", "HessianOperator")},
    **{name: "measures.layercurvature" for name in ("layer_curvature", "LayerCurvature")},
    **{name: "measures.fisher" for name in ("GGNOperator", "FisherOperator")},
    **{name: "measures.spectrum" for name in ("top_eigenvalue", "eigenpairs", "spectrum_ends",
                                              "spectral_density")},
    **{name: "measures.trace" for name in ("Estimate", "hutchinson_trace", "hutchpp_trace",
                                           "diagonal", "Diagonal")},
    **{name: "measures.split" for name in ("split_trace", "split_diagonal", "ggn_trace",
                                           "ggn_diagonal", "piecewise_linear")},
    "Density": "measures.density",
    "Tracker": "measures.tracking",
    "risk_mse": "measures.theorem1",
    "trajectory_directions": "measures.trajectory", "Trajectory": "measures.trajectory",
    **{name: "measures.connectivity" for name in ("interpolate", "fit_curve", "Curve", "LossPath")},
    "train": "training.planner", "TrainResult": "training.planner", "expand": "training.grid",
    **{name: "runs.store" for name in ("Run", "open_runs", "find_runs")},
    **{name: "config" for name in (
        "RunConfig", "DataConfig", "ModelConfig", "ObjectiveConfig", "OptimConfig",
        "TrackConfig")},
    "Execution": "config.execution",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'landscape' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)


def __dir__():
    return sorted(list(globals()) + __all__)
