"""landscape: flooding (Ishida et al., ICML 2020) and the loss landscape.

Train with and without flooding into HDF5 run files, then analyse them (Section 5 of the paper).
The measurements work on any PyTorch model too (README: Your own model):

    import landscape
    loss = landscape.flood(criterion(model(x), y), b=0.02)     # in a training loop
    line = landscape.loss_slice(model, loader)                  # a filter-normalized slice
    top = landscape.hessian_top_eigenvalue(model, (x, y))
"""

__version__ = "0.1.0"

# name -> module: imported on first use, so that `import landscape` (and the command's --help)
# stays free of torch until a measurement is asked for
_PUBLIC = {
    "flood": "flooding", "iflood": "flooding",
    **{name: "measures" for name in (
        "Estimate", "Slice", "loss_slice", "loss_surface", "gradient_amplitude",
        "hessian_top_eigenvalue", "hessian_eigenvalues", "hessian_density", "hessian_trace",
        "average_sharpness", "risk_mse", "trajectory_directions")},
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'landscape' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)


def __dir__():
    return sorted(list(globals()) + __all__)
