"""Benchmark: probelab capture vs two anchors on the same batch, early stop, and bf16.

On the embedded SmolLM2-135M with the 40 analogy sentences of the Control LLM paper (last token,
residual stream at every layer: 31 states per sentence), all in ONE batch, tokenised once:

- anchor 1, a bare HF forward: ``model(ids, attention_mask, output_hidden_states=True)`` as a user
  writes it (full-vocabulary logits), and the same with ``logits_to_keep=1`` (the least work that
  still returns every hidden state);
- anchor 2, TransformerBridge **batched**: ``bridge.run_with_cache(ids, attention_mask=...,
  names_filter=[resid_pre 0, resid_post 0..L-1])``, then the last real token of each text;
- probelab ``capture(select="last")`` (hooks, per-layer selection, states copied to CPU float32);
- ``capture(layers=[k])`` for one middle layer (the forward stops after block k-1) vs all layers;
- bf16 weights: probelab capture vs the bare HF forward, both in bf16, same batch (target <= 1.1x).

Every time is the best of ``--repeats`` interleaved rounds after a warm-up (all contenders take turns,
so they see the same load); the 1-minute load average is printed before and after (the machine may
be shared: ratios are more stable than seconds).

    .venv/bin/python bench/capture.py [--repeats 5] [--device auto] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch


def cold_load_seconds() -> float:
    """Load the cached model in a fresh interpreter (imports excluded, as a user's script would see)."""
    code = ("import time, probelab, transformers; transformers.utils.logging.disable_progress_bar(); "
            "t=time.perf_counter(); probelab.load_model('smollm2-135m', device='cpu'); print(time.perf_counter()-t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def best_times(fns: dict, repeats: int, sync) -> dict:
    """Best time of each function over ``repeats`` interleaved rounds after one warm-up each: a shared
    machine only ever slows a run down, and interleaving exposes every contender to the same load."""
    for fn in fns.values():
        fn()
    sync()
    best = {k: float("inf") for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync()
            best[k] = min(best[k], time.perf_counter() - t0)
    return best


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | ...")
    ap.add_argument("--model", default="smollm2-135m", help="model name or folder (tiny-llama for a quick check)")
    ap.add_argument("--dtype", default="float32", help="dtype of the main comparison (the bf16 section always runs)")
    ap.add_argument("--texts", type=int, default=0, help="use the first N analogy sentences (0: the 40 paper ones)")
    ap.add_argument("--no-tl", action="store_true", help="skip the TransformerBridge anchor")
    ap.add_argument("--no-cold-load", action="store_true")
    ap.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = ap.parse_args(argv)
    import transformers

    transformers.utils.logging.disable_progress_bar()
    import probelab
    from probelab.capture.hf import position_ids_from_mask
    from probelab.models.devices import input_device, resolve_device, resolve_dtype

    device = resolve_device(args.device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    load_before = os.getloadavg()[0]
    model, tok = probelab.load_model(args.model, device=device, dtype=args.dtype)
    ps = probelab.load_probes("analogies")
    texts = ps.texts[:args.texts] if args.texts else ps.filter(source="paper").texts
    L = model.config.num_hidden_layers
    n = len(texts)
    enc = tok(texts, return_tensors="pt", padding=True)
    ids, mask = enc["input_ids"].to(input_device(model)), enc["attention_mask"].to(input_device(model))
    pos = position_ids_from_mask(mask)
    print(f"model {args.model} on {device} ({resolve_dtype(args.dtype, device)}), {n} sentences in one batch of "
          f"{tuple(ids.shape)} tokens, {L + 1} layers, torch threads {torch.get_num_threads()}, "
          f"load average {load_before:.2f} on {os.cpu_count()} CPUs")

    def bare(m, keep: bool):
        extra = {"logits_to_keep": 1} if keep else {}

        def run():
            with torch.no_grad():
                return m(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False,
                         output_hidden_states=True, **extra).hidden_states
        return run

    def ours(m, **kw):
        return lambda: probelab.capture(m, tok, texts, select="last", batch_size=n, progress=False, **kw)

    r: dict = {"device": str(device), "dtype": str(resolve_dtype(args.dtype, device)), "texts": n,
               "tokens": list(ids.shape), "load_before": load_before}
    mid = L // 2
    r["layers_mid"] = mid
    fns = {"bare_full_s": bare(model, False), "bare_keep1_s": bare(model, True), "probelab_s": ours(model),
           "probelab_one_layer_s": ours(model, layers=[mid])}

    caps = ours(model)()
    hs = bare(model, True)()
    last = mask.sum(1) - 1
    ref = torch.stack([h[torch.arange(n, device=h.device), last.to(h.device)].float().cpu() for h in hs[:-1]])
    r["max_diff_vs_bare"] = (caps.stream()[:-1] - ref).abs().max().item()  # HF's last entry is post-norm

    if not args.no_tl:
        from probelab.capture.tl import boot_bridge, tl_hook_names

        t0 = time.perf_counter()
        bridge = boot_bridge(model, tok)
        r["tl_boot_s"] = time.perf_counter() - t0
        names = tl_hook_names(L)

        def tl():
            with torch.no_grad():
                _, cache = bridge.run_with_cache(ids, attention_mask=mask, names_filter=names)
            return torch.stack([cache[nm][torch.arange(n, device=ids.device), last] for nm in names]).float().cpu()

        fns["tl_batched_s"] = tl
        r["max_diff_vs_tl"] = (caps.stream() - tl()).abs().max().item()

    # bf16 weights: probelab vs the bare forward on the same batch
    b16, _ = probelab.load_model(args.model, device=device, dtype="bfloat16")
    fns.update({"bf16_bare_full_s": bare(b16, False), "bf16_bare_keep1_s": bare(b16, True),
                "bf16_probelab_s": ours(b16)})
    r.update(best_times(fns, args.repeats, sync))
    r["bf16_max_rel_diff_vs_fp32"] = float(((ours(b16)().stream() - caps.stream()).norm(dim=-1)
                                            / caps.stream().norm(dim=-1)).max())
    if not args.no_cold_load and args.model == "smollm2-135m":
        r["cold_load_s"] = cold_load_seconds()
    r["load_after"] = os.getloadavg()[0]

    rows = [
        ("bare HF forward, output_hidden_states (full logits)", r["bare_full_s"]),
        ("bare HF forward, output_hidden_states, logits_to_keep=1", r["bare_keep1_s"]),
    ]
    if "tl_batched_s" in r:
        rows.append(("TransformerBridge run_with_cache, batched, names_filter", r["tl_batched_s"]))
    rows += [
        (f"probelab capture, all {L + 1} layers", r["probelab_s"]),
        (f"probelab capture, layers=[{mid}] (stops after block {mid - 1})", r["probelab_one_layer_s"]),
        ("bf16: bare HF forward (full logits)", r["bf16_bare_full_s"]),
        ("bf16: bare HF forward, logits_to_keep=1", r["bf16_bare_keep1_s"]),
        ("bf16: probelab capture, all layers", r["bf16_probelab_s"]),
    ]
    for label, t in rows:
        print(f"  {label:<62} {t:7.3f} s")
    print(f"probelab / bare HF forward (full logits):      {r['probelab_s'] / r['bare_full_s']:.2f}x")
    print(f"probelab / bare HF forward (logits_to_keep=1): {r['probelab_s'] / r['bare_keep1_s']:.2f}x")
    if "tl_batched_s" in r:
        print(f"probelab / TransformerBridge batched:          {r['probelab_s'] / r['tl_batched_s']:.2f}x   "
              f"(TL boot {r['tl_boot_s']:.1f} s not counted; max |diff| {r['max_diff_vs_tl']:.1e})")
    print(f"layers=[{mid}] / all layers:                      {r['probelab_one_layer_s'] / r['probelab_s']:.2f}x   "
          f"(blocks {mid}..{L - 1}, the final norm and the LM head skipped)")
    print(f"bf16 probelab / bf16 bare HF (full logits):    {r['bf16_probelab_s'] / r['bf16_bare_full_s']:.2f}x")
    print(f"bf16 probelab / bf16 bare HF (logits_to_keep=1): {r['bf16_probelab_s'] / r['bf16_bare_keep1_s']:.2f}x   "
          f"(bf16 vs fp32 states: max relative error {r['bf16_max_rel_diff_vs_fp32']:.3f})")
    print(f"max |probelab - bare HF hidden_states| {r['max_diff_vs_bare']:.1e}")
    if "cold_load_s" in r:
        print(f"cold load from cache (fresh process): {r['cold_load_s']:.2f} s")
    print(f"load average: {load_before:.2f} before, {r['load_after']:.2f} after")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=1)
    return r


if __name__ == "__main__":
    main()
