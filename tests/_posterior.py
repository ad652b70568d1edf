"""A shared check for surrogate models that offer ``posterior_with_grad`` (GP and RGPE ensemble)."""

from __future__ import annotations

import torch


def assert_posterior_with_grad_matches_autograd(
    model, xq: torch.Tensor, *, mean_rtol: float, var_rtol: float, dmean_rtol: float, dvar_rtol: float
) -> None:
    """``model.posterior_with_grad(xq)`` equals ``model.posterior`` and its autograd gradients (summed over
    queries, so each row's gradient is its own)."""
    leaf = xq.clone().requires_grad_(True)
    mean, var = model.posterior(leaf)
    (ref_dmean,) = torch.autograd.grad(mean.sum(), leaf)
    (ref_dvar,) = torch.autograd.grad(model.posterior(leaf)[1].sum(), leaf)
    got_mean, got_var, dmean, dvar = model.posterior_with_grad(xq)
    torch.testing.assert_close(got_mean, mean.detach(), rtol=mean_rtol, atol=1e-10)
    torch.testing.assert_close(got_var, var.detach(), rtol=var_rtol, atol=1e-10)
    torch.testing.assert_close(dmean, ref_dmean, rtol=dmean_rtol, atol=1e-8)
    torch.testing.assert_close(dvar, ref_dvar, rtol=dvar_rtol, atol=1e-8)
