"""The JSON behind the explain page (scripts/explain.py serves it): one Explainer per loaded checkpoint, App routes.

Every number comes from gpt/introspect.py; this file only crops, caches and shapes them for the page.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

TOP_N = 20  # bars in the next-token chart
PARTS = ("tokens", "next", "attention", "lens")  # the views /api/view can return
LENS_K = 5  # tokens per logit-lens cell (the top one shown, all five on hover)
CACHE_BYTES = 1 << 30  # traces kept per model (attention is L·H·T² floats: 600 MB for 124M at T = 1024)


class BadRequest(ValueError):
    """A request the page can fix (empty prompt, bad slider value): answered 400 with the message."""


class Explainer:
    """A loaded GPT and the JSON views of the page, with the last traces cached by their token ids, so moving a
    slider or picking another head costs no forward pass. One lock: requests take turns on the model."""

    def __init__(self, path: Path, model, enc):
        self.path, self.model, self.enc = path, model, enc
        self.config = model.config
        self.device = next(model.parameters()).device
        self.lock = threading.Lock()
        self.cache: OrderedDict[tuple[int, ...], dict] = OrderedDict()

    def info(self) -> dict:
        c = self.config
        return dict(
            name=str(self.path), params=self.model.num_params(), n_layer=c.n_layer, n_head=c.n_head,
            n_embd=c.n_embd, context_length=c.context_length, vocab_size=c.vocab_size,
        )  # fmt: skip

    def crop(self, ids: list[int]) -> tuple[list[int], int, str | None]:
        """A prompt longer than the context keeps its last context_length tokens (as generate() does)."""
        ctx = self.config.context_length
        if len(ids) <= ctx:
            return ids, 0, None
        dropped = len(ids) - ctx
        note = (
            f"the prompt is {len(ids)} tokens, longer than this model's context of {ctx}: "
            f"it sees the last {ctx} (the first {dropped} are dropped)"
        )
        return ids[dropped:], dropped, note

    def _entry(self, ids: list[int]) -> dict:
        import torch

        from gpt.introspect import trace

        key = tuple(ids)
        if key in self.cache:
            self.cache.move_to_end(key)
            return self.cache[key]
        idx = torch.tensor([ids], dtype=torch.long, device=self.device)
        tr = trace(self.model, idx, last_only=True)  # the views need the last position's logits only
        entry = dict(idx=idx, trace=tr, lens=None, bytes=tr.attentions.numel() * 4 + tr.residuals.numel() * 4)
        self.cache[key] = entry
        while len(self.cache) > 1 and sum(e["bytes"] for e in self.cache.values()) > CACHE_BYTES:
            self.cache.popitem(last=False)
        return entry

    def view(self, ids: list[int], parts: set[str], sampling: dict, layer: int, head: int | None) -> dict:
        """The views of one prompt for this model: next-token odds, one attention map, the logit lens."""
        kept, dropped, note = self.crop(ids)
        out = dict(dropped=dropped, note=note)
        with self.lock:
            e = self._entry(kept)
            if "next" in parts:
                out["next"] = self._next(e["trace"].logits[0, -1], sampling)
            if "attention" in parts:
                out["attention"] = self._attention(e["trace"].attentions, layer, head)
            if "lens" in parts:
                out["lens"] = self._lens(e)
        return out

    def _next(self, logits, sampling: dict) -> dict:
        from gpt.introspect import next_token_distribution

        try:
            dist = next_token_distribution(logits, **sampling)
        except ValueError as e:
            raise BadRequest(str(e)) from e
        p, ids = dist.probs.topk(TOP_N)
        kept = int((dist.filtered > 0).sum())
        return dict(
            ids=ids.tolist(), probs=p.tolist(), filtered=dist.filtered[ids].tolist(), kept=kept,
            entropy=entropy_bits(dist.probs), filtered_entropy=entropy_bits(dist.filtered),
        )  # fmt: skip

    def _attention(self, attentions, layer: int, head: int | None) -> dict:
        L, H = self.config.n_layer, self.config.n_head
        if not 0 <= layer < L or (head is not None and not 0 <= head < H):
            raise BadRequest(f"layer must be in [0, {L}) and head in [0, {H}) or null (average), got {layer}, {head}")
        a = attentions[layer, 0]  # (H, T, T)
        a = a.mean(0) if head is None else a[head]  # (T, T)
        rows = [[round(v, 6) for v in row[: t + 1]] for t, row in enumerate(a.tolist())]  # lower triangle
        return dict(layer=layer, head=head, rows=rows)

    def _lens(self, entry: dict) -> dict:
        from gpt.introspect import LogitLens, logit_lens

        if entry["lens"] is None:
            tr = entry["trace"]
            entry["lens"] = logit_lens(self.model, entry["idx"], LENS_K, residuals=tr.residuals)
        lens = entry["lens"]
        return dict(
            layers=LogitLens.layer_names(self.config.n_layer),
            top_ids=lens.top_ids[:, 0].tolist(),  # (L + 1, T, k)
            top_probs=lens.top_probs[:, 0].tolist(),
            next_probs=lens.next_token_probs[:, 0].tolist(),  # (L + 1, T - 1)
        )

    def step(self, ids: list[int], sampling: dict, seed: int) -> int:
        """The next token, drawn by the sampler itself (sample_next_token) from this prompt's logits."""
        import torch

        from gpt.sampling import sample_next_token

        kept, _, _ = self.crop(ids)
        with self.lock:
            logits = self._entry(kept)["trace"].logits[:, -1]  # (1, V)
            try:
                g = torch.Generator(device=self.device).manual_seed(seed)
                return int(sample_next_token(logits, generator=g, **sampling)[0])
            except ValueError as e:
                raise BadRequest(str(e)) from e

    def losses(self, ids: list[int]) -> dict:
        """Per-token loss of a text; a text longer than the context is scored on its first context + 1 tokens."""
        import torch

        from gpt.introspect import token_losses

        n = self.config.context_length + 1
        note = None
        if len(ids) > n:
            note = f"the text is {len(ids)} tokens; this model's context scores its first {n} (the rest is not scored)"
        idx = torch.tensor([ids[:n]], dtype=torch.long, device=self.device)
        with self.lock:
            loss = token_losses(self.model, idx)[0]
        return dict(losses=loss.tolist(), mean=loss.mean().item(), scored=min(len(ids), n), note=note)


