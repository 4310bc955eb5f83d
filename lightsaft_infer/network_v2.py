"""The LaSAFT-Net-v2 family (LightSAFT-Net+, LaSAFT-Net-v2 light / large), inference only.

Sibling of :mod:`.network` (same layout, same conventions: ``(batch, channels,
frames, bins)``, module and parameter names as in the authors' state dict
without ``spec2spec.``). The maths is in ``docs/networks.md``; in short:

* encoder and mid blocks are unconditioned TFC-TDF blocks ``t + TDF(t)``;
* each decoder block has its own weight-normalised GPoCM generator, gates its
  TFC output with it, and adds a LightSAFT v2 (``(b, L)`` latent layout,
  LaSIFT = BN → Linear → act);
* the latent-source attention is one weight vector per source (listen modes
  off, LightSAFT-Net+) or changes over frames (``query_listen``: the query is
  read from the gated features; ``key_listen``: so are the keys).

:class:`SeparationGraphV2` freezes a network for separating all sources: the
whole encoder and mid block do not depend on the condition, so they run once
per window; per source only the decoder runs, with its GPoCM matrices (and,
listen modes off, its attention weights) computed once at build time.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config_v2 import LEAKY_SLOPE, V2Config
from .network import TFC, _FrozenTFC, _fold_bn, _fold_sequential, gpocm, load_network


def activation(name: str):
    """A factory for the configured activation (``relu`` or ``leaky_relu`` with slope 0.01)."""
    if name == "leaky_relu":
        return lambda: nn.LeakyReLU(LEAKY_SLOPE)
    return nn.ReLU


class WNLinear(nn.Module):
    """A ``weight_norm`` Linear: ``W = weight_g · weight_v / ||weight_v||`` (norm of each output row).

    ``(…, in) -> (…, out)``; parameters ``weight_g (out, 1)``, ``weight_v (out, in)``, ``bias (out)``.
    """

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.weight_g = nn.Parameter(torch.ones(n_out, 1))
        self.weight_v = nn.Parameter(torch.zeros(n_out, n_in))
        self.bias = nn.Parameter(torch.zeros(n_out))

    def weight(self):
        return self.weight_g * self.weight_v / torch.linalg.vector_norm(self.weight_v, dim=1, keepdim=True)

    def forward(self, x):
        return nn.functional.linear(x, self.weight(), self.bias)


def _generator(E: int, n_out: int) -> nn.Sequential:
    """A condition generator ``e (B, E) -> (B, n_out)``: WN-Linear, ReLU, WN-Linear."""
    return nn.Sequential(WNLinear(E, E), nn.ReLU(), WNLinear(E, n_out))


class TDF(nn.Module):
    """Time-distributed fully connected layers over frequency: ``(B, C, T, f) -> (B, C, T, f)``.

    FC ``f -> b`` → BN(C) → act → FC ``b -> f`` → BN(C) → act.
    """

    def __init__(self, f: int, cfg: V2Config):
        super().__init__()
        C, b, bias, act = cfg.internal_channels, cfg.bottleneck(f), cfg.tfc_tdf_bias, activation(cfg.activation)
        self.tdf = nn.Sequential(nn.Linear(f, b, bias), nn.BatchNorm2d(C), act(), nn.Linear(b, f, bias), nn.BatchNorm2d(C), act())


class TFCTDF(nn.Module):
    """An unconditioned encoder / mid block: ``t = TFC(x)``, ``t + TDF(t)``; ``(B, c_in, T, f) -> (B, C, T, f)``."""

    def __init__(self, c_in: int, f: int, cfg: V2Config):
        super().__init__()
        self.tfc = TFC(c_in, cfg, activation(cfg.activation))
        self.tdf = TDF(f, cfg)

    def forward(self, x):
        t = self.tfc(x)
        return t + self.tdf.tdf(t)


class LightSAFTv2(nn.Module):
    """The decoder's TFC and latent-source attentive frequency transformation (v2).

    ``values(t)``: ``(B, C, T, f) -> (B, C, T, b, L)`` (latent index fastest);
    ``attention(t, e)``: ``(B, T, L)`` weights (``(B, 1, L)`` with listen modes off);
    ``lasift(S)``: ``(B, C, T, b) -> (B, C, T, f)``.
    """

    def __init__(self, c_in: int, f: int, cfg: V2Config):
        super().__init__()
        C, E, L, dk, bias = cfg.internal_channels, cfg.embedding_dim, cfg.num_tdfs, cfg.dk, cfg.tfc_tdf_bias
        act = activation(cfg.activation)
        self.f, self.b, self.L, self.dk, self.C = f, cfg.bottleneck(f), L, dk, C
        self.query_listen, self.key_listen = cfg.query_listen, cfg.key_listen
        self.tfc = TFC(c_in, cfg, act)
        self.LaSAFT_bn_layer = nn.Sequential(nn.Linear(f, self.b * L, bias), nn.BatchNorm2d(C), act())
        self.LaSIFT = nn.Sequential(nn.BatchNorm2d(C), nn.Linear(self.b, f, bias), act())
        if self.query_listen:  # a condition-dependent 1x1 convolution to one channel, then LayerNorm, ReLU, FC
            self.query_pocm_generator = _generator(E, C + 1)
            self.linear_query = nn.Sequential(nn.LayerNorm(f), nn.ReLU(), nn.Linear(f, dk))
        else:
            self.linear_query = nn.Linear(E, dk)
        if self.key_listen:  # keys read from the features: 1x1 convolution C -> L, BN, ReLU, FC f -> dk
            self.keys = nn.Sequential(nn.Conv2d(C, L, 1), nn.BatchNorm2d(L), nn.ReLU(), nn.Linear(f, dk))
        else:
            self.keys = nn.Parameter(torch.zeros(1, 1, dk, L))

    def values(self, t):
        B, C, T, _ = t.shape
        return self.LaSAFT_bn_layer(t).reshape(B, C, T, self.b, self.L)

    def query(self, t, e):
        """``(B, T, dk)`` with query_listen, else ``(B, 1, dk)``."""
        if not self.query_listen:
            return self.linear_query(e)[:, None]
        pq = self.query_pocm_generator(e)  # (B, C + 1)
        m = torch.einsum("bctf,bc->btf", t, pq[:, : self.C]) + pq[:, self.C, None, None]
        return self.linear_query(m)

    def key(self, t):
        """``(B, L, T, dk)`` with key_listen, else ``(1, L, 1, dk)``."""
        if self.key_listen:
            return self.keys(t)
        return self.keys[0, 0].transpose(0, 1)[None, :, None, :]

    def attention(self, t, e):
        # k (B or 1, L, T or 1, dk) against q (B, T or 1, dk): the frame axes broadcast in every listen mode
        logits = (self.key(t) * self.query(t, e)[:, None]).sum(-1).transpose(1, 2)  # (B, T or 1, L)
        return torch.softmax(logits / math.sqrt(self.dk), dim=-1)

    def forward(self, t, e):
        w = self.attention(t, e)  # (B, T or 1, L)
        S = torch.einsum("bctkl,btl->bctk", self.values(t), w.expand(-1, t.shape[2], -1))
        return t + self.LaSIFT(S)


class DecoderV2(nn.Module):
    """``tfc_lightsaft`` and its own GPoCM generator ``pocm_generator: e -> (Γ (C, C), β (C))``."""

    def __init__(self, f: int, cfg: V2Config):
        super().__init__()
        C = cfg.internal_channels
        self.C = C
        self.tfc_lightsaft = LightSAFTv2(2 * C, f, cfg)
        self.pocm_generator = _generator(cfg.embedding_dim, C * C + C)

    def gpocm(self, e):
        """``(Γ (B, C, C), β (B, C))``: ``Γ[j, c]`` weighs input channel j for output channel c."""
        p = self.pocm_generator(e)
        return p[:, : self.C * self.C].reshape(-1, self.C, self.C), p[:, self.C * self.C :]

    def forward(self, x, e):
        t = gpocm(self.tfc_lightsaft.tfc(x), *self.gpocm(e))
        return self.tfc_lightsaft(t, e)


class ConditionedUNetV2(nn.Module):
    """The authors' v2 network: ``forward(spec (B, 4, T, n_fft/2+1), condition (B,) long) -> (B, 4, T, n_fft/2+1)``."""

    def __init__(self, cfg: V2Config):
        super().__init__()
        self.cfg = cfg
        C, n = cfg.internal_channels, cfg.n_levels
        ds, us = activation(cfg.ds_activation), activation(cfg.us_activation)
        self.first_conv = nn.Sequential(nn.Conv2d(4, C, (1, 2)), nn.BatchNorm2d(C), activation(cfg.first_conv_activation)())
        self.encoders = nn.ModuleList(TFCTDF(C, cfg.level_bins(i), cfg) for i in range(n))
        self.downsamplings = nn.ModuleList(nn.Sequential(nn.Conv2d(C, C, 2, stride=2), nn.BatchNorm2d(C), ds()) for _ in range(n))
        self.mid_block = TFCTDF(C, cfg.level_bins(n), cfg)
        self.upsamplings = nn.ModuleList(
            nn.Sequential(nn.ConvTranspose2d(C, C, 2, stride=2), nn.BatchNorm2d(C), us()) for _ in range(n))
        self.decoders = nn.ModuleList(DecoderV2(cfg.level_bins(n - 1 - i), cfg) for i in range(n))
        self.last_conv = nn.Sequential(nn.Conv2d(C, 4, (1, 2), padding=(0, 1)))
        self.embedding = nn.Embedding(len(cfg.sources), cfg.embedding_dim)
        self.eval()

    def encode(self, spec):
        """The source-independent part: ``(x at the mid block's output, skips)``."""
        x = self.first_conv(spec)
        skips = []
        for encoder, down in zip(self.encoders, self.downsamplings):
            x = encoder(x)
            skips.append(x)
            x = down(x)
        return self.mid_block(x), skips

    def forward(self, spec, condition):
        e = self.embedding(condition)
        x, skips = self.encode(spec)
        for i, (up, decoder) in enumerate(zip(self.upsamplings, self.decoders)):
            x = decoder(torch.cat((up(x), skips[-1 - i]), 1), e)
        return self.last_conv(x)

    @classmethod
    def from_tensors(cls, cfg: V2Config, tensors: dict, path=None) -> "ConditionedUNetV2":
        return load_network(cls, cfg, tensors, path)


