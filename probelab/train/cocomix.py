"""Train a CoCoMix student, or its width-matched next-token-prediction (NTP) baseline.

    probelab train --config cocomix_cpu                                   # method.name: cocomix
    probelab train --config cocomix_cpu --set method.name=ntp             # the baseline
    python -m probelab.train.cocomix --config training/configs/cocomix_cpu.yaml --mode ntp
    accelerate launch --config_file training/configs/accelerate_fsdp.yaml -m probelab.train.cocomix \\
        --config cocomix_69m

The same stack as continual SFT (:mod:`probelab.train.csft`): one config system
(``run.recipe: cocomix``, defaults explained in ``probelab/train/config.py``), the run-folder rules
and error handling of ``probelab/train/run.py``, checkpoints of ``probelab/train/checkpoint.py``,
the LR schedule of ``probelab/train/schedule.py``, the metric logs of ``probelab/train/curves.py``
and the deterministic batch order of ``probelab/train/batches.py``. What it does, top to bottom:

1. tokenizes the corpus and packs it into blocks of ``data.block_size`` tokens (train / held-out val);
2. (CoCoMix only) gets teacher concept labels: the top ``teacher.k_attr`` SAE latents by attribution
   score per token, *precomputed once and cached* (``teacher.labels: cached``) or computed per batch
   (``on_the_fly``); see ``probelab/models/cocomix/labels.py`` for why cached is the CPU default;
3. builds the student: a Llama-family CoCoMix model, or a plain Llama whose hidden size is raised
   until its parameter count matches CoCoMix's active parameters (``probelab.models.cocomix.sizing``);
4. trains with AdamW + the shared warmup/cosine schedule under bf16 autocast (Accelerate: CPU, DDP or
   FSDP), logs losses to ``metrics.jsonl/.csv`` and validation perplexity every ``eval.every`` steps to
   ``evals.jsonl/.csv``, checkpoints every ``train.checkpoint_every`` steps, resumes when restarted;
5. saves the final model (only if every tensor is finite) as ``final/``, an HF folder that
   ``probelab.load_model`` reads, and ``summary.json`` (with the compression-weight statistics).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import signal
import sys
import time
from pathlib import Path

import torch

from ..errors import ProbelabError


# ----------------------------------------------------------------------------------------------
# Data: packed token blocks. Offline text fits in memory; OpenWebText streams (see StreamBlocks).
def pack(texts, tok, block_size: int, max_tokens: int) -> torch.Tensor:
    """Concatenate tokenized texts (EOS between them) and cut ``[N, block_size]`` blocks."""
    ids: list[int] = []
    for text in texts:
        ids.extend(tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
        if len(ids) >= max_tokens:
            break
    n = min(len(ids), max_tokens) // block_size
    return torch.tensor(ids[: n * block_size], dtype=torch.long).view(n, block_size)


class StreamBlocks:
    """Global batches packed on the fly from a text stream (OpenWebText); resuming skips consumed batches."""

    def __init__(self, texts, tok, block_size: int, batch_size: int):
        self.texts, self.tok, self.block_size, self.batch_size = iter(texts), tok, block_size, batch_size
        self.buffer: list[int] = []

    def next_batch(self) -> torch.Tensor:
        need = self.block_size * self.batch_size
        while len(self.buffer) < need:
            self.buffer.extend(self.tok(next(self.texts), add_special_tokens=False)["input_ids"]
                               + [self.tok.eos_token_id])
        out, self.buffer = self.buffer[:need], self.buffer[need:]
        return torch.tensor(out, dtype=torch.long).view(self.batch_size, self.block_size)


def corpus(cfg, tok):
    """``(train texts, val texts)``: offline wiki split by article, or OpenWebText (train stream, val head)."""
    d = cfg.data
    if d.source == "wiki":
        # the SAE's own held-out articles: validation text unseen by the student *and* the SAE
        from ..sae.corpus import wiki_texts

        return wiki_texts(n_heldout=d.val_texts, seed=d.split_seed)
    import datasets

    from ..paths import network_allowed

    if not network_allowed():
        raise ProbelabError("data.source=openwebtext needs the network; set PROBELAB_ALLOW_NETWORK=1")
    ds = datasets.load_dataset("Skylion007/openwebtext", split="train", streaming=True)
    ds = ds.shuffle(seed=d.split_seed, buffer_size=10_000)
    val = [r["text"] for r in ds.take(d.val_texts)]
    train = (r["text"] for r in ds.skip(d.val_texts))
    return train, val


# ----------------------------------------------------------------------------------------------
# Teacher: labeler (frozen LM + SAE) and the cached labels.
def load_teacher_sae(cfg, device):
    """The SAE whose latents are the concepts (its width C sizes both students)."""
    from ..sae import load_sae

    return load_sae(cfg.teacher.sae, device=str(device))


def make_labeler(cfg, sae, device, student_tok):
    """Frozen teacher LM + SAE -> top-``k_attr`` attribution labels per token (probelab.sae)."""
    from ..models import load_model
    from ..sae import ConceptLabeler

    t = cfg.teacher
    teacher, teacher_tok = load_model(t.model)
    if teacher_tok.get_vocab() != student_tok.get_vocab():  # labels are per token id: vocabularies must agree
        raise ProbelabError(f"the student tokenizer ({cfg.data.tokenizer}) differs from the teacher's "
                            f"({t.model}); CoCoMix labels need the teacher's tokenizer")
    return ConceptLabeler(teacher.to(device), sae, k_attr=t.k_attr, variant=t.variant,
                          batch_size=t.label_batch_size, autocast=torch.bfloat16 if teacher_bf16(cfg) else None)


def teacher_bf16(cfg) -> bool:
    """``teacher.autocast_bf16`` resolved (``auto``: bf16 where it is native on the teacher's device)."""
    from ..models.devices import use_bf16

    return use_bf16(cfg.teacher.autocast_bf16, "cuda" if torch.cuda.is_available() else "cpu")


def provenance(cfg, n_concepts: int) -> dict:
    """What made a label cache (both selections share one: they come from the same teacher pass)."""
    t = cfg.teacher
    return {"teacher": str(t.model), "sae": str(t.sae), "variant": t.variant, "k_attr": t.k_attr,
            "n_concepts": n_concepts, "bf16": teacher_bf16(cfg)}


def label_batch(labeler, ids: torch.Tensor, select: str) -> torch.Tensor:
    """Labels of one batch computed on the fly, by ``select`` (attribution | activation)."""
    if select == "attribution":
        return labeler(ids)
    return labeler.label_sets(ids)[select]


def cached_labels(cfg, labeler, n_concepts, blocks, accelerator) -> torch.Tensor:
    """Labels for every training block, computed by the main process once and read by all."""
    from ..models.cocomix.labels import label_blocks, tokens_digest
    from ..paths import cache_dir

    prov = provenance(cfg, n_concepts)
    key = hashlib.sha256(json.dumps([prov, tokens_digest(blocks)], sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(cfg.teacher.cache_dir or cache_dir() / "cocomix_labels" / key)
    kw = dict(provenance=prov, batch_size=cfg.teacher.label_batch_size, device=str(accelerator.device),
              select=cfg.teacher.select)
    if accelerator.is_main_process:
        t0 = time.time()
        labels = label_blocks(labeler, blocks, folder, progress=cfg.run.progress, **kw)
        accelerator.print(f"teacher labels: {blocks.numel()} tokens ready in {time.time() - t0:.0f}s ({folder})")
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        labels = label_blocks(labeler, blocks, folder, progress=False, **kw)  # reads the shards
    return labels


# ----------------------------------------------------------------------------------------------
# Models: the CoCoMix student and the width-matched NTP baseline.
def build_model(cfg, tok, n_concepts: int, kind: str | None = None, vocab=None):
    """The student for ``kind`` (default ``cfg.method.name``): ``cocomix`` or the matched ``ntp`` Llama;
    over ``vocab`` (a :class:`~probelab.models.cocomix.vocab.ReducedVocab`) when given, else ``tok``'s ids."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from ..models.cocomix import CoCoMixConfig, CoCoMixForCausalLM, matched_ntp_config

    s = dict(vars(cfg.student))
    cc = CoCoMixConfig(insert_layer=s.pop("insert_layer"), topk=s.pop("topk"), lam=s.pop("lam"),
                       n_concepts=n_concepts, k_attr=cfg.teacher.k_attr,
                       teacher={**provenance(cfg, n_concepts), "select": cfg.teacher.select})
    ids = (lambda i: i) if vocab is None else vocab.map_id
    llama = LlamaConfig(vocab_size=len(tok) if vocab is None else vocab.size, bos_token_id=ids(tok.bos_token_id),
                        eos_token_id=ids(tok.eos_token_id), pad_token_id=ids(tok.pad_token_id),
                        max_position_embeddings=cfg.data.block_size * 8, **s)
    llama._attn_implementation = "sdpa"
    torch.manual_seed(cfg.run.seed)
    if (kind or cfg.method.name) == "cocomix":
        return CoCoMixForCausalLM.from_configs(llama, cc)
    return LlamaForCausalLM(matched_ntp_config(llama, cc))


def compute_loss(model, ids, concept_labels):
    """``(loss to optimise, NTP loss, concept loss)`` for either kind of model."""
    from ..models.cocomix.loss import ntp_loss

    if concept_labels is not None:  # CoCoMix
        out = model(ids, labels=ids, concept_labels=concept_labels)
        return out.loss, out.ntp_loss, out.concept_loss
    logits = model(input_ids=ids).logits
    loss = ntp_loss(logits, ids)
    return loss, loss, torch.zeros((), device=ids.device)


def make_optimizer(model, t):
    """AdamW with ``train.weight_decay`` on matrices only (not biases, norms, pre_bias), as in the paper."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": t.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=t.lr, betas=tuple(t.betas))


@torch.no_grad()
def validation_ppl(model, val_blocks, batch_size, accelerator) -> float:
    """exp(mean next-token CE) over the held-out blocks, sharded across processes."""
    from ..models.cocomix.loss import ntp_loss

    model.eval()
    total = torch.zeros(2, device=accelerator.device)
    mine = val_blocks[accelerator.process_index::accelerator.num_processes]
    for i in range(0, mine.shape[0], batch_size):
        ids = mine[i:i + batch_size].to(accelerator.device)
        with accelerator.autocast():
            out = model(input_ids=ids)
        n = ids.shape[0] * (ids.shape[1] - 1)
        total += torch.stack([ntp_loss(out.logits, ids).float() * n, torch.tensor(float(n), device=ids.device)])
    total = accelerator.reduce(total, "sum")
    model.train()
    return math.exp(float(total[0] / total[1]))


@torch.no_grad()
def compression_stats(model, val_blocks, batch_size: int) -> dict:
    """Paper Fig. 6c: how sparse the compression weight ``W_comp [d, C]`` is, and which concepts are used.

    Per concept column: its L2 norm (at init every column has norm ~ initializer_range * sqrt(d));
    on the validation blocks: how often each concept is among the TopK that get compressed.
    """
    comp = getattr(model, "compressor", None)
    if comp is None:
        return {}
    model.eval()
    counts = torch.zeros(model.cocomix.n_concepts)
    for i in range(0, val_blocks.shape[0], batch_size):
        ids = val_blocks[i:i + batch_size].to(next(model.parameters()).device)
        counts += torch.bincount(model(ids).concept_ids.flatten().cpu(), minlength=counts.numel()).float()
    norms = comp.column_norms().cpu()
    init = model.config.initializer_range * model.config.hidden_size ** 0.5
    q = torch.quantile(norms, torch.tensor([0.1, 0.5, 0.9, 0.99])).tolist()
    used = counts > 0
    share = counts.sort(descending=True).values
    return {"columns": int(norms.numel()), "init_column_norm": round(init, 4),
            "column_norm_p10_p50_p90_p99": [round(x, 4) for x in q], "column_norm_max": round(float(norms.max()), 4),
            "frac_columns_below_half_init": round(float((norms < 0.5 * init).float().mean()), 4),
            "frac_columns_above_2x_init": round(float((norms > 2 * init).float().mean()), 4),
            "frac_concepts_chosen_on_val": round(float(used.float().mean()), 4),
            "top50_concepts_share_of_choices": round(float(share[:50].sum() / share.sum()), 4),
            "mean_norm_chosen_vs_never": [round(float(norms[used].mean()), 4),
                                          round(float(norms[~used].mean()), 4) if (~used).any() else None]}


# ----------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict:
    # 0. configuration, processes, run folder (shared with probelab.train.csft)
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    from ..models import load_model
    from ..paths import atomic_dir, atomic_write_text
    from .config import load_config
    from .run import check_finite_model, check_params_finite, finished_summary, open_run, parse_args, set_threads

    args = parse_args(argv, "probelab.train.cocomix", __doc__.split("\n")[0], legacy_cocomix=True)
    cfg = load_config(args.config, ["run.recipe=cocomix", *args.overrides])  # this loop's recipe, whatever the file says
    t, d = cfg.train, cfg.data
    from .run import resolve_precision

    acc = Accelerator(mixed_precision=resolve_precision(t.precision), cpu=not torch.cuda.is_available())
    is_main, world, rank = acc.is_main_process, acc.num_processes, acc.process_index
    distributed = acc.distributed_type.value not in {"NO"}
    if acc.device.type == "cpu":
        set_threads(world)
    torch.manual_seed(cfg.run.seed)
    random.seed(cfg.run.seed)
    start = open_run(cfg, args.start_over, is_main=is_main)
    out, ckpt_root = start.out, start.out / "checkpoints"
    acc.wait_for_everyone()
    if start.finished:
        return finished_summary(start, cfg, acc)
    global_batch = t.micro_batch * t.grad_accum * world

    # 1. data
    _, tok = load_model(d.tokenizer)  # a registered name or folder (the teacher's tokenizer)
    train_texts, val_texts = corpus(cfg, tok)
    val_blocks = pack(val_texts, tok, d.block_size, d.val_tokens)
    streaming = d.source != "wiki"
    if streaming:
        stream = StreamBlocks(train_texts, tok, d.block_size, global_batch)
    else:
        from .batches import BatchSchedule

        blocks = pack(train_texts, tok, d.block_size, d.train_tokens)
        if blocks.shape[0] < global_batch:
            raise ProbelabError(f"{blocks.shape[0]} training blocks cannot fill a global batch of {global_batch} "
                                "(train.micro_batch x train.grad_accum x processes); raise data.train_tokens")
        order = BatchSchedule(blocks.shape[0], t.micro_batch, t.grad_accum, world, cfg.run.seed)
    acc.print(f"data: {'stream' if streaming else blocks.numel()} train tokens, "
              f"{val_blocks.numel()} val tokens, block {d.block_size}, global batch {global_batch}")
    vocab = None
    teacher_blocks = None if streaming else blocks  # the teacher labels the original ids
    if d.vocab_size:
        from ..models.cocomix.vocab import ReducedVocab

        vocab = ReducedVocab.from_blocks(blocks, d.vocab_size, keep=(tok.eos_token_id, tok.bos_token_id, tok.pad_token_id))
        vocab_info = {"size": vocab.size, "train_coverage": round(vocab.coverage(blocks), 4),
                      "val_coverage": round(vocab.coverage(val_blocks), 4)}
        blocks, val_blocks = vocab.encode(blocks), vocab.encode(val_blocks)
        acc.print(f"vocabulary: the {vocab.size - 1} most frequent training ids + 1 other id; they cover "
                  f"{vocab_info['train_coverage']:.1%} of train and {vocab_info['val_coverage']:.1%} of val tokens")

    # 2. teacher labels (CoCoMix only)
    n_concepts = cfg.teacher.n_concepts  # the NTP baseline needs it too: it is sized to match CoCoMix
    if cfg.method.name == "cocomix" or n_concepts is None:
        sae = load_teacher_sae(cfg, acc.device)
        if n_concepts is not None and n_concepts != int(sae.cfg.d_sae):
            raise ProbelabError(f"teacher.n_concepts={n_concepts} but the SAE has {sae.cfg.d_sae} latents")
        n_concepts = int(sae.cfg.d_sae)
    labeler, labels = None, None
    if cfg.method.name == "cocomix":
        labeler = make_labeler(cfg, sae, acc.device, tok)
        if cfg.teacher.labels == "cached":
            if streaming:
                raise ProbelabError("cached labels need a fixed dataset; use teacher.labels=on_the_fly")
            labels = cached_labels(cfg, labeler, n_concepts, teacher_blocks, acc)
            labeler = None  # the teacher is not needed any more

    # 3. model, optimiser, schedule, resume
    model = build_model(cfg, tok, n_concepts, vocab=vocab)
    n_params = sum(p.numel() for p in model.parameters())
    acc.print(f"model: {cfg.method.name}, {n_params / 1e6:.2f}M parameters "
              f"(hidden {model.config.hidden_size}, {model.config.num_hidden_layers} layers)")
    optimizer = make_optimizer(model, t)
    model, optimizer = acc.prepare(model, optimizer)
    start_step, elapsed = 0, 0.0
    if start.resume_from is not None:
        from .checkpoint import load_checkpoint

        state = load_checkpoint(start.resume_from, model, optimizer, distributed)
        start_step, elapsed = state["step"], float(state.get("elapsed_s", 0.0))
        acc.print(f"resumed from {start.resume_from} at step {start_step}")
    from .schedule import current_lr, make_scheduler

    lr_sched = make_scheduler(optimizer, t, start_step)
    if streaming:
        for _ in range(start_step):  # a stream cannot seek: skip the batches already trained on
            stream.next_batch()

    # 4. logs
    from .curves import MetricLog, plot_curves, read_jsonl

    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.json", json.dumps(cfg.to_dict(), indent=1))
        if vocab is not None:
            vocab.save(out)  # the student's ids -> the tokenizer's (read with ReducedVocab.load(run folder))
    keep_rows = start_step if start.resume_from is not None else None
    metrics = MetricLog(out / "metrics.jsonl", keep_rows) if is_main else None
    evals = MetricLog(out / "evals.jsonl", keep_rows) if is_main else None
    t0 = time.time() - elapsed  # training wall time, continued across resumes

    def tokens_at(step: int) -> int:
        return step * global_batch * d.block_size

    def evaluate(step: int) -> float:
        ppl = round(validation_ppl(model, val_blocks, cfg.eval.batch_size, acc), 3)
        if is_main:
            evals.write({"step": step, "tokens": tokens_at(step), "val_ppl": ppl})
        return ppl

    def checkpoint(step: int) -> None:
        from .checkpoint import save_checkpoint

        extra = {"fingerprint": cfg.fingerprint(), "identity": cfg.identity(), "run_id": start.run_id,
                 "elapsed_s": round(time.time() - t0, 2), "tokens": tokens_at(step)}
        save_checkpoint(ckpt_root, step, model, optimizer, extra, is_main, distributed, t.keep_checkpoints)
        acc.wait_for_everyone()

    if start_step == 0 and cfg.eval.at_start:
        evaluate(0)

    # 5. train
    model.train()
    bar = tqdm(range(start_step, t.steps), initial=start_step, total=t.steps, desc=cfg.method.name,
               disable=not (cfg.run.progress and is_main), dynamic_ncols=True)
    stopped = False
    for step in bar:
        if streaming:  # the global batch, cut like BatchSchedule cuts one: micro-batch a, then every world-th row
            batch = stream.next_batch()
            span = t.micro_batch * world
            micro = [batch[a * span:(a + 1) * span][rank::world] for a in range(t.grad_accum)]
            concepts = [label_batch(labeler, m.to(acc.device), cfg.teacher.select) if labeler is not None else None
                        for m in micro]
        else:
            idx = order.micro_batches(step, rank)
            micro = [blocks[i] for i in idx]
            if labels is not None:
                concepts = [labels[i].long() for i in idx]
            elif labeler is not None:
                concepts = [label_batch(labeler, teacher_blocks[i].to(acc.device), cfg.teacher.select) for i in idx]
            else:
                concepts = [None] * len(micro)
        lr = current_lr(optimizer)
        parts = torch.zeros(3, device=acc.device)
        for a, (ids, c) in enumerate(zip(micro, concepts)):
            ids = ids.to(acc.device)
            c = c.to(acc.device) if c is not None else None
            sync = contextlib.nullcontext() if a == len(micro) - 1 else acc.no_sync(model)
            with sync, acc.autocast():
                loss, ntp, closs = compute_loss(model, ids, c)
                acc.backward(loss / len(micro))
            parts += torch.stack([loss.detach(), ntp.detach(), closs.detach()]).float() / len(micro)
        if world > 1:  # the mean over processes: every rank logs (and stops on NaN) alike
            parts = acc.reduce(parts, "mean")
        loss_v, ntp_v, closs_v = (float(x) for x in parts)
        if not math.isfinite(loss_v):
            raise ProbelabError(f"loss is {loss_v} at step {step + 1} (ntp={ntp_v}, concept={closs_v}); stopping; "
                                "lower train.lr or check the data")
        grad_norm = acc.clip_grad_norm_(model.parameters(), t.grad_clip) if t.grad_clip > 0 else None
        optimizer.step()
        lr_sched.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        check_params_finite(model, done, acc)
        if is_main and (done % t.log_every == 0 or done == t.steps):
            metrics.write({"step": done, "tokens": tokens_at(done), "loss": round(loss_v, 4), "ntp_loss": round(ntp_v, 4),
                           "concept_loss": round(closs_v, 4), "lr": lr,
                           "grad_norm": None if grad_norm is None else float(grad_norm),
                           "seconds": round(time.time() - t0, 1)})
        if (cfg.eval.every and done % cfg.eval.every == 0) or done == t.steps:
            bar.set_postfix(loss=round(loss_v, 4), val_ppl=evaluate(done))
        stopped = bool(cfg.run.stop_after) and done - start_step >= cfg.run.stop_after and done < t.steps
        if done < t.steps and (stopped or (t.checkpoint_every and done % t.checkpoint_every == 0)):
            checkpoint(done)
        if cfg.run.kill_at_step and done == cfg.run.kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)  # testing aid: die the hard way, no cleanup
        if stopped:
            break
    bar.close()
    if stopped:
        if is_main:
            metrics.to_csv()
            evals.to_csv()
        acc.print(f"[train] stopped after step {done} (run.stop_after={cfg.run.stop_after}); run again to resume")
        acc.wait_for_everyone()
        acc.end_training()
        return {}

    # 6. final model folder (+ compression-weight statistics for CoCoMix), only from finite weights
    last = max(start_step, t.steps)
    if start_step < t.steps:
        checkpoint(t.steps)
    else:  # the checkpoint reached train.steps before final/ was written (a kill in between)
        evaluate(last)
    unwrapped = acc.unwrap_model(model)
    summary = {}
    if is_main:
        from ..models.cocomix import save_cocomix

        check_finite_model(unwrapped, last)
        if cfg.method.name == "cocomix":
            save_cocomix(unwrapped, out / "final", tok)
        else:
            with atomic_dir(out / "final", overwrite=True, kind="model") as tmp:
                unwrapped.save_pretrained(tmp)
                tok.save_pretrained(tmp)
        metrics.to_csv()
        evals.to_csv()
        plot_curves({cfg.method.name: read_jsonl(out / "metrics.jsonl")}, ["loss", "ntp_loss", "concept_loss", "lr"],
                    out / "curves.html", f"{out.name}: training loss")
        summary = {"recipe": "cocomix", "method": cfg.method.name, "mode": cfg.method.name, "steps": t.steps,
                   "seed": cfg.run.seed, "parameters": n_params, "tokens_seen": tokens_at(last),
                   "hidden_size": unwrapped.config.hidden_size,
                   "vocab": vocab_info if vocab is not None else {"size": len(tok)},
                   "embedding_parameters": int(unwrapped.get_input_embeddings().weight.numel()),
                   "label_select": cfg.teacher.select if cfg.method.name == "cocomix" else None,
                   "compression": compression_stats(unwrapped, val_blocks, cfg.eval.batch_size),
                   "precision": str(acc.mixed_precision), "torch_threads": torch.get_num_threads(),
                   "teacher_bf16": teacher_bf16(cfg) if cfg.method.name == "cocomix" else None,
                   "train_seconds": round(time.time() - t0, 1), "evals": read_jsonl(out / "evals.jsonl")}
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
        print(f"[train] done: {max(0, t.steps - start_step)} steps (step {last} of {t.steps}); wrote {out}", flush=True)
    acc.wait_for_everyone()
    acc.end_training()
    return summary


if __name__ == "__main__":
    from .run import entry

    sys.exit(entry(main))
