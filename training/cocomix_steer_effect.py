"""How much steering a CoCoMix student by a concept changes it: TopK membership and next-token KL.

    python training/cocomix_steer_effect.py runs/cocomix_cpu/cocomix/final --concepts 907 504 647

For each concept and factor, on held-out Wikipedia intros (the SAE's held-out articles): the share
of real token positions whose TopK contains the concept, and the mean KL divergence of the steered
next-token distribution from the unsteered one.
"""
from __future__ import annotations

import argparse

import torch


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--concepts", type=int, nargs="+", required=True)
    p.add_argument("--factors", type=float, nargs="+", default=[1.0, 5.0, 10.0, -10.0])
    p.add_argument("--texts", type=int, default=16)
    p.add_argument("--max-length", type=int, default=64)
    args = p.parse_args()
    torch.set_num_threads(1)

    from probelab.models import load_model
    from probelab.sae.corpus import wiki_texts

    m, tok = load_model(args.model)
    texts = wiki_texts(n_heldout=500)[1][: args.texts]
    enc = tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=args.max_length)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    real = mask.bool()
    with torch.no_grad():
        lp0 = m(ids, attention_mask=mask).logits.float().log_softmax(-1)
        print("| concept | factor | positions with it in TopK | mean KL(steered || unsteered), nats |")
        print("|---:|---:|---:|---:|")
        for c in args.concepts:
            for f in args.factors:
                with m.steer({c: f}):
                    o = m(ids, attention_mask=mask)
                frac = (o.concept_ids == c).any(-1)[real].float().mean().item()
                lp = o.logits.float().log_softmax(-1)
                kl = (lp.exp() * (lp - lp0)).sum(-1)[real].mean().item()
                print(f"| {c} | {f:g} | {frac:.1%} | {kl:.3f} |")


if __name__ == "__main__":
    main()
