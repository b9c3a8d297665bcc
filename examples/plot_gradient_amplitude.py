"""
The gradient amplitude along a training trajectory
==================================================

Paper Sec. 5.2 (Fig. 4): the norm of the filter-normalized gradient of the full training and
test loss at every saved epoch, against the test loss. `landscape.gradient_amplitude` measures it
for any model and any state dict (`params=`), so a trajectory is a loop over saved weights; here
the saved epochs of a plain and a flooded run of our trainer (`save="every:10"`).
"""

import tempfile

import matplotlib.pyplot as plt

import landscape

# %%
base = landscape.RunConfig(
    landscape.DataConfig("two_gaussians", noise=0.1, n_train=500, n_val=100, n_test=1000),
    landscape.ModelConfig("mlp", depth=2, width=32), optim=landscape.OptimConfig(epochs=120),
    save="every:10", eval_test="every")
result = landscape.train(landscape.expand(base, floods=[0.0, 0.3], seeds=[0]),
                         out=tempfile.mkdtemp(), execution=landscape.Execution(progress=False))

# %%
# One model object per run; each saved state is measured through `params=`.
fig, axes = plt.subplots(1, 2, figsize=(8, 3))
for path, colour in zip(result.paths, ("#D55E00", "#0072B2")):
    run = landscape.Run(path)
    model, data, loss = run.model(), run.dataset(), run.config.objective.loss
    epochs = [e for e in run.saved_epochs if e > 0]
    amplitude = {split: [landscape.gradient_amplitude(model, getattr(data, split), loss=loss,
                                                      params=run.state_dict(e)) for e in epochs]
                 for split in ("train", "test")}
    test_loss = run.metrics()["test_loss"][epochs]
    for ax, split in zip(axes, ("train", "test")):
        ax.scatter(amplitude[split], test_loss, c=epochs, cmap="viridis",
                   marker="o" if run.config.objective.floods else "+",
                   label=f"b = {run.config.objective.flood:g}")
        ax.set(xscale="log", xlabel=f"gradient amplitude, {split} loss", ylabel="test loss")
    ax.plot([], [], color=colour)
axes[0].legend()
fig.tight_layout()
fig.savefig("gradient_amplitude.png", dpi=120)
plt.show()
