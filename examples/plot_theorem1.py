"""
Theorem 1: flooding lowers the error of the risk estimate
=========================================================

Paper Sec. 5.4: for a fixed model g with true risk R, the flooded estimate |R^ - b| + b of the
empirical risk R^ has no larger mean squared error than R^ when b <= R (strictly smaller when
some R^ < b). `landscape.risk_mse` checks it on any model: R is the mean loss over a large pool of
data independent of g's training set, and M samples of size n are drawn from the pool.
"""

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

import landscape

# %%
# A model trained on 200 points; a pool of 20,000 fresh points from the same distribution.
g = torch.Generator().manual_seed(0)


def draw(n):
    y = torch.randint(0, 2, (n,), generator=g)
    return torch.randn(n, 5, generator=g) + (2.0 * y[:, None] - 1) * 0.7, y


(x, y), pool = draw(200), draw(20_000)
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(5, 32), nn.ReLU(), nn.Linear(32, 2))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
for step in range(300):
    optimizer.zero_grad()
    F.cross_entropy(model(x), y).backward()
    optimizer.step()

# %%
check = landscape.risk_mse(model, pool, sample_size=50, samples=2000, train=(x, y))
print(f"R = {check.risk:.4f}; the theorem's claims hold: {check.holds}")
fig, ax = plt.subplots(figsize=(4.5, 3))
panel = check.panels["pool"]
ax.plot(check.flood, panel.mse_flooded, label="flooded |R^ - b| + b")
ax.axhline(panel.mse_plain, color="k", ls=":", label="empirical risk R^")
ax.axvline(check.risk, color="grey", lw=0.8)
ax.set(xlabel="flood level b", ylabel="MSE against R", title="fresh samples, n = 50")
ax.legend()
fig.tight_layout()
fig.savefig("theorem1.png", dpi=120)
plt.show()
