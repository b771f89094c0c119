"""What the torch families share: a module's parameters as the float32 numpy arrays an artifact ships."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def module_tensors(module: nn.Module) -> dict[str, np.ndarray]:
    """``state_dict`` as contiguous float32 CPU arrays (deterministic names and order)."""
    return {
        k: v.detach().to(torch.float32).contiguous().cpu().numpy() for k, v in module.state_dict().items()
    }


def load_module_tensors(module: nn.Module, tensors: dict[str, np.ndarray]) -> nn.Module:
    """Load verified arrays into a module built from a trusted spec (strict: names must match)."""
    module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in tensors.items()}, strict=True)
    module.eval()
    return module
