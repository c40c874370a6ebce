"""Training-step throughput: CoCoMix vs the width-matched NTP baseline, and the teacher's labelling cost.

    flock /tmp/probelab-heavy.lock .venv/bin/python bench/cocomix_step.py [--config training/configs/cocomix_cpu.yaml]

Both students come from the same config (CoCoMix, and the NTP model widened to CoCoMix's active
parameter count). Each timed step is a full optimiser step (forward, backward, AdamW) under bf16
autocast on one batch; CoCoMix uses precomputed (cached) concept labels, as the CPU config does.
Steps of the two models alternate so that load from other processes hits both alike; the medians
are compared. Then the teacher (SmolLM2-135M + the default SAE, or a random SAE of the same shape
with ``--random-sae``) labels one batch, which is what on-the-fly labelling would add to each step.
Only ratios measured in this one run are meaningful; absolute tokens/s depend on the machine load.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch


def timed_step(model, opt, ids, labels) -> float:
    from probelab.train.cocomix import compute_loss

    t = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _, _ = compute_loss(model, ids, labels)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--config", default="cocomix_cpu", help="a CoCoMix training config (file or packaged name)")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--label-batch", type=int, default=8)
    p.add_argument("--sae", help="teacher SAE (default: the config's teacher.sae)")
    p.add_argument("--random-sae", action="store_true", help="random 576x4608 SAE instead of a trained one")
    p.add_argument("--skip-teacher", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(2)

    from probelab.models import load_model
    from probelab.train.cocomix import build_model, make_optimizer
    from probelab.train.config import load_config

    cfg = load_config(args.config, ["run.recipe=cocomix"])
    _, tok = load_model(cfg.data.tokenizer)
    n_concepts = cfg.teacher.n_concepts or 4608  # the SAE width C (default SAE: 2304)
    T = cfg.data.block_size
    models = {}
    for mode in ("cocomix", "ntp"):
        m = build_model(cfg, tok, n_concepts, kind=mode).train()
        models[mode] = (m, make_optimizer(m, cfg.train))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, len(tok), (args.batch, T), generator=g)
    labels = torch.randint(0, n_concepts, (args.batch, T, cfg.teacher.k_attr), generator=g)
    times = {"cocomix": [], "ntp": []}
    for i in range(args.steps + 1):  # first round is warm-up
        for mode in ("cocomix", "ntp") if i % 2 == 0 else ("ntp", "cocomix"):
            m, opt = models[mode]
            dt = timed_step(m, opt, ids, labels if mode == "cocomix" else None)
            if i:
                times[mode].append(dt)
    tokens = args.batch * T
    med = {k: statistics.median(v) for k, v in times.items()}
    params = {k: sum(p.numel() for p in models[k][0].parameters()) for k in models}
    print(f"batch {args.batch}x{T} = {tokens} tokens, {args.steps} timed steps each, bf16 autocast, 2 threads")
    for k in ("ntp", "cocomix"):
        print(f"  {k:8s} params {params[k] / 1e6:6.2f}M (hidden {models[k][0].config.hidden_size})  "
              f"median step {med[k]:.3f}s  {tokens / med[k]:8.0f} tok/s")
    print(f"CoCoMix step / NTP step (cached labels): {med['cocomix'] / med['ntp']:.2f}x  (target <= 1.6x)")
    if args.skip_teacher:
        return

    from probelab.sae import ConceptLabeler

    teacher, _ = load_model(cfg.teacher.model)
    if args.random_sae:
        from probelab.sae.tiny import tiny_sae

        sae, which = tiny_sae(d_in=576, d_sae=4608, k=32, hook_name="model.layers.12"), "random 576x4608 SAE"
    else:
        from probelab.sae import load_sae

        name = args.sae or cfg.teacher.sae
        sae, which = load_sae(name), f"SAE {name}"
    lids = ids[: args.label_batch]
    res = {}
    for bf16 in (False, True):
        lab = ConceptLabeler(teacher, sae, k_attr=cfg.teacher.k_attr, variant=cfg.teacher.variant,
                             batch_size=args.label_batch, autocast=torch.bfloat16 if bf16 else None)
        lab(lids[:1, :16])  # warm-up
        t = time.perf_counter()
        lab(lids, torch.ones_like(lids))
        res[bf16] = lids.numel() / (time.perf_counter() - t)
    print(f"teacher labels ({cfg.teacher.model} + {which}, variant {cfg.teacher.variant}): "
          f"fp32 {res[False]:.0f} tok/s, bf16 autocast {res[True]:.0f} tok/s")
    step_tps = tokens / med["cocomix"]
    print(f"on-the-fly labelling would make a CoCoMix step {1 + step_tps / res[True]:.1f}x slower "
          f"(labelling = {step_tps / res[True]:.1f}x the student step per token); cached labels cost this once")


if __name__ == "__main__":
    main()
