"""Continual SFT (and continual pretraining) of a pretrained decoder, five ways, in one loop.

    probelab train --config cpu-smoke                                   # a packaged config, by name
    python -m probelab.train.csft --config training/configs/cpu-smoke.yaml
    accelerate launch -m probelab.train.csft --config cpu-smoke
    accelerate launch --multi_gpu --num_processes 2 -m probelab.train.csft --config ...   # also on CPU (gloo)
    accelerate launch --config_file training/accelerate/fsdp.yaml -m probelab.train.csft \\
        --config gpu-llama3.1-8b-openmath2

Methods (``method.name``): ``full`` fine-tune, ``partial`` (1 of every k blocks), ``stack``
(LLaMA-Pro), ``hybrid`` and ``control`` (Control LLM, any interpolator / divergence loss).
Every setting lives in the config file; ``--set section.key=value`` overrides one. The defaults
and why they are what they are: ``probelab/train/config.py``. The run-folder rules (resume,
``--start-over``, finished runs): ``probelab/train/run.py``.

Outputs under ``run.out_dir``: ``config.json``, ``metrics.jsonl/.csv`` (CE and divergence loss per
step), ``evals.jsonl/.csv`` (skill accuracy, Wikipedia perplexity, MMLU accuracy), ``curves.html``,
``checkpoints/step-N`` (resumable; atomic; safetensors + JSON), ``final`` (a model folder that
``probelab.load_model`` reads; written only when every tensor is finite) and ``summary.json``.
"""
from __future__ import annotations

import json
import math
import os
import random
import signal
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from ..errors import ProbelabError
from ..paths import atomic_dir, atomic_write_text


