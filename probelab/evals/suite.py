"""The three numbers a continual-learning run reports: new-skill accuracy and two retention metrics."""
from __future__ import annotations

import time
from dataclasses import dataclass

from ..data.examples import Example
from ..data.mmlu import MCItem, mmlu_items
from ..data.wiki import wiki_mc_items, wiki_split
from .accuracy import task_accuracy
from .multiple_choice import MC_CHANCE, mc_accuracy
from .perplexity import perplexity


@dataclass
class EvalSuite:
    skill: list[Example]  # held-out problems of the new skill (never trained on)
    wiki: list[str]  # held-out Wikipedia intros
    mmlu: list[MCItem]
    wiki_mc: list[MCItem]
    cfg: object  # probelab.train.config.EvalCfg

    @classmethod
    def build(cls, skill_eval: list[Example], cfg, seed: int = 0) -> "EvalSuite":
        _, wiki_eval = wiki_split(n_eval=cfg.wiki_n, n_train=0, seed=seed) if cfg.wiki_n else ([], [])
        mmlu = mmlu_items(cfg.mmlu_n, seed=seed, max_chars=cfg.mmlu_max_chars) if cfg.mmlu_n else []
        wmc = wiki_mc_items(cfg.wiki_mc_n, seed=seed, n_eval_intros=cfg.wiki_n) if cfg.wiki_mc_n else []
        return cls(skill_eval[: cfg.skill_n], wiki_eval, mmlu, wmc, cfg)

    def run(self, model, tok) -> dict:
        import dataclasses

        from ..models.devices import input_device, use_bf16

        c, out, t0 = self.cfg, {}, time.perf_counter()
        c = dataclasses.replace(c, bf16=use_bf16(c.bf16, input_device(model)))  # "auto": bf16 where it is native
        if self.skill:
            out["skill_acc"] = task_accuracy(model, tok, self.skill, c.max_new_tokens, c.batch_size, c.bf16).accuracy
        if self.wiki:
            out["wiki_ppl"] = perplexity(model, tok, self.wiki, c.wiki_max_len, max(1, c.batch_size // 2), c.bf16).value
        if self.mmlu:
            out["mmlu_acc"] = mc_accuracy(model, tok, self.mmlu, c.mmlu_format, c.batch_size, c.bf16).accuracy
            out["mmlu_chance"] = MC_CHANCE
        if self.wiki_mc:
            out["wiki_mc_acc"] = mc_accuracy(model, tok, self.wiki_mc, "cloze", c.batch_size, c.bf16).accuracy
        out["eval_seconds"] = round(time.perf_counter() - t0, 1)
        model.train()
        return out
