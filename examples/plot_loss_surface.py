"""
A 2-D surface of the loss around a model
========================================

Li et al. (2018) draw the loss on a plane through the trained weights spanned by two random,
filter-normalized directions. `landscape.loss_surface` evaluates it on a grid for any
`nn.Module`; here a small network of your own, trained with flooding in a plain loop.
"""

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

import landscape

# %%
# Three interleaved classes in 2-D and a small network trained with flooding (b = 0.05).
g = torch.Generator().manual_seed(0)
angle = torch.rand(600, generator=g) * 6.28
y = torch.randint(0, 3, (600,), generator=g)
x = torch.stack([torch.cos(angle + 2.09 * y), torch.sin(angle + 2.09 * y)], 1) * (1 + angle[:, None])
x = x + 0.3 * torch.randn(600, 2, generator=g)
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 3))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
for step in range(400):
    optimizer.zero_grad()
    landscape.flood(F.cross_entropy(model(x), y), b=0.05).backward()
    optimizer.step()

# %%
# A 21 x 21 grid over [-1, 1]^2 in units of each filter's norm.
surface = landscape.loss_surface(model, (x, y), points=21, seed=0)
fig, ax = plt.subplots(figsize=(4.5, 4))
levels = ax.contourf(surface.x, surface.y, surface["train_loss"], levels=20, cmap="viridis")
ax.plot(0, 0, "w*", markersize=10)
fig.colorbar(levels, label="training loss")
ax.set(xlabel="direction 1", ylabel="direction 2", title="loss around the trained weights")
fig.tight_layout()
fig.savefig("loss_surface.png", dpi=120)
plt.show()