class _FrozenTDF(nn.Module):
    """``t + TDF(t)`` with TFC folded; ``(1, c_in, T, f) -> (1, C, T, f)``."""

    def __init__(self, block: TFCTDF):
        super().__init__()
        self.tfc, self.tdf = _FrozenTFC(block.tfc), block.tdf.tdf

    def forward(self, x):
        t = self.tfc(x)
        return t + self.tdf(t)


class SeparationGraphV2(nn.Module):
    """All sources of a v2 network in one frozen graph: ``spec (B, 4, T, F) -> (B, S, 4, T, F)``.

    The encoder and mid block (condition-free) run once per window; then each
    source's decoder runs with batch 1. Per-source constants computed here:
    GPoCM ``Γ``/``β`` as 1x1 convolutions; with ``query_listen`` the query's
    1x1 convolution; with listen modes off the attention weights themselves.
    BatchNorm is folded into every convolution it follows (also the keys'
    ``BN(L)``). Equal to :class:`ConditionedUNetV2` per source up to float rounding.
    """

    def __init__(self, net: ConditionedUNetV2, sources=None):
        super().__init__()
        cfg = net.cfg
        self.cfg, self.n_levels, C = cfg, cfg.n_levels, cfg.internal_channels
        sources = list(range(len(cfg.sources))) if sources is None else list(sources)
        self.S = len(sources)
        self.first_conv = _fold_sequential(net.first_conv)
        self.encoders = nn.ModuleList(_FrozenTDF(b) for b in list(net.encoders) + [net.mid_block])
        self.downsamplings = nn.ModuleList(_fold_sequential(d) for d in net.downsamplings)
        self.upsamplings = nn.ModuleList(_fold_sequential(u) for u in net.upsamplings)
        self.last_conv = net.last_conv
        blocks = [d.tfc_lightsaft for d in net.decoders]
        self.tfcs = nn.ModuleList(_FrozenTFC(b.tfc, (C, C)) for b in blocks)
        self.values = nn.ModuleList(b.LaSAFT_bn_layer for b in blocks)
        self.lasift = nn.ModuleList(b.LaSIFT for b in blocks)
        self.query_listen, self.key_listen = cfg.query_listen, cfg.key_listen
        self.shape = [(b.b, b.L) for b in blocks]
        self.scale = 1.0 / math.sqrt(cfg.dk)
        frozen = lambda t: nn.Parameter(t.contiguous(), requires_grad=False)  # noqa: E731
        with torch.no_grad():
            e = net.embedding(torch.tensor(sources))  # (S, E)
            gw, gb, qw, qb, attn = [], [], [], [], []
            for d, b in zip(net.decoders, blocks):
                gamma, beta = d.gpocm(e)  # (S, C, C), (S, C)
                gw.append(gamma.transpose(-1, -2).reshape(self.S, C, C, 1, 1))  # 1x1 conv weight[c, j] = Γ[j, c]
                gb.append(beta)
                if cfg.query_listen:
                    pq = b.query_pocm_generator(e)  # (S, C + 1)
                    qw.append(pq[:, :C].reshape(self.S, 1, C, 1, 1))
                    qb.append(pq[:, C:])
                else:  # the query is a constant per source: (S, 1, dk)
                    qw.append(b.linear_query(e)[:, None])
                if not cfg.query_listen and not cfg.key_listen:  # constant weights (S, 1, L)
                    attn.append(b.attention(torch.zeros(self.S, C, 1, b.f), e))
            self.gpocm_weight = nn.ParameterList(frozen(w) for w in gw)
            self.gpocm_bias = nn.ParameterList(frozen(w) for w in gb)
            self.query_weight = nn.ParameterList(frozen(w) for w in qw)
            self.query_bias = nn.ParameterList(frozen(w) for w in qb)
            self.attn = nn.ParameterList(frozen(w) for w in attn)
        self.layer_norms = nn.ModuleList(b.linear_query[0] for b in blocks) if cfg.query_listen else None
        self.query_fcs = nn.ModuleList(b.linear_query[2] for b in blocks) if cfg.query_listen else None
        if cfg.key_listen:  # Conv 1x1 with BN(L) folded, ReLU, FC f -> dk
            self.key_nets = nn.ModuleList(nn.Sequential(_fold_bn(b.keys[0], b.keys[1]), nn.ReLU(), b.keys[3]) for b in blocks)
        else:
            self.key_consts = nn.ParameterList(frozen(b.key(None)[0]) for b in blocks)  # (L, 1, dk)
        self.eval()

    def _attention(self, j: int, s: int, t):
        """Decoder ``j``'s weights for source ``s`` from the gated ``t (1, C, T, f)``: ``(1, T or 1, L)``."""
        if not self.query_listen and not self.key_listen:
            return self.attn[j][s : s + 1]
        if self.query_listen:
            m = nn.functional.conv2d(t, self.query_weight[j][s], self.query_bias[j][s])[:, 0]  # (1, T, f)
            q = self.query_fcs[j](torch.relu(self.layer_norms[j](m)))  # (1, T, dk)
        else:
            q = self.query_weight[j][s : s + 1]  # (1, 1, dk)
        k = self.key_nets[j](t)[0] if self.key_listen else self.key_consts[j]  # (L, T or 1, dk)
        logits = (k * q).sum(-1)  # (L, T or 1)
        return torch.softmax(logits.transpose(0, 1)[None] * self.scale, dim=-1)  # (1, T, L)

    def _decoder(self, j: int, s: int, x, skip):
        up = self.upsamplings[j](x)
        t = self.tfcs[j](up, skip)
        t = torch.sigmoid(nn.functional.conv2d(t, self.gpocm_weight[j][s], self.gpocm_bias[j][s])) * t  # GPoCM
        b, L = self.shape[j]
        _, C, T, _ = t.shape
        v = self.values[j](t).reshape(1, C, T, b, L)
        w = self._attention(j, s, t)  # (1, T or 1, L)
        mixed = torch.matmul(v, w.reshape(1, 1, w.shape[1], L, 1)).reshape(1, C, T, b)
        return t + self.lasift[j](mixed)

    def encode(self, spec):
        """The condition-free part of one window ``spec (1, 4, T, F)``: ``(mid-block output, skips)``."""
        x = self.first_conv(spec)
        skips = []
        for k in range(self.n_levels):
            x = self.encoders[k](x)
            skips.append(x)
            x = self.downsamplings[k](x)
        return self.encoders[self.n_levels](x), skips

    def branch(self, s: int, mid, skips):
        """Source ``s``'s decoders from :meth:`encode`'s output to its spectrogram ``(1, 4, T, F)``."""
        x = mid
        for j in range(self.n_levels):
            x = self._decoder(j, s, x, skips[-1 - j])
        return self.last_conv(x)

    def forward(self, spec):
        outs = []
        for i in range(spec.shape[0]):  # one window at a time: small working set
            mid, skips = self.encode(spec[i : i + 1])  # once for all sources
            outs.append(torch.stack([self.branch(s, mid, skips) for s in range(self.S)], 1))
        return torch.cat(outs, 0)
