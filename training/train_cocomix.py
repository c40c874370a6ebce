"""Train a CoCoMix student, or its width-matched next-token-prediction (NTP) baseline.

    python training/train_cocomix.py --config training/configs/cocomix_cpu.yaml --mode cocomix
    python training/train_cocomix.py --config training/configs/cocomix_cpu.yaml --mode ntp
    accelerate launch --config_file training/configs/accelerate_fsdp.yaml training/train_cocomix.py \
        --config training/configs/cocomix_69m.yaml --mode cocomix

One script, read top to bottom (nanoGPT spirit): defaults below, a YAML config file on top, then
``--set key.sub=value`` overrides. What it does:

1. tokenizes the corpus and packs it into blocks of ``block_size`` tokens (train / held-out val);
2. (CoCoMix only) gets teacher concept labels: the top ``k_attr`` SAE latents by attribution score
   per token, *precomputed once and cached* (``teacher.labels: cached``) or computed per batch
   (``on_the_fly``); see ``probelab/models/cocomix/labels.py`` for why cached is the CPU default;
3. builds the student: a Llama-family CoCoMix model, or a plain Llama whose hidden size is raised
   until its parameter count matches CoCoMix's active parameters (``probelab.models.cocomix.sizing``);
4. trains with AdamW + cosine schedule under bf16 autocast (Accelerate: CPU, DDP or FSDP), logs
   validation perplexity every ``eval_every`` steps to ``metrics.csv``, checkpoints atomically in
   safetensors every ``save_every`` steps, resumes from the last checkpoint when restarted;
5. saves the final model as an HF folder that ``probelab.load_model`` reads.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import yaml

# ----------------------------------------------------------------------------------------------
# Defaults. Every config file overrides a subset of these; every key is explained once, here.
DEFAULTS = {
    "mode": "cocomix",          # cocomix | ntp (the NTP baseline is width-matched to CoCoMix)
    "seed": 0,                  # model init and batch order
    "out_dir": "runs/cocomix/{mode}",  # {mode} is replaced by the mode (runs/ is git-ignored)
    "data": {
        "source": "wiki",       # wiki: offline Wikipedia intros (probelab.data) | openwebtext: datasets, network
        "tokenizer": "smollm2-135m",  # the student shares the teacher's tokenizer (labels are per token)
        "block_size": 128,      # context length of a training block
        "train_tokens": 102400,  # tokens in the (fixed, labelled) training set; epochs repeat it
        "val_tokens": 16384,    # held-out tokens for validation perplexity (from held-out articles)
        "val_texts": 500,       # articles held out for validation (wiki: the default SAE's held-out 500)
        "split_seed": 0,        # which articles are held out / streamed first (kept fixed across seeds,
                                # so runs with other seeds reuse the cached teacher labels)
    },
    "teacher": {
        "model": "smollm2-135m",  # frozen LM whose SAE concepts are the labels
        "sae": "default",       # probelab.sae.load_sae source: default | folder | release:sae_id
        "variant": "official",  # attribution variant (official: post-activation x grad of sequence loss)
        "k_attr": 4,            # labels per token (paper: 4)
        "labels": "cached",     # cached (computed once, reused across runs) | on_the_fly
        "label_batch_size": 8,  # teacher batch when labelling
        "autocast_bf16": True,  # teacher in bf16 autocast while labelling (~1.5x faster on this CPU)
        "cache_dir": None,      # label cache folder (default: <probelab cache>/cocomix_labels/<hash>)
        "n_concepts": None,     # C (the SAE width); read from the SAE when null. Setting it lets the NTP
                                # baseline be sized without loading (or first training) the SAE
    },
    "student": {                # a LlamaConfig; vocab and special ids come from the tokenizer
        "hidden_size": 128,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "intermediate_size": 512,
        "tie_word_embeddings": True,
        "insert_layer": 2,      # concepts are predicted after this many blocks (paper: 4 of 8)
        "topk": 32,             # concepts kept before compression (paper: 32)
        "lam": 0.1,             # concept-loss weight (paper: 0.1)
    },
    "optim": {
        "lr": 1.5e-3,           # peak learning rate (paper: 6e-4 at 69M; small CPU models take more)
        "min_lr_ratio": 0.1,    # cosine decay to 10% of the peak (paper)
        "warmup_steps": 20,
        "betas": [0.9, 0.95],   # paper
        "weight_decay": 0.1,    # paper; not applied to biases, norms, pre_bias
        "grad_clip": 1.0,       # paper
        "batch_size": 16,       # global batch in blocks (per step, all processes together)
        "micro_batch_size": None,  # blocks per forward/backward on one process (gradient accumulation)
        "steps": 300,
    },
    "mixed_precision": "bf16",  # Accelerate autocast: bf16 | no
    "eval_every": 25,           # steps between validation-perplexity measurements
    "eval_batch_size": 32,
    "save_every": 100,          # steps between checkpoints (always one at the end)
    "progress": True,
}


def load_config(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", help="YAML file overriding the defaults")
    p.add_argument("--mode", choices=["cocomix", "ntp"])
    p.add_argument("--out-dir")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one value, e.g. --set optim.steps=10 (value parsed as YAML)")
    p.add_argument("--no-resume", action="store_true", help="start fresh even if a checkpoint exists")
    p.add_argument("--stop-after", type=int, metavar="N",
                   help="checkpoint and stop after N steps of this run (time-boxed runs; rerun to resume)")
    args = p.parse_args(argv)
    cfg = copy.deepcopy(DEFAULTS)
    if args.config:
        _merge(cfg, yaml.safe_load(Path(args.config).read_text()) or {})
    for item in args.set:
        key, _, value = item.partition("=")
        node = cfg
        *parents, leaf = key.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        node[leaf] = yaml.safe_load(value)
    if args.mode:
        cfg["mode"] = args.mode
    if args.out_dir:
        cfg["out_dir"] = args.out_dir
    cfg["out_dir"] = cfg["out_dir"].replace("{mode}", cfg["mode"])
    cfg["resume"] = not args.no_resume
    cfg["stop_after"] = args.stop_after
    if cfg["mode"] not in ("cocomix", "ntp"):
        sys.exit(f"error: mode must be cocomix or ntp, got {cfg['mode']!r}")
    return cfg


def _merge(base: dict, new: dict) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v


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


class Blocks:
    """A fixed set of blocks; ``batch(step)`` is a deterministic function of the step (resume-safe)."""

    def __init__(self, blocks: torch.Tensor, batch_size: int, seed: int):
        if blocks.shape[0] < batch_size:
            raise SystemExit(f"error: {blocks.shape[0]} blocks cannot fill a batch of {batch_size}")
        self.blocks, self.batch_size, self.seed = blocks, batch_size, seed
        self.per_epoch = blocks.shape[0] // batch_size

    def indices(self, step: int) -> torch.Tensor:
        epoch, i = divmod(step, self.per_epoch)
        order = torch.randperm(self.blocks.shape[0], generator=torch.Generator().manual_seed(self.seed + epoch))
        return order[i * self.batch_size:(i + 1) * self.batch_size]


class StreamBlocks:
    """Blocks packed on the fly from a text stream (OpenWebText); resuming skips consumed batches."""

    def __init__(self, texts, tok, block_size: int, batch_size: int):
        self.texts, self.tok, self.block_size, self.batch_size = iter(texts), tok, block_size, batch_size
        self.buffer: list[int] = []
        self.step = 0

    def next_batch(self) -> torch.Tensor:
        need = self.block_size * self.batch_size
        while len(self.buffer) < need:
            self.buffer.extend(self.tok(next(self.texts), add_special_tokens=False)["input_ids"]
                               + [self.tok.eos_token_id])
        out, self.buffer = self.buffer[:need], self.buffer[need:]
        self.step += 1
        return torch.tensor(out, dtype=torch.long).view(self.batch_size, self.block_size)


def corpus(cfg, tok):
    """``(train texts, val texts)``: offline wiki split by article, or OpenWebText (train stream, val head)."""
    d = cfg["data"]
    if d["source"] == "wiki":
        # the SAE's own held-out articles: validation text unseen by the student *and* the SAE
        from probelab.sae.corpus import wiki_texts

        return wiki_texts(n_heldout=d["val_texts"], seed=d["split_seed"])
    if d["source"] == "openwebtext":
        import datasets
        from probelab.paths import network_allowed

        if not network_allowed():
            raise SystemExit("error: openwebtext needs the network; set PROBELAB_ALLOW_NETWORK=1")
        ds = datasets.load_dataset("Skylion007/openwebtext", split="train", streaming=True)
        ds = ds.shuffle(seed=d["split_seed"], buffer_size=10_000)
        val = [r["text"] for r in ds.take(d["val_texts"])]
        train = (r["text"] for r in ds.skip(d["val_texts"]))
        return train, val
    raise SystemExit(f"error: unknown data source {d['source']!r}; choose wiki or openwebtext")


# ----------------------------------------------------------------------------------------------
# Teacher: labeler (frozen LM + SAE) and the cached labels.
def load_teacher_sae(cfg, device):
    """The SAE whose latents are the concepts (its width C sizes both students)."""
    from probelab.sae import load_sae

    return load_sae(cfg["teacher"]["sae"], device=str(device))


def make_labeler(cfg, sae, device, student_tok):
    """Frozen teacher LM + SAE -> top-``k_attr`` attribution labels per token (probelab.sae)."""
    from probelab.models import load_model
    from probelab.sae import ConceptLabeler

    t = cfg["teacher"]
    teacher, teacher_tok = load_model(t["model"])
    if teacher_tok.get_vocab() != student_tok.get_vocab():  # labels are per token id: vocabularies must agree
        raise SystemExit(f"error: the student tokenizer ({cfg['data']['tokenizer']}) differs from the teacher's "
                         f"({t['model']}); CoCoMix labels need the teacher's tokenizer")
    return ConceptLabeler(teacher.to(device), sae, k_attr=t["k_attr"], variant=t["variant"],
                          batch_size=t["label_batch_size"], autocast=torch.bfloat16 if t["autocast_bf16"] else None)


def provenance(cfg, n_concepts: int) -> dict:
    t = cfg["teacher"]
    return {"teacher": str(t["model"]), "sae": str(t["sae"]), "variant": t["variant"], "k_attr": t["k_attr"],
            "n_concepts": n_concepts, "bf16": bool(t["autocast_bf16"])}


def cached_labels(cfg, labeler, n_concepts, blocks, accelerator) -> torch.Tensor:
    """Labels for every training block, computed by the main process once and read by all."""
    import hashlib

    from probelab.models.cocomix.labels import label_blocks, tokens_digest
    from probelab.paths import cache_dir

    prov = provenance(cfg, n_concepts)
    key = hashlib.sha256(json.dumps([prov, tokens_digest(blocks)], sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(cfg["teacher"]["cache_dir"] or cache_dir() / "cocomix_labels" / key)
    kw = dict(provenance=prov, batch_size=cfg["teacher"]["label_batch_size"], device=str(accelerator.device))
    if accelerator.is_main_process:
        t0 = time.time()
        labels = label_blocks(labeler, blocks, folder, progress=cfg["progress"], **kw)
        accelerator.print(f"teacher labels: {blocks.numel()} tokens ready in {time.time() - t0:.0f}s ({folder})")
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        labels = label_blocks(labeler, blocks, folder, progress=False, **kw)  # reads the shards
    return labels


# ----------------------------------------------------------------------------------------------
# Models: the CoCoMix student and the width-matched NTP baseline.
def build_model(cfg, tok, n_concepts: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    from probelab.models.cocomix import CoCoMixConfig, CoCoMixForCausalLM, matched_ntp_config

    s = dict(cfg["student"])
    cc = CoCoMixConfig(insert_layer=s.pop("insert_layer"), topk=s.pop("topk"), lam=s.pop("lam"),
                       n_concepts=n_concepts, k_attr=cfg["teacher"]["k_attr"],
                       teacher=provenance(cfg, n_concepts))
    llama = LlamaConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                        pad_token_id=tok.pad_token_id, max_position_embeddings=cfg["data"]["block_size"] * 8,
                        **s)
    llama._attn_implementation = "sdpa"
    torch.manual_seed(cfg["seed"])
    if cfg["mode"] == "cocomix":
        return CoCoMixForCausalLM.from_configs(llama, cc)
    return LlamaForCausalLM(matched_ntp_config(llama, cc))


def compute_loss(model, ids, concept_labels):
    """``(loss to optimise, NTP loss, concept loss)`` for either kind of model."""
    from probelab.models.cocomix.loss import ntp_loss

    if concept_labels is not None:  # CoCoMix
        out = model(ids, labels=ids, concept_labels=concept_labels)
        return out.loss, out.ntp_loss, out.concept_loss
    logits = model(input_ids=ids).logits
    loss = ntp_loss(logits, ids)
    return loss, loss, torch.zeros((), device=ids.device)


@torch.no_grad()
def validation_ppl(model, val_blocks, batch_size, accelerator) -> float:
    """exp(mean next-token CE) over the held-out blocks, sharded across processes."""
    from probelab.models.cocomix.loss import ntp_loss

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


# ----------------------------------------------------------------------------------------------
# Optimiser, schedule, checkpoints.
def make_optimizer(model, o):
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": o["weight_decay"]},
                              {"params": no_decay, "weight_decay": 0.0}], lr=o["lr"], betas=tuple(o["betas"]))


def lr_at(step: int, o) -> float:
    """Linear warmup, then cosine from the peak to ``min_lr_ratio * peak`` at the last step."""
    if step < o["warmup_steps"]:
        return o["lr"] * (step + 1) / o["warmup_steps"]
    frac = (step - o["warmup_steps"]) / max(1, o["steps"] - o["warmup_steps"])
    floor = o["lr"] * o["min_lr_ratio"]
    return floor + 0.5 * (o["lr"] - floor) * (1 + math.cos(math.pi * min(1.0, frac)))


def save_checkpoint(folder: Path, model, optimizer, step: int, tokens: int, elapsed: float, accelerator) -> None:
    """model.safetensors + optimizer.safetensors + state.json, written atomically (main process)."""
    from safetensors.torch import save_file

    from probelab.paths import atomic_dir

    weights = accelerator.get_state_dict(model)
    # Under FSDP each process holds a shard of the optimizer state; only model weights are saved then
    # (a resumed FSDP run restarts AdamW's moments), never a partial optimizer state.
    sharded = accelerator.distributed_type.name == "FSDP"
    opt = optimizer.state_dict() if not sharded else {"state": {}, "param_groups": []}
    if accelerator.is_main_process:
        flat = {f"state.{i}.{k}": v.detach().cpu().contiguous() for i, s in opt["state"].items()
                for k, v in s.items() if torch.is_tensor(v)}
        with atomic_dir(folder) as tmp:
            save_file({k: v.detach().cpu().clone().contiguous() for k, v in weights.items()},
                      str(tmp / "model.safetensors"))
            save_file(flat, str(tmp / "optimizer.safetensors"))
            (tmp / "state.json").write_text(json.dumps({"step": step, "tokens": tokens, "elapsed_s": elapsed,
                                                        "param_groups": opt["param_groups"]}))
    accelerator.wait_for_everyone()


def load_checkpoint(folder: Path, model, optimizer) -> tuple[int, int, float]:
    from safetensors.torch import load_file

    state = json.loads((folder / "state.json").read_text())
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    flat = load_file(str(folder / "optimizer.safetensors"))
    if not state["param_groups"]:
        print("checkpoint has no optimizer state (FSDP run): AdamW restarts from zero moments")
        return state["step"], state["tokens"], state.get("elapsed_s", 0.0)
    per_param: dict[int, dict] = {}
    for key, v in flat.items():
        _, i, name = key.split(".", 2)
        per_param.setdefault(int(i), {})[name] = v
    optimizer.load_state_dict({"state": per_param, "param_groups": state["param_groups"]})
    return state["step"], state["tokens"], state.get("elapsed_s", 0.0)


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
def main(argv: list[str] | None = None) -> None:
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    from probelab.models import load_model

    cfg = load_config(argv)
    torch.set_num_threads(int(os.environ.get("PROBELAB_THREADS", "2")))
    accelerator = Accelerator(mixed_precision=cfg["mixed_precision"])
    out = Path(cfg["out_dir"])
    o, d = cfg["optim"], cfg["data"]
    if o["batch_size"] % accelerator.num_processes:
        raise SystemExit(f"error: batch_size {o['batch_size']} is not divisible by {accelerator.num_processes} processes")

    # 1. data
    _, tok = load_model(d["tokenizer"])  # a registered name or folder (the teacher's tokenizer)
    train_texts, val_texts = corpus(cfg, tok)
    val_blocks = pack(val_texts, tok, d["block_size"], d["val_tokens"])
    streaming = d["source"] != "wiki"
    if streaming:
        stream = StreamBlocks(train_texts, tok, d["block_size"], o["batch_size"])
    else:
        data = Blocks(pack(train_texts, tok, d["block_size"], d["train_tokens"]), o["batch_size"], cfg["seed"])
    accelerator.print(f"data: {'stream' if streaming else data.blocks.numel()} train tokens, "
                      f"{val_blocks.numel()} val tokens, block {d['block_size']}")

    # 2. teacher labels (CoCoMix only)
    n_concepts = cfg["teacher"]["n_concepts"]  # the NTP baseline needs it too: it is sized to match CoCoMix
    if cfg["mode"] == "cocomix" or n_concepts is None:
        sae = load_teacher_sae(cfg, accelerator.device)
        if n_concepts is not None and n_concepts != int(sae.cfg.d_sae):
            raise SystemExit(f"error: teacher.n_concepts={n_concepts} but the SAE has {sae.cfg.d_sae} latents")
        n_concepts = int(sae.cfg.d_sae)
    labeler, labels = None, None
    if cfg["mode"] == "cocomix":
        labeler = make_labeler(cfg, sae, accelerator.device, tok)
        if cfg["teacher"]["labels"] == "cached":
            if streaming:
                raise SystemExit("error: cached labels need a fixed dataset; use teacher.labels=on_the_fly")
            labels = cached_labels(cfg, labeler, n_concepts, data.blocks, accelerator)
            labeler = None  # the teacher is not needed any more

    # 3. model, optimiser
    model = build_model(cfg, tok, n_concepts)
    n_params = sum(p.numel() for p in model.parameters())
    accelerator.print(f"model: {cfg['mode']}, {n_params / 1e6:.2f}M parameters "
                      f"(hidden {model.config.hidden_size}, {model.config.num_hidden_layers} layers)")
    optimizer = make_optimizer(model, o)
    start, tokens_seen, elapsed = 0, 0, 0.0
    ckpt = out / "checkpoint"
    if cfg["resume"] and (ckpt / "state.json").is_file():
        start, tokens_seen, elapsed = load_checkpoint(ckpt, model, optimizer)
        accelerator.print(f"resumed from {ckpt} at step {start}")
    model, optimizer = accelerator.prepare(model, optimizer)
    if streaming:
        for _ in range(start):  # a stream cannot seek: skip the batches already trained on
            stream.next_batch()

    # 4. train
    metrics_file = out / "metrics.csv"
    fields = ["step", "tokens", "train_loss", "ntp_loss", "concept_loss", "val_ppl", "lr", "elapsed_s"]
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(cfg, indent=1))
        rows = []
        if start and metrics_file.is_file():
            rows = [r for r in csv.DictReader(metrics_file.open()) if int(r["step"]) <= start]
        with metrics_file.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)

    def log(row):
        if accelerator.is_main_process:
            with metrics_file.open("a", newline="") as f:
                csv.DictWriter(f, fieldnames=fields).writerow(row)

    t0 = time.time() - elapsed  # training wall time, continued across resumes
    if start == 0:
        log({"step": 0, "tokens": 0, "val_ppl": round(validation_ppl(model, val_blocks, cfg["eval_batch_size"],
                                                                    accelerator), 3), "elapsed_s": 0})
    model.train()
    bar = tqdm(range(start, o["steps"]), initial=start, total=o["steps"], desc=cfg["mode"],
               disable=not (cfg["progress"] and accelerator.is_main_process))
    for step in bar:
        if streaming:
            batch = stream.next_batch()
            local = batch[accelerator.process_index::accelerator.num_processes]
            concept = labeler(local.to(accelerator.device)) if labeler is not None else None
        else:
            idx = data.indices(step)[accelerator.process_index::accelerator.num_processes]
            local = data.blocks[idx]
            if labels is not None:
                concept = labels[idx].long()
            elif labeler is not None:
                concept = labeler(local.to(accelerator.device))
            else:
                concept = None
        ids = local.to(accelerator.device)
        concept = concept.to(accelerator.device) if concept is not None else None
        lr = lr_at(step, o)
        for g in optimizer.param_groups:
            g["lr"] = lr
        micro = o["micro_batch_size"] or ids.shape[0]
        chunks = range(0, ids.shape[0], micro)
        parts = torch.zeros(3, device=accelerator.device)
        for n, i in enumerate(chunks):
            last = n == len(chunks) - 1
            sync = contextlib.nullcontext() if last else accelerator.no_sync(model)
            with sync, accelerator.autocast():
                c = concept[i:i + micro] if concept is not None else None
                loss, ntp, closs = compute_loss(model, ids[i:i + micro], c)
                accelerator.backward(loss / len(chunks))
            parts += torch.stack([loss.detach(), ntp.detach(), closs.detach()]).float() / len(chunks)
        accelerator.clip_grad_norm_(model.parameters(), o["grad_clip"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens_seen += o["batch_size"] * d["block_size"]
        done = step + 1
        row = {"step": done, "tokens": tokens_seen, "train_loss": round(parts[0].item(), 4),
               "ntp_loss": round(parts[1].item(), 4), "concept_loss": round(parts[2].item(), 4),
               "lr": f"{lr:.3g}", "elapsed_s": round(time.time() - t0, 1)}
        if done % cfg["eval_every"] == 0 or done == o["steps"]:
            row["val_ppl"] = round(validation_ppl(model, val_blocks, cfg["eval_batch_size"], accelerator), 3)
            bar.set_postfix(loss=row["train_loss"], val_ppl=row["val_ppl"])
        log(row)
        stop = cfg["stop_after"] is not None and done - start >= cfg["stop_after"] and done < o["steps"]
        if done % cfg["save_every"] == 0 or done == o["steps"] or stop:
            save_checkpoint(ckpt, model, optimizer, done, tokens_seen, time.time() - t0, accelerator)
        if stop:
            accelerator.print(f"stopped after step {done}; run again to resume")
            return

    # 5. final model folder (+ compression-weight statistics for CoCoMix)
    unwrapped = accelerator.unwrap_model(model)
    if accelerator.is_main_process:
        from probelab.models.cocomix import save_cocomix
        from probelab.paths import atomic_dir

        if cfg["mode"] == "cocomix":
            save_cocomix(unwrapped, out / "model", tok)
        else:
            with atomic_dir(out / "model") as tmp:
                unwrapped.save_pretrained(tmp)
                tok.save_pretrained(tmp)
        summary = {"mode": cfg["mode"], "parameters": n_params, "tokens_seen": tokens_seen,
                   "hidden_size": unwrapped.config.hidden_size, "compression": compression_stats(unwrapped, val_blocks, cfg["eval_batch_size"]),
                   "train_seconds": round(time.time() - t0, 1)}
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        accelerator.print(json.dumps(summary))
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    main()
