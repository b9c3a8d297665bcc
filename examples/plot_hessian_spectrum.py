"""
The Hessian's top eigenvalues and spectral density
==================================================

Sharpness beyond 1-D slices: the largest eigenvalues of the Hessian of the training loss
(Lanczos, `landscape.hessian_eigenvalues`), its trace (Hutchinson, `landscape.hessian_trace`)
and its spectral density (stochastic Lanczos quadrature, Ghorbani et al. 2019,
`landscape.hessian_density`), for a plain and a flooded run of our trainer.
"""

import tempfile

import matplotlib.pyplot as plt

import landscape

# %%
base = landscape.RunConfig(
    landscape.DataConfig("two_gaussians", noise=0.1, n_train=500, n_val=100, n_test=500),
    landscape.ModelConfig("mlp", depth=2, width=32), optim=landscape.OptimConfig(epochs=150))
result = landscape.train(landscape.expand(base, floods=[0.0, 0.3], seeds=[0]),
                         out=tempfile.mkdtemp(), execution=landscape.Execution(progress=False))

# %%
fig, axes = plt.subplots(1, 2, figsize=(8, 3))
for path, colour in zip(result.paths, ("#D55E00", "#0072B2")):
    run = landscape.Run(path)
    model, train = run.model(), run.dataset().train
    loss = run.config.objective.loss
    top = landscape.hessian_eigenvalues(model, train, k=5, loss=loss)
    trace = landscape.hessian_trace(model, train, probes=20, loss=loss)
    density = landscape.hessian_density(model, train, iterations=40, loss=loss)
    grid, values = density.curve()
    label = f"b = {run.config.objective.flood:g}"
    axes[0].semilogy(grid, values + 1e-6, color=colour, label=label)
    axes[1].plot(range(1, 6), top, "o-", color=colour, label=f"{label}, trace {trace.value:.3g}")
    print(label, "top eigenvalues", [round(float(v), 4) for v in top], "trace", trace)
axes[0].set(xlabel="eigenvalue", ylabel="density")
axes[1].set(xlabel="rank", ylabel="eigenvalue")
axes[1].legend()
fig.tight_layout()
fig.savefig("hessian_spectrum.png", dpi=120)
plt.show()
