"""The last token has no next token: no attribution concepts are listed for it (shown as "–")."""
from probelab.app_support import concepts as cc
from probelab.models.tiny import tiny_llama, tiny_tokenizer
from probelab.sae.inspect import inspect_text
from probelab.sae.tiny import tiny_sae


def test_last_token_lists_no_attribution_concepts():
    model, tok, sae = tiny_llama(), tiny_tokenizer(), tiny_sae()
    result = inspect_text(model, tok, sae, "hello there", top=3)
    rows = result["tokens"]
    assert rows[-1]["loss"] is None and rows[-1]["by_attribution"] == []
    assert all(len(r["by_attribution"]) == 3 for r in rows[:-1])
    assert len(rows[-1]["by_activation"]) == 3  # activations exist at every token
    table = cc.rows_table(rows)
    assert table["attribution score"].iloc[-1] == "–" and table["attribution score"].iloc[0] != "–"
    assert cc.hover_titles(rows, "by_attribution")[-1].endswith("–")
