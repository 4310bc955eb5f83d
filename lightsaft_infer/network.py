"""The GPoCM-conditioned U-Net with LightSAFT / LaSAFT blocks (inference only).

Module and parameter names follow the authors' code so that their state dict
(without the ``spec2spec.`` prefix) loads as is. Tensors are laid out
``(batch, channels, frames, bins)``: time is the third axis, frequency the last.

Two modules live here:

* :class:`ConditionedUNet` — the authors' network, ``forward(spec, condition)``
  for one condition per batch item; the exact reference.
* :class:`SeparationGraph` — the same weights frozen for separating all
  sources at once: the source-independent stem (``first_conv``,
  ``encoders[0].tfc`` and its first frequency layer) runs once per window,
  attention weights and GPoCM matrices are constants computed at build time,
  and convolutions carry their BatchNorm folded in. This is what the torch and
  ONNX Runtime backends run.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from .config import ModelConfig


class TFC(nn.Module):
    """Densely connected 2-D convolutions (``n_internal_layers`` layers of growth ``C``).

    ``(B, c_in, T, F) -> (B, C, T, F)``; layer ``i`` reads ``cat([out_{i-1}, in_{i-1}])``.
    """

    def __init__(self, c_in: int, cfg: ModelConfig, act=nn.ReLU):
        super().__init__()
        C, kt, kf = cfg.internal_channels, cfg.kernel_size_t, cfg.kernel_size_f
        self.H = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c_in + i * C, C, (kt, kf), padding=(kt // 2, kf // 2)), nn.BatchNorm2d(C), act())
            for i in range(cfg.n_internal_layers)
        )

    def forward(self, x):
        for layer in self.H:
            out = layer(x)
            x = torch.cat((out, x), 1)
        return out


class _LatentSourceBlock(nn.Module):
    """TFC followed by a latent-source-attentive frequency transformation (residual)."""

    def __init__(self, c_in: int, f: int, cfg: ModelConfig):
        super().__init__()
        self.f, self.L, self.b, self.dk = f, cfg.num_tdfs, cfg.bottleneck(f), cfg.dk
        self.tfc = TFC(c_in, cfg)
        self.keys = nn.Parameter(torch.zeros(cfg.dk, cfg.num_tdfs))
        self.linear_query = nn.Linear(cfg.embedding_dim, cfg.dk)

    def attention(self, e):
        """Latent-source weights ``(B, L)`` for condition embeddings ``e`` ``(B, E)``."""
        q = self.linear_query(e)
        return torch.softmax(torch.matmul(q, self.keys) / math.sqrt(self.dk), dim=-1)

    def forward(self, x, e):
        t = self.tfc(x)
        return t + self.mix(self.values(t), self.attention(e))


class LightSAFTBlock(_LatentSourceBlock):
    """TFC + LightSAFT: shared bottleneck ``f -> b·L``, attention over L, then ``b -> f``."""

    def __init__(self, c_in: int, f: int, cfg: ModelConfig):
        super().__init__(c_in, f, cfg)
        C, bias = cfg.internal_channels, cfg.tfc_tdf_bias
        self.LaSAFT_bn_layer = nn.Sequential(nn.Linear(f, self.b * self.L, bias), nn.BatchNorm2d(C), nn.ReLU())
        self.LaSIFT = nn.Sequential(nn.Linear(self.b, f, bias), nn.BatchNorm2d(C), nn.ReLU())

    def values(self, t):
        """``(B, C, T, f) -> (B, C, T, L·b)``: the latent-source features (source independent)."""
        return self.LaSAFT_bn_layer(t)

    def mix(self, v, w):
        """``v (B, C, T, L·b)``, ``w (B, L)`` -> ``(B, C, T, f)``."""
        B, C, T, _ = v.shape
        v = v.reshape(B, C, T, self.L, self.b)  # latent index is the slower axis
        mixed = torch.matmul(w.reshape(B, 1, 1, 1, self.L), v).reshape(B, C, T, self.b)
        return self.LaSIFT(mixed)


class _TDFs(nn.Module):
    def __init__(self, f: int, b: int, L: int, C: int, bias: bool):
        super().__init__()
        self.tdf = nn.Sequential(
            nn.Linear(f, b, bias), nn.BatchNorm2d(C), nn.ReLU(), nn.Linear(b, f * L, bias), nn.BatchNorm2d(C), nn.ReLU()
        )


class LaSAFTBlock(_LatentSourceBlock):
    """TFC + LaSAFT: ``L`` full TDFs (``f -> b -> f·L``) mixed by attention."""

    def __init__(self, c_in: int, f: int, cfg: ModelConfig):
        super().__init__(c_in, f, cfg)
        self.tdfs = _TDFs(f, self.b, self.L, cfg.internal_channels, cfg.tfc_tdf_bias)

    def values(self, t):
        """``(B, C, T, f) -> (B, C, T, f·L)`` (latent index is the fast axis)."""
        return self.tdfs.tdf(t)

    def mix(self, v, w):
        B, C, T, _ = v.shape
        v = v.reshape(B, C, T, self.f, self.L)
        return torch.matmul(v, w.reshape(B, 1, 1, self.L, 1)).reshape(B, C, T, self.f)


class _DenseControlBlock(nn.Module):
    """``control_n_layer`` widths ``E, 2E, 4E, …``: a Linear + ReLU into each, then Dropout and BatchNorm
    after all but the first (the MDX networks have 4 layers, E -> 8E; the medium LightSAFT 6, E -> 32E)."""

    def __init__(self, E: int, n_layer: int = 4):
        super().__init__()
        layers = []
        for i in range(n_layer - 1):
            layers += [nn.Linear(E << i, E << (i + 1)), nn.ReLU()]
            if i:
                layers += [nn.Dropout(), nn.BatchNorm1d(E << (i + 1))]
        self.linear = nn.Sequential(*layers)
        self.width = E << (n_layer - 1)


class ConditionGenerator(nn.Module):
    """Embedding ``(B, E)`` -> GPoCM ``Γ (B, m, C, C)`` and ``β (B, m, C)`` for the m decoder blocks."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        E, C, m = cfg.embedding_dim, cfg.internal_channels, cfg.n_levels
        self.C, self.m = C, m
        self.dense_control_block = _DenseControlBlock(E, cfg.control_n_layer)
        width = self.dense_control_block.width
        self.linear_gamma = nn.Sequential(nn.Linear(width, m * C * C), nn.Identity(), nn.BatchNorm1d(m * C * C, affine=False))
        self.linear_beta = nn.Sequential(nn.Linear(width, m * C), nn.Identity(), nn.BatchNorm1d(m * C, affine=False))

    def forward(self, e):
        h = self.dense_control_block.linear(e)
        gamma = self.linear_gamma(h).reshape(-1, self.m, self.C, self.C)
        beta = self.linear_beta(h).reshape(-1, self.m, self.C)
        return gamma, beta


