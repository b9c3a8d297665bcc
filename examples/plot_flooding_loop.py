"""
Flooding in a plain PyTorch loop
================================

Flooding (Ishida et al., ICML 2020) is one line in any training loop: the mini-batch loss J
becomes |J - b| + b. Above the flood level b that is gradient descent as usual; below it, gradient
ascent, so the training loss floats around b instead of going to zero. On data with 10% flipped
labels the plain model memorizes them (training loss to zero, test loss rising), while the
flooded one keeps its training loss near b and its test loss low.
"""

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

import landscape

# %%
# Two Gaussians in 10 dimensions, 10% of the labels flipped (train and test alike).
g = torch.Generator().manual_seed(0)


def noisy_gaussians(n):
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, 10, generator=g) + (2.0 * y[:, None] - 1) * 0.8
    flip = torch.rand(n, generator=g) < 0.1
    return x, torch.where(flip, 1 - y, y)


(x, y), (x_test, y_test) = noisy_gaussians(400), noisy_gaussians(2000)

# %%
# The same model and optimizer, with b = 0 (plain) and b = 0.3; `landscape.flood` is the only
# change. The loss is evaluated over the whole training and test sets after each epoch.
curves = {}
for b in (0.0, 0.3):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                          nn.Linear(64, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    train_loss, test_loss = [], []
    for epoch in range(120):
        for i in range(0, len(x), 50):
            optimizer.zero_grad()
            landscape.flood(F.cross_entropy(model(x[i:i + 50]), y[i:i + 50]), b).backward()
            optimizer.step()
        with torch.no_grad():
            train_loss.append(F.cross_entropy(model(x), y).item())
            test_loss.append(F.cross_entropy(model(x_test), y_test).item())
    curves[b] = train_loss, test_loss

# %%
fig, axes = plt.subplots(1, 2, figsize=(8, 3), sharex=True)
for b, (train_loss, test_loss) in curves.items():
    style = dict(color="#D55E00") if b == 0 else dict(color="#0072B2")
    axes[0].plot(train_loss, label=f"b = {b:g}", **style)
    axes[1].plot(test_loss, label=f"b = {b:g}", **style)
axes[0].axhline(0.3, color="#0072B2", ls="--", lw=0.8)
axes[0].set(xlabel="epoch", ylabel="training loss")
axes[1].set(xlabel="epoch", ylabel="test loss")
axes[0].legend()
fig.tight_layout()
fig.savefig("flooding_loop.png", dpi=120)
plt.show()
print(f"last training loss: plain {curves[0.0][0][-1]:.3f}, flooded {curves[0.3][0][-1]:.3f}")
