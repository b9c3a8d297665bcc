"""
A sweep over flood levels, trained as one stacked ensemble
==========================================================

`landscape.train` trains a list of configs; runs that differ only in flood level and seed are
stacked and stepped as one model (`torch.func`), each member with its own flood level,
initialization and data draw, and each written to its own HDF5 run file. `landscape.Run` reads
the recorded metrics back: here the learning curves of Fig. 2 for four flood levels.
"""

import tempfile

import matplotlib.pyplot as plt

import landscape

# %%
base = landscape.RunConfig(
    landscape.DataConfig("two_gaussians", noise=0.1, n_train=500, n_val=100, n_test=1000),
    landscape.ModelConfig("mlp", depth=2, width=32), optim=landscape.OptimConfig(epochs=150),
    eval_test="every")
result = landscape.train(landscape.expand(base, floods=[0.0, 0.1, 0.2, 0.3], seeds=[0]),
                         out=tempfile.mkdtemp(), execution=landscape.Execution(progress=False))
print(result.statuses)

# %%
fig, axes = plt.subplots(1, 2, figsize=(8, 3), sharex=True)
for path in result.paths:
    run = landscape.Run(path)
    metrics, b = run.metrics(), run.config.objective.flood
    for ax, name in zip(axes, ("train_loss", "test_loss")):
        ax.plot(metrics[name], label=f"b = {b:g}", color=plt.cm.viridis(b / 0.4) if b else "k",
                ls="-" if b else ":")
        ax.set(xlabel="epoch", ylabel=name.replace("_", " "))
axes[1].legend()
fig.tight_layout()
fig.savefig("sweep_learning_curves.png", dpi=120)
plt.show()
