"""The Mamba block (Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces",
Sec. 3.4 / Fig. 3), with the parameter names, shapes and initialisation of ``mamba_ssm.Mamba``
(state-spaces/mamba, ``mamba_ssm/modules/mamba_simple.py``), so ``mamba_ssm`` checkpoints load as-is.

The scan is ``densekit.ops.selective_scan``: the fused CUDA kernel when ``mamba_ssm`` is installed and
the input is on a GPU, the pure-PyTorch chunked scan under tracing/export/torch.compile or without numba.
On the CPU with numba the block runs token-major, (B, L, channels) from in_proj to out_proj: the causal
conv + SiLU and the scan (with dt_proj, delta_bias, softplus, D and the SiLU(z) gate fused in) are compiled
kernels that read the linear layers' outputs in place, so no (B, D, L) transposed copies are made.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import causal_conv1d_silu, selective_scan, selective_scan_tokens, uses_compiled


class Mamba(nn.Module):
    """x (B, L, d_model) -> (B, L, d_model).

    in_proj (d -> 2 d_inner: x and gate z) -> causal depthwise conv1d (kernel d_conv) + SiLU ->
    x_proj (d_inner -> dt_rank + 2 d_state: dt, B, C) -> dt_proj (dt_rank -> d_inner) ->
    selective scan with A = -exp(A_log), skip D, softplus(dt + dt_proj.bias) -> * SiLU(z) -> out_proj.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if dt_init not in ("random", "constant"):
            raise ValueError(f"Mamba dt_init must be 'random' or 'constant', got {dt_init!r}")
        factory = {"device": device, "dtype": dtype}
        self.d_model, self.d_state, self.d_conv, self.expand = int(d_model), int(d_state), int(d_conv), expand
        self.d_inner = int(expand * self.d_model)
        self.dt_rank = math.ceil(self.d_model / 16) if dt_rank == "auto" else int(dt_rank)

        self.in_proj = nn.Linear(self.d_model, 2 * self.d_inner, bias=bias, **factory)
        # Causal: pad d_conv - 1 on both sides and keep the first L outputs (mamba_simple.py).
        self.conv1d = nn.Conv1d(
            self.d_inner,
            self.d_inner,
            d_conv,
            groups=self.d_inner,
            padding=d_conv - 1,
            bias=conv_bias,
            **factory,
        )
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * self.d_state, bias=False, **factory)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True, **factory)

        # dt_proj init (mamba_simple.py): weight ~ U(+-dt_rank^-0.5 * dt_scale) (or constant), and the
        # bias the inverse softplus of dt ~ log-uniform in [dt_min, dt_max], so that initial step sizes
        # span that range (paper Sec. 3.6 / App. "Initialization").
        std = self.dt_rank**-0.5 * dt_scale
        with torch.no_grad():
            if dt_init == "constant":
                self.dt_proj.weight.fill_(std)
            else:
                self.dt_proj.weight.uniform_(-std, std)
            dt = torch.exp(
                torch.rand(self.d_inner, device=device) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
            ).clamp(min=dt_init_floor)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        self.dt_proj.bias._no_reinit = True

        # S4D-real init: A = -(1, 2, ..., N) for every channel, stored as log in float32 (mamba_simple.py).
        A = torch.arange(1, self.d_state + 1, dtype=torch.float32, device=device).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))  # (d_inner, d_state)
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(self.d_inner, device=device))  # skip, float32
        self.D._no_weight_decay = True
        self.out_proj = nn.Linear(self.d_inner, self.d_model, bias=bias, **factory)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != self.d_model:
            raise ValueError(f"Mamba expects (B, L, d_model={self.d_model}), got shape {tuple(hidden_states.shape)}")
        if uses_compiled(hidden_states, self.in_proj.weight):
            return self._forward_tokens(hidden_states)
        length = hidden_states.shape[1]
        xz = self.in_proj(hidden_states).transpose(1, 2)  # (B, 2 d_inner, L)
        x, z = xz.chunk(2, dim=1)  # (B, d_inner, L) each
        x = F.silu(self.conv1d(x)[..., :length])  # (B, d_inner, L), causal
        x_dbl = self.x_proj(x.transpose(1, 2))  # (B, L, dt_rank + 2N)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight).transpose(1, 2)  # (B, d_inner, L); the bias goes into the scan
        B = B.transpose(1, 2).contiguous()  # (B, N, L)
        C = C.transpose(1, 2).contiguous()  # (B, N, L)
        A = -torch.exp(self.A_log.float())  # (d_inner, N)
        y = selective_scan(
            x, dt, A, B, C, self.D.float(), z=z, delta_bias=self.dt_proj.bias.float(), delta_softplus=True
        )  # (B, d_inner, L)
        return self.out_proj(y.transpose(1, 2))  # (B, L, d_model)

    def _forward_tokens(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The same block token-major (the CPU kernels' layout): every tensor stays (B, L, channels)."""
        # in_proj as two linears on the halves of its weight (the same parameters): x and z come out
        # contiguous; the conv on the strided half of one (B, L, 2 d_inner) output measured 2-3x slower
        w, b = self.in_proj.weight, self.in_proj.bias
        bx, bz = (None, None) if b is None else (b[: self.d_inner], b[self.d_inner :])
        x = F.linear(hidden_states, w[: self.d_inner], bx)  # (B, L, d_inner)
        z = F.linear(hidden_states, w[self.d_inner :], bz)  # (B, L, d_inner)
        x = causal_conv1d_silu(x, self.conv1d.weight, self.conv1d.bias)  # (B, L, d_inner), causal
        x_dbl = self.x_proj(x)  # (B, L, dt_rank + 2N)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)  # views
        A = -torch.exp(self.A_log.float())  # (d_inner, N)
        # dt_proj (weight and bias) is applied inside the scan: the (B, L, d_inner) dt is never formed
        y = selective_scan_tokens(
            x,
            dt,
            A,
            B,
            C,
            self.D.float(),
            z=z,
            delta_bias=self.dt_proj.bias.float(),
            delta_softplus=True,
            delta_proj=self.dt_proj.weight,
        )  # (B, L, d_inner)
        return self.out_proj(y)  # (B, L, d_model)
