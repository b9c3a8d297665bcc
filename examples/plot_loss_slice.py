"""
A slice of the loss landscape through a plain and a flooded model
=================================================================

Paper Fig. 5: the training and test loss at theta + alpha d along a random direction d,
filter-normalized to each model (Li et al. 2018), for a model trained without flooding and one
trained with b = 0.3. Here both are trained by `landscape.train` (a stacked sweep of two runs) and
measured with `landscape.loss_slice`, which takes any `nn.Module`: `Run.model()` gives a run's.
"""

import tempfile

import matplotlib.pyplot as plt

import landscape

# %%
# Two Gaussians with 10% label noise, a 2 x 64 MLP, 150 epochs: small enough for seconds on a CPU.
base = landscape.RunConfig(
    landscape.DataConfig("two_gaussians", noise=0.1, n_train=500, n_val=100, n_test=2000),
    landscape.ModelConfig("mlp", depth=2, width=64), optim=landscape.OptimConfig(epochs=150))
result = landscape.train(landscape.expand(base, floods=[0.0, 0.3], seeds=[0]),
                         out=tempfile.mkdtemp(), execution=landscape.Execution(progress=False))

# %%
# The same direction seed for both models; alpha = 0 is each trained model itself.
fig, axes = plt.subplots(1, 2, figsize=(8, 3))
for path, colour in zip(result.paths, ("#D55E00", "#0072B2")):
    run = landscape.Run(path)
    data = run.dataset()
    line = landscape.loss_slice(run.model(), {"train": data.train, "test": data.test},
                                loss=run.config.objective.loss, points=31, seed=0)
    for ax, split in zip(axes, ("train", "test")):
        ax.plot(line.x, line[f"{split}_loss"], color=colour,
                label=f"b = {run.config.objective.flood:g}")
        ax.set(xlabel="alpha", ylabel=f"{split} loss")
axes[0].legend()
fig.tight_layout()
fig.savefig("loss_slice.png", dpi=120)
plt.show()