def gpocm(x, gamma, beta):
    """Gated point-wise convolutional modulation.

    ``x (B, C, T, F)``, ``gamma (B, C, C)``, ``beta (B, C)``:
    ``x * sigmoid(Σ_j x[j]·Γ[j, c] + β[c])``.
    """
    p = torch.matmul(x.transpose(1, 3), gamma.unsqueeze(1)) + beta[:, None, None, :]  # (B, F, T, C)
    return torch.sigmoid(p.transpose(1, 3)) * x


class ConditionedUNet(nn.Module):
    """The authors' network: ``forward(spec (B, 4, T, n_fft/2+1), condition (B,) long) -> (B, 4, T, n_fft/2+1)``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        C, n = cfg.internal_channels, cfg.n_levels
        Block = LightSAFTBlock if cfg.block == "lightsaft" else LaSAFTBlock
        self.first_conv = nn.Sequential(nn.Conv2d(4, C, (1, 2)), nn.BatchNorm2d(C), nn.ReLU())
        self.encoders = nn.ModuleList(Block(C, cfg.level_bins(i), cfg) for i in range(n))
        self.downsamplings = nn.ModuleList(
            nn.Sequential(nn.Conv2d(C, C, 2, stride=2), nn.BatchNorm2d(C)) for _ in range(n)
        )
        self.mid_block = Block(C, cfg.level_bins(n), cfg)
        self.upsamplings = nn.ModuleList(
            nn.Sequential(nn.ConvTranspose2d(C, C, 2, stride=2), nn.BatchNorm2d(C)) for _ in range(n)
        )
        self.decoders = nn.ModuleList(Block(2 * C, cfg.level_bins(n - 1 - i), cfg) for i in range(n))
        self.last_conv = nn.Sequential(nn.Conv2d(C, 4, (1, 2), padding=(0, 1)))
        self.embedding = nn.Embedding(len(cfg.sources), cfg.embedding_dim)
        self.condition_generator = ConditionGenerator(cfg)
        self.eval()

    def forward(self, spec, condition):
        e = self.embedding(condition)
        gammas, betas = self.condition_generator(e)
        x = self.first_conv(spec)
        skips = []
        for encoder, down in zip(self.encoders, self.downsamplings):
            x = encoder(x, e)
            skips.append(x)
            x = down(x)
        x = self.mid_block(x, e)
        for i, (up, decoder) in enumerate(zip(self.upsamplings, self.decoders)):
            x = torch.cat((up(x), skips[-1 - i]), 1)
            t = gpocm(decoder.tfc(x), gammas[:, i], betas[:, i])
            x = t + decoder.mix(decoder.values(t), decoder.attention(e))
        return self.last_conv(x)

    @classmethod
    def from_tensors(cls, cfg: ModelConfig, tensors: dict, path=None) -> "ConditionedUNet":
        """Build and load; a missing, extra or mis-shaped tensor raises :class:`WeightFileError`."""
        return load_network(cls, cfg, tensors, path)


def load_network(cls, cfg, tensors: dict, path=None) -> nn.Module:
    """``cls(cfg)`` with ``tensors`` loaded (names as in its state dict), in eval mode; a missing, extra or
    mis-shaped tensor raises :class:`WeightFileError` naming ``path``."""
    from .errors import WeightFileError

    # Shapes first, on the meta device (no memory): a configuration that does not fit the tensors
    # is refused before a network of its size is allocated.
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in cls(cfg).state_dict().items() if not k.endswith("num_batches_tracked")}
    missing, extra = sorted(set(shapes) - set(tensors)), sorted(set(tensors) - set(shapes))
    if missing or extra:
        raise WeightFileError(path, f"tensors do not match the configuration: missing {missing[:3]}, unexpected {extra[:3]}")
    for k, shape in shapes.items():
        if tuple(tensors[k].shape) != shape:
            raise WeightFileError(path, f"tensor {k} has shape {tuple(tensors[k].shape)}, expected {shape}")
    net = cls(cfg)
    own = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    net.load_state_dict({k: torch.as_tensor(tensors[k], dtype=torch.float32) for k in own}, strict=False)
    return net.eval()


# ---------------------------------------------------------------------------
# The frozen graph for separation


def _fold_bn(conv: nn.Module, bn: nn.BatchNorm2d) -> nn.Module:
    """A copy of ``conv`` (Conv2d or ConvTranspose2d) with the eval-mode ``bn`` folded in."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale
    folded = copy.deepcopy(conv)
    with torch.no_grad():
        out_axis = 1 if isinstance(conv, nn.ConvTranspose2d) else 0
        shape = [1] * 4
        shape[out_axis] = -1
        folded.weight.mul_(scale.reshape(shape))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
        folded.bias = nn.Parameter(bias * scale + shift)
    return folded