def main(argv: list[str] | None = None) -> dict:
    # ---------------------------------------------------------------- 1. configuration and run folder
    from .config import load_config
    from .run import finished_summary, open_run, parse_args

    args = parse_args(argv, "probelab.train.csft", __doc__.split("\n")[0])
    cfg = load_config(args.config, args.overrides)
    if cfg.run.recipe != "csft":
        raise ProbelabError(f"this config is for run.recipe={cfg.run.recipe}; run it with `probelab train` "
                            f"or python -m probelab.train.{cfg.run.recipe}")

    # ---------------------------------------------------------------- 2. processes and precision
    # Accelerate decides single process / DDP / FSDP from how the script was launched.
    # bf16 autocast keeps master weights fp32 (the paper's recipe is bf16 mixed precision).
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    ddp = DistributedDataParallelKwargs(find_unused_parameters=cfg.method.name in {"control", "hybrid"})
    # cpu=True without CUDA makes processes started by torchrun (accelerate launch --multi_gpu)
    # form a gloo process group on CPU.
    from .run import resolve_precision

    precision = resolve_precision(cfg.train.precision)  # auto: bf16 where it is native, else fp32
    acc = Accelerator(mixed_precision=precision, kwargs_handlers=[ddp], cpu=not torch.cuda.is_available())
    is_main, world, rank = acc.is_main_process, acc.num_processes, acc.process_index
    distributed = acc.distributed_type.value not in {"NO"}
    if cfg.train.loss_chunk:
        from .lm_loss import check_chunking_supported

        check_chunking_supported(acc.distributed_type.value, getattr(acc.state.deepspeed_plugin, "zero_stage", None))
    if acc.device.type == "cpu":
        from .run import set_threads

        set_threads(world)
    torch.manual_seed(cfg.run.seed)
    random.seed(cfg.run.seed)

    # ---------------------------------------------------------------- 3. resume or start fresh
    # A new run needs an empty folder; a checkpointed run of the same config continues; a finished
    # run is left alone (probelab/train/run.py has the rules).
    start = open_run(cfg, args.start_over, is_main=is_main)
    out, ckpt_root = start.out, start.out / "checkpoints"
    acc.wait_for_everyone()
    if start.finished:
        return finished_summary(start, cfg, acc)

    # ---------------------------------------------------------------- 4. model and method
    # The base model is loaded in fp32; the method freezes / expands it (probelab/train/methods.py).
    from ..models import load_model
    from .methods import apply_method, count_params

    base, tok = load_model(cfg.model.name, allow_network=cfg.model.allow_network)
    # Attention kernel: on CPU, eager attention's backward beats SDPA's while its [batch, heads, T, T]
    # softmaxes stay small (probelab/models/attention.py). Set on the base: expanded copies share its
    # config and a Control LLM takes its setting over.
    from ..models.attention import choose_attention, switch_attention

    compute = torch.bfloat16 if precision == "bf16" else torch.float32
    attention = choose_attention(cfg.train.attention, base, acc.device, cfg.train.micro_batch, cfg.data.max_len,
                                 compute, extra_layers=cfg.method.num_expanded)
    if attention:
        switch_attention(base, attention)
    model = apply_method(base, cfg.method)
    n_train_params, n_params = count_params(model)
    if is_main:
        print(f"[train] {cfg.method.name}: {n_train_params:,} of {n_params:,} parameters trainable "
              f"({100 * n_train_params / n_params:.1f}%), {world} process(es) on {acc.device}, "
              f"{base.config._attn_implementation} attention", flush=True)

    # ---------------------------------------------------------------- 5. data
    # Skill tasks: train and eval sets come from one call that guarantees they never overlap.
    # Wiki: held-out intros for perplexity are excluded from the training text.
    from ..data import skill_task, wiki_split
    from ..data.sft import collate, encode

    skill_eval = []
    if cfg.data.source == "skill":
        train_ex, skill_eval = skill_task(cfg.data.task).split(cfg.data.n_train, max(cfg.eval.skill_n, 1), cfg.run.seed)
    elif cfg.data.source == "wiki":
        from ..data.examples import Example

        texts, _ = wiki_split(n_eval=cfg.eval.wiki_n, n_train=cfg.data.n_train, seed=cfg.run.seed)
        train_ex = [Example("", t) for t in texts]
    else:
        from ..data.online import load_online

        train_ex = load_online(cfg.data.task, cfg.data.n_train, allow_network=cfg.model.allow_network)
    rows = [encode(tok, ex, cfg.data.max_len, chat=cfg.data.chat) for ex in train_ex]
    rows = [r for r in rows if any(t != -100 for t in r["labels"][1:])]  # truncation can eat the response
    if not rows:
        raise ProbelabError(f"no training example keeps a response token within data.max_len={cfg.data.max_len}")

    from .batches import BatchSchedule

    sched = BatchSchedule(len(rows), cfg.train.micro_batch, cfg.train.grad_accum, world, cfg.run.seed)

    # ---------------------------------------------------------------- 6. optimizer and LR schedule
    # AdamW on the trainable parameters only. The schedule (linear warmup, cosine decay to
    # lr * min_lr_ratio) is torch's, rebuilt from the config on resume (probelab/train/schedule.py).
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.train.lr, betas=tuple(cfg.train.betas), weight_decay=cfg.train.weight_decay)
    model, opt = acc.prepare(model, opt)
    params = [p for p in model.parameters() if p.requires_grad]  # FSDP may re-wrap the parameters

    start_step = 0
    if start.resume_from is not None:
        from .checkpoint import load_checkpoint

        start_step = load_checkpoint(start.resume_from, model, opt, distributed)["step"]
        if is_main:
            print(f"[train] resumed from {start.resume_from} at step {start_step}", flush=True)
    from .schedule import current_lr, make_scheduler

    lr_sched = make_scheduler(opt, cfg.train, start_step)

    # ---------------------------------------------------------------- 7. logs and evaluation
    from ..evals.suite import EvalSuite
    from .curves import MetricLog, plot_curves, read_jsonl

    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.json", json.dumps(cfg.to_dict(), indent=1))
    keep_rows = start_step if start.resume_from is not None else None
    metrics = MetricLog(out / "metrics.jsonl", keep_rows) if is_main else None
    evals = MetricLog(out / "evals.jsonl", keep_rows) if is_main else None
    suite = EvalSuite.build(skill_eval, cfg.eval, cfg.run.seed) if is_main else None

    def evaluate(step: int) -> None:
        if is_main:
            parts = [f"{len(suite.skill)} skill problems"] * bool(suite.skill) + \
                [f"{len(suite.wiki)} intros' perplexity"] * bool(suite.wiki) + \
                [f"{len(suite.mmlu)} MMLU"] * bool(suite.mmlu) + [f"{len(suite.wiki_mc)} cloze"] * bool(suite.wiki_mc)
            print(f"[eval] step {step}: evaluating {', '.join(parts)}...", flush=True)  # seconds to minutes
            row = {"step": step, **suite.run(acc.unwrap_model(model), tok)}
            evals.write(row)
            print(f"[eval] step {step}: " + ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "step"), flush=True)
        acc.wait_for_everyone()

    def checkpoint(step: int) -> None:
        from .checkpoint import save_checkpoint

        extra = {"fingerprint": cfg.fingerprint(), "identity": cfg.identity(), "run_id": start.run_id,
                 "data_fingerprint": sched.fingerprint(step)}
        save_checkpoint(ckpt_root, step, model, opt, extra, is_main, distributed, cfg.train.keep_checkpoints)
        acc.wait_for_everyone()

    if start_step == 0 and cfg.eval.at_start:
        evaluate(0)

    # ---------------------------------------------------------------- 8. the training loop
    from tqdm.auto import tqdm

    from .lm_loss import causal_lm_loss
    from .run import check_params_finite

    model.train()
    bar = tqdm(range(start_step, cfg.train.steps), initial=start_step, total=cfg.train.steps,
               disable=not (is_main and cfg.run.progress), desc=cfg.method.name, dynamic_ncols=True)
    t_start, tokens_seen, stopped = time.perf_counter(), 0, False
    for step in bar:
        lr = current_lr(opt)
        ce_sum = div_sum = 0.0
        micro = sched.micro_batches(step, rank)
        for a, idx in enumerate(micro):
            batch = {k: v.to(acc.device) for k, v in collate([rows[i] for i in idx], tok.pad_token_id).items()}
            tokens_seen += int(batch["attention_mask"].sum())
            # no gradient all-reduce until the last micro-batch of the step
            sync = acc.no_sync(model) if a < len(micro) - 1 else nullcontext()
            with sync, acc.autocast():
                # loss_chunk > 0: the same CE without a [tokens, vocab] logits tensor
                out_, ce = causal_lm_loss(model, batch, cfg.train.loss_chunk)
                div = getattr(out_, "divergence_loss", None)
                div = torch.zeros((), device=ce.device) if div is None else div
                loss = (ce + div) / len(micro)
            acc.backward(loss)
            ce_sum += float(ce.detach()) / len(micro)
            div_sum += float(div.detach()) / len(micro)
        if world > 1:  # log the mean over processes; every rank sees the same value (and stops together on NaN)
            ce_sum, div_sum = acc.reduce(torch.tensor([ce_sum, div_sum], device=acc.device), "mean").tolist()
        if not math.isfinite(ce_sum + div_sum):
            raise ProbelabError(f"loss is {ce_sum + div_sum} at step {step + 1} (ce={ce_sum}, divergence={div_sum}); "
                                f"stopping; lower train.lr or check the data")
        grad_norm = acc.clip_grad_norm_(params, cfg.train.grad_clip) if cfg.train.grad_clip > 0 else None
        opt.step()
        lr_sched.step()
        opt.zero_grad(set_to_none=True)

        done = step + 1
        check_params_finite(model, done, acc)  # a diverged update is never checkpointed or saved
        if is_main and (done % cfg.train.log_every == 0 or done == cfg.train.steps):
            metrics.write({"step": done, "ce_loss": ce_sum, "divergence_loss": div_sum, "loss": ce_sum + div_sum,
                           "lr": lr, "grad_norm": None if grad_norm is None else float(grad_norm),
                           "data": sched.fingerprint(step), "seconds": round(time.perf_counter() - t_start, 2)})
            bar.set_postfix(ce=f"{ce_sum:.3f}", div=f"{div_sum:.2g}")
        stopped = bool(cfg.run.stop_after) and done - start_step >= cfg.run.stop_after and done < cfg.train.steps
        if done < cfg.train.steps and (stopped or (cfg.train.checkpoint_every and done % cfg.train.checkpoint_every == 0)):
            checkpoint(done)
        if cfg.eval.every and done % cfg.eval.every == 0 and done < cfg.train.steps:
            evaluate(done)
        if cfg.run.kill_at_step and done == cfg.run.kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)  # testing aid: die the hard way, no cleanup
        if stopped:
            break
    bar.close()
    elapsed = time.perf_counter() - t_start
    if stopped:
        if is_main:
            metrics.to_csv()
            evals.to_csv()
            print(f"[train] stopped after step {done} (run.stop_after={cfg.run.stop_after}); run again to resume",
                  flush=True)
        acc.wait_for_everyone()
        acc.end_training()
        return {}

    # ---------------------------------------------------------------- 9. final model, evals, curves
    # train.steps=0 is an evaluation-only run of the base model; a checkpoint already at train.steps
    # (killed before final/ was written) only needs the final phase.
    last = max(start_step, cfg.train.steps)
    if start_step < cfg.train.steps:
        checkpoint(cfg.train.steps)
    if cfg.train.steps > 0:
        evaluate(last)
        if is_main:
            from .run import check_finite_model

            final_model = acc.unwrap_model(model)
            check_finite_model(final_model, last)
            save_final(final_model, tok, out / "final", cfg)
    summary = {}
    if is_main:
        metrics.to_csv()
        evals.to_csv()
        plot_curves({cfg.method.name: read_jsonl(out / "metrics.jsonl")}, ["ce_loss", "divergence_loss", "lr"],
                    out / "curves.html", f"{out.name}: training loss")
        trained = max(0, cfg.train.steps - start_step)
        summary = {"recipe": "csft", "method": cfg.method.name, "steps": cfg.train.steps, "seconds": round(elapsed, 1),
                   "tokens_per_second": round(tokens_seen * world / max(elapsed, 1e-9), 1),
                   "trainable_params": n_train_params, "params": n_params, "seed": cfg.run.seed,
                   "evals": read_jsonl(out / "evals.jsonl")}
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
        print(f"[train] done: {trained} steps in {elapsed:.0f}s (step {last} of {cfg.train.steps}); wrote {out}",
              flush=True)
    acc.wait_for_everyone()
    acc.end_training()
    return summary


def save_final(model, tok, folder: Path, cfg) -> None:
    """A model folder ``probelab.load_model`` reads: Control LLM folders carry an ``expansion``
    block in config.json; full / partial fine-tunes are plain HF folders."""
    from ..models.control import ControlLLMForCausalLM, save_control

    if isinstance(model, ControlLLMForCausalLM):
        save_control(model, folder, tok)
        return
    with atomic_dir(folder, overwrite=True, kind="model") as tmp:  # a longer run of this folder replaces its final model
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "training.json").write_text(json.dumps({"method": cfg.method.name, "base": cfg.model.name,
                                                      "config": cfg.to_dict()}, indent=1))


if __name__ == "__main__":
    from .run import entry

    sys.exit(entry(main))
