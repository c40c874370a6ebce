"""`import probelab` registers Control LLM and CoCoMix with transformers' Auto classes.

Each check runs in a fresh interpreter: this test process has long imported probelab.models, which
would hide a missing registration. The probelab command line is the one exception (it registers only
when a command imports probelab.models); that is checked here too.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from probelab.models.cocomix import save_cocomix, tiny_cocomix
from probelab.models.control import ExpansionConfig, expand_model, save_control
from probelab.models.tiny import tiny_llama, tiny_tokenizer

IDS = [[5, 17, 42, 99, 3, 250, 7], [1, 2, 3, 4, 5, 6, 7]]

# In a fresh interpreter: which types transformers knows right after `import probelab`; then each
# FOLDER loaded with AutoModelForCausalLM and with probelab.load_model, both logits compared; JSON out.
COMPARE = r"""
import json, sys
import torch
import probelab
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

out = {"registered": [t in CONFIG_MAPPING for t in ("control_llm", "cocomix")]}
ids = torch.tensor(%r)
for folder in sys.argv[1:]:
    auto = AutoModelForCausalLM.from_pretrained(folder).eval()
    ours, _ = probelab.load_model(folder, device="cpu", dtype="float32")
    with torch.no_grad():
        a, b = auto(input_ids=ids).logits, ours(input_ids=ids).logits
    out[folder] = {"auto": type(auto).__name__, "ours": type(ours).__name__,
                   "config": type(AutoConfig.from_pretrained(folder)).__name__, "dtype": str(a.dtype),
                   "shape": list(a.shape), "max_abs_diff": (a - b).abs().max().item(),
                   "logit_scale": a.abs().max().item()}
print(json.dumps(out))
"""

KINDS = {"control": ("control_llm", "ControlLLMForCausalLM", "ControlLLMConfig"),
         "cocomix": ("cocomix", "CoCoMixForCausalLM", "CoCoMixLlamaConfig")}


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parent)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("auto")
    control = expand_model(tiny_llama(), ExpansionConfig(num_expanded=2))
    with torch.no_grad():  # expanded copies start equal to the originals; make the branches differ
        for p in control.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    return {"control": save_control(control, root / "control", tiny_tokenizer()),
            "cocomix": save_cocomix(tiny_cocomix(), root / "cocomix", tiny_tokenizer())}


def test_auto_model_after_import_probelab_matches_load_model(folders):
    proc = _run(COMPARE % (IDS,), *(str(folders[k]) for k in KINDS))
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["registered"] == [True, True]  # by `import probelab` alone
    for kind, (model_type, cls, config_cls) in KINDS.items():
        folder = folders[kind]
        assert json.loads((folder / "config.json").read_text())["model_type"] == model_type
        r = got[str(folder)]
        assert (r["auto"], r["ours"], r["config"]) == (cls, cls, config_cls), r
        assert r["dtype"] == "torch.float32" and r["shape"][:2] == [2, len(IDS[0])], r
        assert r["logit_scale"] > 1e-3, r  # not all zeros
        # same weights, same code, one process: the two loads must agree to float32 round-off
        assert r["max_abs_diff"] <= 1e-5, (kind, r)


NEGATIVE = r"""
import sys
from transformers import AutoModelForCausalLM

for folder in sys.argv[1:]:
    try:
        AutoModelForCausalLM.from_pretrained(folder)
    except (KeyError, ValueError) as e:
        print("refused", type(e).__name__)
    else:
        print("loaded", folder)
"""


def test_without_probelab_transformers_does_not_know_the_types(folders):
    """The negative control: the registration above is what makes the Auto classes work."""
    proc = _run(NEGATIVE, *(str(folders[k]) for k in KINDS))
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("refused") for line in lines), proc.stdout


def test_command_line_start_defers_registration_to_probelab_models():
    code = ("import sys\nfrom probelab.cli import main\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
            "from transformers.models.auto.configuration_auto import CONFIG_MAPPING\n"
            "before = [t in CONFIG_MAPPING for t in ('control_llm', 'cocomix')]\n"
            "import probelab.models\n"
            "print(before, [t in CONFIG_MAPPING for t in ('control_llm', 'cocomix')])\n")
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split("\n")[0] == "[False, False] [True, True]", proc.stdout