def _fold_sequential(seq: nn.Sequential) -> nn.Sequential:
    """``[conv, BN, (ReLU)]`` -> ``[conv', (ReLU)]``."""
    return nn.Sequential(_fold_bn(seq[0], seq[1]), *list(seq)[2:])


class _FrozenTFC(nn.Module):
    """TFC with BatchNorm folded, without re-copying the dense connections.

    The authors' ``cat`` re-copies the whole growing input at every layer.
    Eager (torch): layer ``i`` writes its ``C`` channels in front of its input
    inside a buffer laid out ``[out_{n-2}, …, out_0, x]``, so each layer reads
    a contiguous channel slice (batch 1) and nothing is copied twice.

    Traced for ONNX: a convolution over a concatenation is the sum of
    convolutions over its parts, so layer ``i`` is
    ``relu(conv(x, W_i,x) + Σ_j conv(out_j, W_i,j))`` with the weight split
    per part at build time. Same FLOPs, no Concat: ONNX Runtime keeps the whole
    block in its blocked (NCHWc) layout and fuses the sums into the
    convolutions; 1.60 → 1.45 s per window of four sources on 2 cores
    (measured 2026-11-21), differences to the ``cat`` form ~1e-6 relative.
    The decoders' input ``cat(upsampled, skip)`` is split the same way
    (``in_parts``): median 1.58 → 1.51 s per window with the frame axis fixed
    (interleaved A/B, same session options).
    """

    def __init__(self, tfc: TFC, in_parts=None):
        super().__init__()
        self.H = nn.ModuleList(_fold_sequential(layer) for layer in tfc.H)
        self.C = C = tfc.H[0][0].out_channels
        c_in = tfc.H[0][0].in_channels
        # channel widths of the block input as the graph hands it over: (upsampled, skip) in the decoders
        self.in_parts = tuple(in_parts) if in_parts else (c_in,)
        assert sum(self.in_parts) == c_in, (self.in_parts, c_in)
        edges = [sum(self.in_parts[:k]) for k in range(len(self.in_parts) + 1)]
        # parts[i][j < i]: layer i's weight on out_j (channels (i-1-j)·C.. of its input);
        # parts[i][i + k]: on input part k
        self.parts = nn.ModuleList()
        for i, layer in enumerate(self.H):
            w = layer[0].weight.detach()
            split = [w[:, (i - 1 - j) * C : (i - j) * C] for j in range(i)]
            split += [w[:, i * C + a : i * C + b] for a, b in zip(edges, edges[1:])]
            self.parts.append(nn.ParameterList(nn.Parameter(p.contiguous(), requires_grad=False) for p in split))

    def split_forward(self, *xs):
        """``xs`` = the input ``(B, c_in, T, F)`` or its ``in_parts`` along channels -> ``(B, C, T, F)``, as sums of
        per-part convolutions (the ONNX form: no Concat, not even of the decoder's skip)."""
        if len(xs) != len(self.in_parts):
            xs = torch.split(torch.cat(xs, 1), self.in_parts, 1)
        outs = []
        for i, layer in enumerate(self.H):
            conv = layer[0]
            acc = None
            for k, x in enumerate(xs):
                y = nn.functional.conv2d(x, self.parts[i][i + k], conv.bias if k == 0 else None, padding=conv.padding)
                acc = y if acc is None else y + acc
            for j in range(i):
                acc = nn.functional.conv2d(outs[j], self.parts[i][j], None, padding=conv.padding) + acc
            outs.append(layer[-1](acc))  # the layer's activation (ReLU, or leaky ReLU in v2 networks)
        return outs[-1]

    #: Always take the per-part form (what ONNX gets), e.g. to train through it: the eager form writes
    #: into a buffer in place, which autograd cannot differentiate.
    split = False

    def forward(self, *xs):
        """``xs`` as in :meth:`split_forward`."""
        if self.split or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return self.split_forward(*xs)
        n, C = len(self.H), self.C
        start = (n - 1) * C
        width = sum(x.shape[1] for x in xs)
        buf = xs[0].new_empty(xs[0].shape[0], start + width, *xs[0].shape[2:])
        at = start
        for x in xs:  # the decoder's cat(upsampled, skip) is written straight into the buffer
            buf[:, at : at + x.shape[1]] = x
            at += x.shape[1]
        for i, layer in enumerate(self.H):
            out = layer(buf[:, start:])
            if i < n - 1:
                start -= C
                buf[:, start : start + C] = out
        return out


