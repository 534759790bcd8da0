"""One road from the CLI, YAML, TrainConfig and Python keywords to create_model (issue 11), and
"is this a DyVM?" asked one way."""
import argparse
import ast
from pathlib import Path

import pytest

import dyvm
from dyvm.cli import _apply_config, build_parser
from dyvm.engine import TrainConfig
from dyvm.model_options import DYNAMIC_OPTIONS, model_overrides
from dyvm.models.registry import is_dynamic_name, model_class, static_counterpart

SRC = Path(__file__).resolve().parents[1] / "src" / "dyvm"
FLAGS = ["--model", "dyvm_vim_tiny", "--depth", "12", "--embed-dim", "64", "--token-keep-ratio", "0.6",
         "--router-threshold", "0.4", "--score", "random", "--predictor-input", "B", "--img-size", "32"]
EXPECTED = dict(depth=12, embed_dim=64, img_size=32, token_keep_ratio=0.6, router_threshold=0.4, score="random",
                predictor_input="B", pruning_loc=[3, 6, 9])


@pytest.mark.parametrize("command", ["train", "eval", "flops"])
def test_flags_yaml_and_python_give_the_same_model_keywords(command, tmp_path):
    parser = build_parser()
    from_flags = _apply_config(parser, [command, *FLAGS])
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("model: dyvm_vim_tiny\ndepth: 12\nembed-dim: 64\ntoken_keep_ratio: 0.6\n"
                         "router-threshold: 0.4\nscore: random\npredictor_input: B\nimg_size: 32\n")
    from_yaml = _apply_config(build_parser(), [command, "--config", str(yaml_file)])
    config = TrainConfig(model="dyvm_vim_tiny", depth=12, embed_dim=64, token_keep_ratio=0.6, router_threshold=0.4,
                         score="random", predictor_input="B", img_size=32)
    routers = dict(use_routers=True, use_pruning=True)
    expected = {**EXPECTED, **(routers if command == "train" else {})}
    for options in (from_flags, from_yaml):
        assert model_overrides(options, dynamic=True) == expected
    assert model_overrides(config, dynamic=True) == {**EXPECTED, **routers}
    assert model_overrides(dict(EXPECTED, pruning_loc=None), dynamic=True) == EXPECTED


def test_a_plain_model_gets_no_dyvm_options_and_unknown_keeps_them():
    config = TrainConfig(model="vim_tiny", depth=8, token_keep_ratio=0.5, drop_path=0.1)
    assert model_overrides(config, dynamic=False) == dict(depth=8, drop_path_rate=0.1)
    # not yet known (a checkpoint decides): passed on as given, nothing added
    assert model_overrides(dict(depth=8, token_keep_ratio=0.5)) == dict(depth=8, token_keep_ratio=0.5)
    assert "pruning_loc" not in model_overrides(TrainConfig(depth=8, use_pruning=False), dynamic=True)
    assert set(DYNAMIC_OPTIONS) >= {"token_keep_ratio", "block_keep_ratio", "router_threshold", "score",
                                    "pruning_loc", "predictor_input", "use_routers", "use_pruning"}


def test_flops_counts_the_model_train_builds():
    """--depth 12 scales pruning_loc in every command, so flops and train mean one model."""
    model = dyvm.create_model("dyvm_vim_tiny", **model_overrides(dict(depth=12, img_size=32, embed_dim=32),
                                                                 dynamic=True))
    assert model.pruning_loc == [3, 6, 9]


def test_is_dynamic_name_matches_the_built_model():
    for name in dyvm.list_models():
        kwargs = dict(depth=4, img_size=64, embed_dim=64)
        if is_dynamic_name(name):
            kwargs["pruning_loc"] = [1, 2, 3]
        if "seg" in name:
            kwargs["out_indices"] = [0, 1, 2, 23]
        model = dyvm.create_model(name, **kwargs)
        assert model.is_dynamic == is_dynamic_name(name) and type(model) is model_class(name), name
        teacher = static_counterpart(name)
        assert teacher in dyvm.list_models() and not is_dynamic_name(teacher), name
        assert (teacher == name) != model.is_dynamic, name
    with pytest.raises(ValueError, match="unknown model name"):
        is_dynamic_name("vim_huge")


def _prefix_questions(path: Path) -> list[str]:
    """``x.startswith("dyvm…")`` calls: asking "is this a DyVM?" of a name's spelling."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("startswith", "removeprefix") and node.args
                and isinstance(node.args[0], ast.Constant) and str(node.args[0].value).startswith("dyvm")):
            found.append(f"{path.relative_to(SRC)}:{node.lineno}")
    return found


def test_no_module_asks_the_name_prefix():
    found = [hit for path in sorted(SRC.rglob("*.py")) if path != SRC / "models" / "registry.py"
             for hit in _prefix_questions(path)]
    assert found == [], f"ask models.registry.is_dynamic_name(name) or model.is_dynamic instead: {found}"


def test_eval_refuses_dyvm_options_for_a_plain_model():
    from dyvm.evaluate import load_for_eval

    for given, flag in ((dict(token_keep_ratio=0.5), "--token-keep-ratio"), (dict(block_keep_ratio=0.7), "--block-keep-ratio"),
                        (dict(pruning_loc=[1]), "--pruning-loc"), (dict(use_routers=False), "--no-routers")):
        with pytest.raises(ValueError, match=f"^{flag}: DyVM options, but --model vim_tiny is a plain model"):
            load_for_eval(None, "vim_tiny", model_overrides(argparse.Namespace(depth=2, **given)))
    assert load_for_eval(None, "dyvm_vim_tiny", model_overrides(argparse.Namespace(
        depth=2, block_keep_ratio=0.7), dynamic=True)).block_keep_ratio == 0.7


def test_flops_refuses_dyvm_options_for_a_plain_model(capsys):
    """``dyvm flops --model vim_tiny --token-keep-ratio 0.5`` used to print the unpruned model's FLOPs as if the
    ratio applied; now it is a one-line error naming the option and the DyVM to count instead."""
    from dyvm.cli import main

    assert main(["flops", "--model", "vim_tiny", "--token-keep-ratio", "0.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dyvm flops: error: --token-keep-ratio: DyVM options")
    assert "count a DyVM with --model dyvm_vim_tiny" in err[0]
