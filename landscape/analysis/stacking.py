"""How many models of one architecture an analysis evaluates at once, stacked as an Ensemble.

Stacking (vmap over K parameter sets) pays where one model's matmuls leave the device idle: on
GPUs, and for narrow MLPs on a CPU; a wide MLP already fills the CPU's cores, so there a plain
loop is faster (DESIGN.md section 4: 0.65x for a width-500 slice under vmap). The training rule
(ensemble.auto_chunk_size) decides that; analyses add a memory bound, because they stack whole
copies of the parameters (and, for gradients, as many gradients) rather than a sweep's members.
"""

from __future__ import annotations

import torch

from ..config import ModelConfig
from ..ensemble import auto_chunk_size

STACKED_NUMBERS = 1 << 27  # parameters held stacked at once (512 MB in float32)


def models_at_once(model: ModelConfig, n_params: int, device: torch.device) -> int:
    """Parameter sets to stack per evaluation: the device's rule, within the memory bound."""
    return max(1, min(auto_chunk_size(model, device), STACKED_NUMBERS // max(n_params, 1)))
