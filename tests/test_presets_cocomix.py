"""CoCoMix defaults equal the authors' configs: where concepts enter (insert layer)."""
from __future__ import annotations

import pytest

from probelab.models.cocomix import CoCoMixConfig
from probelab.models.cocomix.tiny import tiny_cocomix


def test_default_insert_layer_is_the_official_69m_one():
    # official 69M config: concepts predicted before block index 3 of 8, i.e. after 3 blocks
    assert CoCoMixConfig().insert_layer == 3


@pytest.mark.parametrize("name, layers, insert", [("cocomix_69m", 8, 3), ("cocomix_386m", 24, 5),
                                                  ("cocomix_1b", 24, 5)])
def test_paper_scale_configs_use_the_official_insert_layer(name, layers, insert):
    from probelab.train.config import load_config

    cfg = load_config(name)
    assert (cfg.student.num_hidden_layers, cfg.student.insert_layer) == (layers, insert)


def test_insert_layer_means_blocks_before_the_concepts():
    """insert_layer = L: the predictor reads hidden_states[L] (after L blocks); blocks L.. see the doubled sequence."""
    import torch

    model = tiny_cocomix(insert_layer=1)
    seen = []
    blocks = model.model.layers if hasattr(model, "model") and hasattr(model.model, "layers") else None
    if blocks is None:
        from probelab.capture import decoder_layers
        blocks = decoder_layers(model)
    hooks = [b.register_forward_pre_hook(lambda m, a, kw, i=i: seen.append((i, (a or (kw["hidden_states"],))[0].shape[1])),
                                         with_kwargs=True) for i, b in enumerate(blocks)]
    ids = torch.randint(0, 50, (1, 5))
    with torch.no_grad():
        model(input_ids=ids)
    for h in hooks:
        h.remove()
    lengths = dict(seen)
    assert lengths[0] == 5 and all(lengths[i] == 10 for i in range(1, len(blocks)))