def is_int(v) -> bool:
    """A JSON integer: Python's bool is an int too, but `true` is no layer, token id or seed."""
    return isinstance(v, int) and not isinstance(v, bool)


def entropy_bits(p) -> float:
    """H(p) = -Σ p log2 p over the tokens with p > 0, in bits."""
    p = p[p > 0]
    return float(-(p * p.log2()).sum())


def token_info(enc, ids: list[int]) -> list[dict]:
    """Each token's text piece (bytes decoded, a partial UTF-8 character shown as U+FFFD), id and bytes in hex.
    Ids past GPT-2's vocabulary (a model with a larger vocab_size, e.g. 50304) have no text: shown as <id>."""
    out = []
    for i in ids:
        if i >= enc.n_vocab:
            out.append(dict(id=i, piece=f"<{i}>", bytes=""))
            continue
        b = enc.decode_single_token_bytes(i)
        out.append(dict(id=i, piece=b.decode("utf-8", errors="replace"), bytes=b.hex(" ")))
    return out


# ---- the JSON API ---------------------------------------------------------------------------------------------------
class App:
    """The page's API over one or two Explainers sharing GPT-2's tokenizer."""

    def __init__(self, explainers: list[Explainer], enc):
        self.explainers, self.enc = explainers, enc

    def info(self) -> dict:
        return dict(models=[e.info() for e in self.explainers], top_n=TOP_N)

    def ids_from(self, body: dict) -> list[int]:
        if body.get("ids") is not None:
            ids = body["ids"]
            if not isinstance(ids, list) or not all(is_int(i) and 0 <= i < self.enc.n_vocab for i in ids):
                raise BadRequest(f"ids must be a list of token ids in [0, {self.enc.n_vocab})")
        else:
            text = body.get("text")
            if not isinstance(text, str):
                raise BadRequest("send the prompt as text (a string) or ids (a list of token ids)")
            ids = self.enc.encode(text, allowed_special="all")  # "<|endoftext|>" is the separator token
        if not ids:
            raise BadRequest("the prompt is empty: type some text, and the model will predict what comes next")
        return ids

    @staticmethod
    def sampling_from(body: dict) -> dict:
        """temperature ≥ 0; top_k: an integer ≥ 1, or 0 / null for no limit; top_p in (0, 1], or null."""
        try:
            t = float(body.get("temperature", 1.0))
            k = body.get("top_k")
            k = None if k in (None, 0) else int(k)
            p = body.get("top_p")
            p = None if p is None else float(p)
        except (TypeError, ValueError) as e:
            raise BadRequest(f"temperature, top_k and top_p must be numbers: {e}") from e
        from gpt.sampling import SamplingParams

        try:
            SamplingParams(t, k, p)
        except ValueError as e:
            raise BadRequest(str(e)) from e
        return dict(temperature=t, top_k=k, top_p=p)

    def view(self, body: dict) -> dict:
        ids = self.ids_from(body)
        parts = body.get("parts") or PARTS
        if not isinstance(parts, (list, tuple)) or not all(isinstance(p, str) and p in PARTS for p in parts):
            raise BadRequest(f"parts must be a list of some of {', '.join(PARTS)}")
        parts = set(parts)
        sampling = self.sampling_from(body)
        picks = body.get("attention") or []
        if not isinstance(picks, list):
            raise BadRequest("attention must be a list of picks, one per model: {layer: int, head: int or null}")
        models = []
        for m, ex in enumerate(self.explainers):
            pick = picks[m] if m < len(picks) and isinstance(picks[m], dict) else {}
            layer, head = pick.get("layer", 0), pick.get("head")
            if not is_int(layer) or not (head is None or is_int(head)):
                raise BadRequest("attention picks must be {layer: int, head: int or null}")
            models.append(ex.view(ids, parts, sampling, layer, head))
        seen = set(ids)
        for v in models:
            seen.update(v.get("next", {}).get("ids", []))
            seen.update(i for row in v.get("lens", {}).get("top_ids", []) for pos in row for i in pos)
        out = dict(ids=ids, models=models, pieces={t["id"]: t["piece"] for t in token_info(self.enc, sorted(seen))})
        if "tokens" in parts:
            out["tokens"] = token_info(self.enc, ids)
        return out

    def step(self, body: dict) -> dict:
        ids = self.ids_from(body)
        sampling = self.sampling_from(body)
        if body.get("greedy"):
            sampling["temperature"] = 0.0
        m, seed = body.get("model", 0), body.get("seed", 0)
        if not is_int(m) or not 0 <= m < len(self.explainers) or not is_int(seed) or not 0 <= seed < 2**63:
            raise BadRequest(f"model must be an index < {len(self.explainers)} and seed an integer in [0, 2^63)")
        ids = ids + [self.explainers[m].step(ids, sampling, seed)]
        return dict(ids=ids, text=self.enc.decode(ids))

    def loss(self, body: dict) -> dict:
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            raise BadRequest("paste a text to score: the loss of each token given the ones before it")
        ids = self.enc.encode(text, allowed_special="all")
        if len(ids) < 2:
            raise BadRequest("the text is one token: the loss needs at least two (the first one has no prediction)")
        return dict(tokens=token_info(self.enc, ids), models=[e.losses(ids) for e in self.explainers])

    def route(self, method: str, path: str, body: dict | None) -> dict:
        routes = {("GET", "/api/info"): self.info, ("POST", "/api/view"): self.view,
                  ("POST", "/api/step"): self.step, ("POST", "/api/loss"): self.loss}  # fmt: skip
        fn = routes.get((method, path))
        if fn is None:
            raise LookupError(path)
        return fn() if body is None else fn(body)