class SeparationGraph(nn.Module):
    """All sources of one network in one frozen graph.

    ``forward(spec (B, 4, T, n_fft/2+1)) -> (B, S, 4, T, n_fft/2+1)`` where ``S``
    is the number of ``sources`` (condition indices, default all four).
    Equal to running :class:`ConditionedUNet` once per source up to float
    rounding (BatchNorm folding and the re-associated mix change the last bits).

    Per window, the source-independent stem runs once; then each source's
    branch runs with batch 1, which keeps the working set small (faster on
    CPU than one batch of all sources). Per-source constants — attention
    weights, the LightSAFT mixing matrices ``kron(w, I_b)``, GPoCM ``Γ``/``β``
    — are computed here, once.
    """

    def __init__(self, net: ConditionedUNet, sources=None, fold_batchnorm: bool = True):
        super().__init__()
        cfg = net.cfg
        self.cfg, self.n_levels = cfg, cfg.n_levels
        sources = list(range(len(cfg.sources))) if sources is None else list(sources)
        self.S = len(sources)
        fold = _fold_sequential if fold_batchnorm else (lambda s: s)
        self.fold = fold_batchnorm
        self.first_conv = fold(net.first_conv)
        self.downsamplings = nn.ModuleList(fold(d) for d in net.downsamplings)
        self.upsamplings = nn.ModuleList(fold(u) for u in net.upsamplings)
        self.last_conv = net.last_conv
        blocks = list(net.encoders) + [net.mid_block] + list(net.decoders)
        C = cfg.internal_channels
        self.tfcs = nn.ModuleList(
            _FrozenTFC(b.tfc, (C, C) if k > self.n_levels else None) if fold_batchnorm else b.tfc for k, b in enumerate(blocks)
        )
        self.values = nn.ModuleList(b.LaSAFT_bn_layer if cfg.block == "lightsaft" else b.tdfs.tdf for b in blocks)
        self.lasift = nn.ModuleList(b.LaSIFT for b in blocks) if cfg.block == "lightsaft" else None
        with torch.no_grad():
            e = net.embedding(torch.tensor(sources))
            gammas, betas = net.condition_generator(e)  # (S, m, C, C), (S, m, C)
            # GPoCM as a 1x1 convolution: weight[c, j] = Γ[j, c] (no transposes of the feature map)
            self.gpocm_weight = nn.Parameter(gammas.transpose(-1, -2).reshape(self.S, -1, C, C, 1, 1).contiguous(), requires_grad=False)
            self.gpocm_bias = nn.Parameter(betas.contiguous(), requires_grad=False)
            # mix[block][s]: (L·b, b) for LightSAFT (values @ mix), (L, 1) for LaSAFT
            self.mix = nn.ParameterList()
            for b in blocks:
                w = b.attention(e)  # (S, L)
                if cfg.block == "lightsaft":
                    eye = torch.eye(b.b)
                    m = torch.stack([torch.kron(ws[:, None], eye) for ws in w])  # (S, L·b, b)
                else:
                    m = w[:, :, None]  # (S, L, 1)
                self.mix.append(nn.Parameter(m, requires_grad=False))
        self.L = cfg.num_tdfs
        self.eval()

    def _frequency(self, i: int, s: int, t, v=None):
        """Block ``i``'s latent-source frequency transformation of ``t (1, C, T, f)`` for source ``s``."""
        if v is None:
            v = self.values[i](t)
        if self.lasift is not None:  # LightSAFT: (1, C, T, L·b) @ (L·b, b) -> LaSIFT
            return self.lasift[i](torch.matmul(v, self.mix[i][s]))
        _, C, T, fl = v.shape  # LaSAFT: (1, C, T, f, L) @ (L, 1)
        return torch.matmul(v.reshape(1, C, T, fl // self.L, self.L), self.mix[i][s]).reshape(1, C, T, -1)

    def _branch(self, s: int, t0, v0):
        """Source ``s`` from the shared stem (``t0``, ``v0`` of encoder 0) to the output ``(1, 4, T, F)``."""
        n = self.n_levels
        x = t0 + self._frequency(0, s, t0, v0)
        skips = [x]
        x = self.downsamplings[0](x)
        for i in range(1, n + 1):  # encoders 1.. and the mid block
            t = self.tfcs[i](x)
            x = t + self._frequency(i, s, t)
            if i < n:
                skips.append(x)
                x = self.downsamplings[i](x)
        for j in range(n):
            i = n + 1 + j
            up = self.upsamplings[j](x)
            # the frozen TFC takes (upsampled, skip) apart: no Concat in the exported graph
            t = self.tfcs[i](up, skips[-1 - j]) if self.fold else self.tfcs[i](torch.cat((up, skips[-1 - j]), 1))
            t = torch.sigmoid(nn.functional.conv2d(t, self.gpocm_weight[s, j], self.gpocm_bias[s, j])) * t  # GPoCM
            x = t + self._frequency(i, s, t)
        return self.last_conv(x)

    def forward(self, spec):
        outs = []
        for b in range(spec.shape[0]):  # one window at a time: small working set
            t0 = self.tfcs[0](self.first_conv(spec[b : b + 1]))  # source-independent stem
            v0 = self.values[0](t0)
            outs.append(torch.stack([self._branch(s, t0, v0) for s in range(self.S)], 1))
        return torch.cat(outs, 0)
