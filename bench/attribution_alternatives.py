"""Two alternatives to the eager bf16-autocast labelling pass, timed against it: bf16 weights, compiled.

    flock /tmp/probelab-heavy.lock .venv/bin/python bench/attribution_alternatives.py

The official attribution pass (sequence loss) in two halves: the blocks below the SAE site run
under ``no_grad``; the blocks above it, the final norm, the unembedding and the per-token CE run with
a backward to the site's residual. Three ways to run it:

- ``autocast``: what ``probelab.sae.attribute`` does (bf16 autocast, matmul weights cast once);
- ``bf16 weights``: a bf16 copy of the teacher, no autocast (no activation casts by autocast; the
  norms and softmax upcast to fp32 and back themselves);
- ``compiled``: the autocast pass with its upper half through ``torch.compile`` (inductor fuses the
  norms, rotary, SiLU and casts that eager PyTorch runs as separate kernels).

Prints best-of-3 pass times interleaved, each path's speed-up, the cosine of its residual gradient
to the fp32 pass's, and the compile time. Neither alternative is used by probelab: the first is no
faster, the second pays its compile cost again in every process.
"""
from __future__ import annotations

import argparse
import copy
import time

import torch

from probelab.capture import decoder_layers, position_ids_from_mask
from probelab.models import load_model
from probelab.sae.attribution import _autocast_weights, next_token_losses, objective
from probelab.sae.corpus import wiki_texts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--site", type=int, default=13, help="residual index of the SAE site (the default SAE's)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_model("smollm2-135m")
    model.requires_grad_(False)
    texts = [t for t in wiki_texts()[1] if len(tok(t)["input_ids"]) >= args.tokens][:args.batch]
    ids = torch.stack([torch.tensor(tok(t)["input_ids"][:args.tokens]) for t in texts])
    mask = torch.ones_like(ids)
    bf16_model = copy.deepcopy(model).to(torch.bfloat16)

    def block(layer, h, rotary, position_ids):
        out = layer(h, attention_mask=None, position_embeddings=rotary, position_ids=position_ids)
        return out[0] if isinstance(out, tuple) else out

    def upper_of(m):
        def upper(h, rotary, position_ids):
            for layer in decoder_layers(m)[args.site:]:
                h = block(layer, h, rotary, position_ids)
            logits = m.lm_head(m.model.norm(h))
            losses, valid = next_token_losses(logits, ids, mask)
            return objective(losses, valid, "sequence")
        return upper

    def run(m, fn, amp: bool):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp), _autocast_weights(m, torch.bfloat16 if amp else None):
            with torch.no_grad():
                positions = position_ids_from_mask(mask)
                h = m.model.embed_tokens(ids)
                rotary = m.model.rotary_emb(h, positions)
                for layer in decoder_layers(m)[:args.site]:
                    h = block(layer, h, rotary, positions)
            h = h.detach().requires_grad_(True)
            with torch.enable_grad():
                (grad,) = torch.autograd.grad(fn(h, rotary, positions), h)
        return grad.float()

    reference = run(model, upper_of(model), amp=False)  # fp32
    compiled = torch.compile(upper_of(model))
    t0 = time.perf_counter()
    run(model, compiled, amp=True)
    compile_s = time.perf_counter() - t0
    paths = {"autocast": (model, upper_of(model), True), "bf16 weights": (bf16_model, upper_of(bf16_model), False),
             "compiled": (model, compiled, True)}
    times: dict[str, list[float]] = {name: [] for name in paths}
    grads = {}
    for _ in range(3):  # interleaved: the machine's load moves all alike
        for name, (m, fn, amp) in paths.items():
            t0 = time.perf_counter()
            grads[name] = run(m, fn, amp)
            times[name].append(time.perf_counter() - t0)
    n = ids.numel()
    base = min(times["autocast"])
    print(f"smollm2-135m, {args.batch} x {args.tokens} tokens, site {args.site}, {args.threads} threads; "
          f"compilation took {compile_s:.0f} s")
    for name in paths:
        t = min(times[name])
        cos = torch.nn.functional.cosine_similarity(grads[name].flatten(), reference.flatten(), 0).item()
        print(f"{name:13s} {t:.2f} s per pass ({n / t:4.0f} tokens/s, {base / t:.2f}x autocast); "
              f"gradient cosine to fp32 {cos:.4f}")


if __name__ == "__main__":
    main()
