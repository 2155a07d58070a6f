"""Field embeddings shared by the feature-aware models (fm, wide_deep, dcn, dcnv2, autoint).

Fields: user id, item id, one per user categorical (occupation, zip prefix), one per item categorical
(year), plus one dense field per continuous block (user [age, gender], item genre multi-hot) projected
to the embedding size. The feature tables are buffers, filled once by `set_tables` and saved in the
state_dict, so a model scores (user, item) ids alone and a checkpoint needs no dataset object.
"""

from __future__ import annotations

import torch
from torch import nn

from recsys.models.base import Model


class FieldEmbedding(nn.Module):
    def __init__(self, n_users: int, n_items: int, dim: int, user_cont_dim: int = 0, user_cards=(),
                 item_cont_dim: int = 0, item_cards=()):
        super().__init__()
        self.ids = nn.ModuleList([nn.Embedding(n_users, dim), nn.Embedding(n_items, dim)])
        self.user_cats = nn.ModuleList([nn.Embedding(c, dim) for c in user_cards])
        self.item_cats = nn.ModuleList([nn.Embedding(c, dim) for c in item_cards])
        self.user_dense = nn.Linear(user_cont_dim, dim, bias=False) if user_cont_dim else None
        self.item_dense = nn.Linear(item_cont_dim, dim, bias=False) if item_cont_dim else None
        self.register_buffer("user_cont", torch.zeros(n_users, user_cont_dim))
        self.register_buffer("user_cat", torch.zeros(n_users, len(user_cards), dtype=torch.long))
        self.register_buffer("item_cont", torch.zeros(n_items, item_cont_dim))
        self.register_buffer("item_cat", torch.zeros(n_items, len(item_cards), dtype=torch.long))
        self.num_fields = 2 + len(user_cards) + len(item_cards) + bool(user_cont_dim) + bool(item_cont_dim)
        ku, ki = len(user_cards), len(item_cards)
        # where each side's fields sit in forward()'s order: ids, user cats, item cats, user dense, item dense
        self.user_pos = [0, *range(2, 2 + ku)] + ([2 + ku + ki] if user_cont_dim else [])
        self.item_pos = [1, *range(2 + ku, 2 + ku + ki)] + ([2 + ku + ki + bool(user_cont_dim)] if item_cont_dim else [])
        for e in self.modules():
            if isinstance(e, nn.Embedding):
                nn.init.normal_(e.weight, std=0.01)

    def set_tables(self, user_cont, user_cat, item_cont, item_cat) -> None:
        for name, t in (("user_cont", user_cont), ("user_cat", user_cat), ("item_cont", item_cont), ("item_cat", item_cat)):
            getattr(self, name).copy_(torch.as_tensor(t))

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        """[B] user ids, [B] item ids -> [B, F, dim] field embeddings."""
        fields = [self.ids[0](user), self.ids[1](item)]
        uc, ic = self.user_cat[user], self.item_cat[item]  # [B, Ku], [B, Ki]
        fields += [emb(uc[:, j]) for j, emb in enumerate(self.user_cats)]
        fields += [emb(ic[:, j]) for j, emb in enumerate(self.item_cats)]
        if self.user_dense is not None:
            fields.append(self.user_dense(self.user_cont[user]))
        if self.item_dense is not None:
            # multi-hot genres: mean of the genre vectors, so many-genre films are not louder
            g = self.item_cont[item]
            fields.append(self.item_dense(g) / g.sum(1, keepdim=True).clamp(min=1))
        return torch.stack(fields, 1)

    # scoring a block of users against the whole catalogue: each side's fields computed once ----------
    def user_side(self, user: torch.Tensor) -> torch.Tensor:
        """[b] users -> [b, Fu, dim]: the user's fields, once per user rather than once per pair."""
        fields = [self.ids[0](user)] + [emb(self.user_cat[user][:, j]) for j, emb in enumerate(self.user_cats)]
        if self.user_dense is not None:
            fields.append(self.user_dense(self.user_cont[user]))
        return torch.stack(fields, 1)

    def item_side(self, item: torch.Tensor) -> torch.Tensor:
        fields = [self.ids[1](item)] + [emb(self.item_cat[item][:, j]) for j, emb in enumerate(self.item_cats)]
        if self.item_dense is not None:
            g = self.item_cont[item]
            fields.append(self.item_dense(g) / g.sum(1, keepdim=True).clamp(min=1))
        return torch.stack(fields, 1)

    def pairs(self, u: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        """Per-side tensors [r, Fu, k] and [n, Fi, k] -> [r * n, F, k] in forward()'s field order
        (user-major: row a * n + b is user a with item b)."""
        r, n = len(u), len(i)
        out = u.new_empty(r, n, self.num_fields, u.shape[-1])
        out[:, :, self.user_pos] = u[:, None]
        out[:, :, self.item_pos] = i[None]
        return out.view(r * n, self.num_fields, u.shape[-1])

    def split_linear(self, linear: nn.Linear, u: torch.Tensor, i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A linear layer over the flattened fields, as a user part [r, H] and an item part [n, H]
        (bias included) whose sum over a pair is the layer's output for it: per side, not per pair."""
        w = linear.weight.view(linear.out_features, self.num_fields, -1)
        hu = u.flatten(1) @ w[:, self.user_pos].flatten(1).T
        hi = i.flatten(1) @ w[:, self.item_pos].flatten(1).T
        return hu, hi + linear.bias if linear.bias is not None else hi


def first_order(module: nn.Module) -> nn.Module:
    """Mark a module as a model's first-order terms (per-user, per-item, per-feature-value biases): its
    weights decay by `bias_weight_decay` (recsys.training.decay_groups), not by the tables' decay."""
    module.first_order = True
    return module


PAIRS_PER_CHUNK = 4096  # pairs per step of a block's scoring (cache-sized; see recsys/ranking.py)


def by_pair_chunks(n_users: int, n_items: int, fn, like: torch.Tensor) -> torch.Tensor:
    """[n_users, n_items] scores from fn(user slice, item slice) -> [rows * cols] (user-major), about
    PAIRS_PER_CHUNK pairs at a time: a few users x every item on a small catalogue, one user x a run of
    items on a large one (one user x 59,047 items would be a 15 MB temporary per layer, out of cache).
    `like`: a tensor whose dtype and device the scores take."""
    out = torch.empty(n_users, n_items, dtype=like.dtype, device=like.device)
    rows = max(1, PAIRS_PER_CHUNK // max(n_items, 1))
    cols = min(n_items, max(PAIRS_PER_CHUNK, 1))
    for s in range(0, n_users, rows):
        for c in range(0, n_items, cols):
            us, its = slice(s, s + rows), slice(c, c + cols)
            out[us, its] = fn(us, its).view(-1, min(cols, n_items - c)).to(out.dtype)
    return out


def pair_sum(hu: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """[r, H] + [n, H] -> [r * n, H], user-major."""
    return (hu[:, None] + hi[None]).reshape(-1, hu.shape[-1])


def tower(layers: nn.Sequential, hu: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """An MLP's layers after its first (split per side: `hu` [r, H] + `hi` [n, H]) over every user x item
    pair, for ranking: [r * n, out]. The same as `layers(pair_sum(hu, hi))` in eval mode, with each
    linear layer one addmm and each ReLU in place on the fresh temporary (1.3-1.5x on NCF's narrow
    layers, whose per-pair work is bound by passes over memory, not by multiplies)."""
    x = pair_sum(hu, hi)
    for layer in layers:
        if isinstance(layer, nn.Linear):
            x = torch.addmm(layer.bias, x, layer.weight.T) if layer.bias is not None else x @ layer.weight.T
        elif isinstance(layer, nn.ReLU):
            x = x.relu_()
        elif not isinstance(layer, nn.Dropout):  # dropout is the identity when ranking
            x = layer(x)
    return x


def mlp(sizes: list[int], dropout: float) -> nn.Sequential:
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class CrossAndDeep(Model):
    """The shape DCN and DCN-V2 share: field embeddings x0 [B, W] -> a cross network beside an MLP, both
    read by one linear output. A subclass defines `build_crosses(width, n)` (its layers, built before
    the MLP, so a seed gives the same initial weights in either order of reading) and `crosses(x0)`."""

    uses_features = True

    def __init__(self, n_users: int, n_items: int, embedding_dim: int, cross_layers: int, deep_layers,
                 dropout: float, **features):
        super().__init__()
        self.fields = FieldEmbedding(n_users, n_items, embedding_dim, **features)
        self.width = self.fields.num_fields * embedding_dim  # W
        self.build_crosses(self.width, cross_layers)
        self.deep = mlp([self.width, *deep_layers], dropout)
        self.out = nn.Linear(self.width + deep_layers[-1], 1)

    def set_tables(self, *tables):
        self.fields.set_tables(*tables)

    def build_crosses(self, width: int, n: int) -> None:
        raise NotImplementedError

    def crosses(self, x0: torch.Tensor) -> torch.Tensor:  # [B, W] -> [B, W]
        raise NotImplementedError

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        x0 = self.fields(user, item).flatten(1)  # [B, W]
        return self.out(torch.cat([self.crosses(x0), self.deep(x0)], -1)).squeeze(-1)

