"""`probelab demo` trains through the package (probelab.train.csft) on the packaged cpu-smoke config,
so it needs no checkout around it. The demo takes minutes, so here the training call is replaced and
its arguments checked (test_package_wheel.py runs the installed wheel's commands). Also: how
probelab.resources resolves config names, environment overrides and a missing folder."""
from __future__ import annotations

import json

import pytest
from rich.console import Console

from probelab import resources
from probelab.commands import demo
from probelab.errors import ProbelabError


def test_demo_training_step_calls_the_package_recipe_with_the_packaged_config(tmp_path, monkeypatch):
    import probelab.train.csft as csft

    calls = []

    def fake_main(argv):
        calls.append(list(argv))
        out = argv[argv.index("--set") + 1].split("=", 1)[1]
        final = tmp_path / "demo" / "cpu-smoke" / "final"
        assert out == str(final.parent)
        final.mkdir(parents=True)
        (final / "config.json").write_text(json.dumps({"model_type": "control_llm"}))
        return {}

    monkeypatch.setattr(csft, "main", fake_main)
    console = Console(file=open(tmp_path / "log.txt", "w"))
    final = demo.train_step(console, tmp_path / "demo", retrain=False)
    assert final == tmp_path / "demo" / "cpu-smoke" / "final"
    assert calls == [["--config", str(resources.training_config("cpu-smoke")), "--set",
                      f"run.out_dir={tmp_path / 'demo' / 'cpu-smoke'}"]]
    assert resources.training_config("cpu-smoke") == resources.training_configs_dir() / "cpu-smoke.yaml"
    # a finished run is reused without training again; --retrain redoes it
    assert demo.train_step(console, tmp_path / "demo", retrain=False) == final and len(calls) == 1
    demo.train_step(console, tmp_path / "demo", retrain=True)
    assert len(calls) == 2


def test_demo_training_without_a_final_checkpoint_is_one_error(tmp_path, monkeypatch):
    import probelab.train.csft as csft

    monkeypatch.setattr(csft, "main", lambda argv: {})
    with pytest.raises(ProbelabError, match="without a final checkpoint"):
        demo.train_step(Console(file=open(tmp_path / "log.txt", "w")), tmp_path / "demo", retrain=False)


def test_training_config_names_and_paths(tmp_path):
    assert resources.training_config("tiny-test") == resources.training_config("tiny-test.yaml")
    own = tmp_path / "mine.yaml"
    own.write_text("run: {}\n")
    assert resources.training_config(own) == own and resources.training_config(str(own)) == own
    with pytest.raises(ProbelabError, match=r"no config file or built-in config 'nope'; built-in configs: .*tiny-test"):
        resources.training_config("nope")
    configs = resources.training_configs()
    assert {"tiny-test", "cpu-smoke", "cocomix_cpu"} <= set(configs)
    assert all(p.parent == resources.training_configs_dir() for p in configs.values())


def test_environment_overrides_and_a_missing_folder(tmp_path, monkeypatch):
    (tmp_path / "sets").mkdir()
    monkeypatch.setenv("PROBELAB_PROBES_DIR", str(tmp_path / "sets"))
    assert resources.probes_dir() == tmp_path / "sets"
    monkeypatch.setenv("PROBELAB_CONFIGS_DIR", str(tmp_path))
    assert resources.training_configs() == {}
    # neither a bundled copy nor a checkout: one error that says the installation is incomplete
    monkeypatch.setattr(resources, "BUNDLED", tmp_path / "no-bundle")
    monkeypatch.setattr(resources, "CHECKOUT", tmp_path / "no-checkout")
    with pytest.raises(ProbelabError, match="installation is incomplete"):
        resources.accelerate_configs_dir()


def test_the_bundled_copy_wins_over_the_checkout(tmp_path, monkeypatch):
    (tmp_path / "bundle" / "probes").mkdir(parents=True)
    monkeypatch.delenv("PROBELAB_PROBES_DIR", raising=False)
    monkeypatch.setattr(resources, "BUNDLED", tmp_path / "bundle")
    assert resources.probes_dir() == tmp_path / "bundle" / "probes"
