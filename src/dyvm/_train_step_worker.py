"""Worker process of ``dyvm bench --what train-step`` (see :mod:`dyvm.bench_train`).

This file is run as ``python -c <its source>`` with ``PYTHONPATH`` pointing at the ``src``
folder of the build under test, so it must only use the public API that every build has
(``dyvm.create_model``, ``dyvm.losses.DyVMLoss.for_model``, ``model(x, noise=...)``) and
nothing from its own package. Protocol: one JSON object per line on stdin, one JSON reply
per line on stdout (anything else the build prints goes to stderr).

    {"cmd": "setup", "threads": 1, "batch": 128, "seed": 0, "autocast": false, "model": "demo" | "tiny"}
        -> {"ok": true, "dyvm_file": ..., "torch": ..., "threads": ...}
    {"cmd": "run", "kind": "dyvm" | "vim" | "dyvm-eval" | "vim-eval", "steps": n}
        -> {"ok": true, "wall": seconds, "cpu": seconds}   (n training steps, or n eval forwards)
    {"cmd": "quit"}
"""
import json
import os
import sys
import time

DEMO_KWARGS = dict(img_size=28, patch_size=4, in_chans=1, depth=8, embed_dim=64, num_classes=10)
# The centred demo's operating point (dyvm.demo.OPERATING_POINT until session 44, repeated here: the worker may
# import an older dyvm that lacks it; the demo has run on the 40-px canvas since, which this mode does not measure)
# and the training sampler of its recipe; a build without that sampler trains with its own (the paper's per-token
# Gumbel-softmax), and says so in its setup reply.
DYVM_KWARGS = dict(pruning_loc=[5, 6, 7], token_keep_ratio=0.3, block_keep_ratio=0.8)
DYVM_SAMPLER = dict(token_sampler="topk")
# --step-model (the keys of dyvm.bench_train.STEP_MODELS, which this file may not import): model kwargs, DyVM kwargs,
# image shape, classes. "tiny": the vim_tiny / dyvm_vim_tiny presets as they are (224x224x3 images, 1000 classes,
# the preset's pruning), what a user fine-tuning an official Vim-T trains
# "canvas": the demo since session 45, on 40-px images (101 tokens), one stage before layer 2 keeping 0.57 of the
# patches (its keep guidance, a loss on the teacher's outputs that older builds lack, is not in this step)
STEP_MODELS = {"demo": (DEMO_KWARGS, DYVM_KWARGS, (1, 28, 28), 10), "tiny": ({}, {}, (3, 224, 224), 1000),
               "canvas": (dict(DEMO_KWARGS, img_size=40), dict(pruning_loc=[2], token_keep_ratio=0.57,
                                                             block_keep_ratio=0.8), (1, 40, 40), 10)}


def _make_steps(batch, seed, use_autocast, step_model="demo"):
    import torch
    from torch import nn

    import dyvm
    import dyvm.losses

    model_kwargs, dyvm_kwargs, image_shape, classes = STEP_MODELS[step_model]
    torch.manual_seed(seed)
    x = torch.randn(batch, *image_shape)
    y = torch.randint(0, classes, (batch,))
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if use_autocast else None

    # the build's own optimiser where it has one (``dyvm.engine.make_optimizer``: what its ``dyvm train`` steps
    # with), else torch's AdamW as that build's engine made it (timm's adamw: torch's AdamW, its CPU default)
    try:
        from dyvm.engine import make_optimizer
    except ImportError:
        make_optimizer = None

    def adamw(params):
        params = list(params)
        if make_optimizer is None:
            return torch.optim.AdamW(params, lr=1e-4)
        return make_optimizer(params, 1e-4, 0.01)  # torch's AdamW default weight decay, as above

    # the Vim teacher's own training step: plain CE, AdamW
    vim = dyvm.create_model("vim_tiny", **model_kwargs).train()
    vim_opt = adamw(vim.parameters())
    ce = nn.CrossEntropyLoss()

    # DyVM fine-tuning from a Vim with the same kwargs, that Vim frozen as the distillation teacher
    teacher = dyvm.create_model("vim_tiny", **model_kwargs)
    try:
        model = dyvm.create_model("dyvm_vim_tiny", **model_kwargs, **dyvm_kwargs, **DYVM_SAMPLER)
        sampler = DYVM_SAMPLER["token_sampler"]
    except TypeError:  # a build from before the sampler option
        model = dyvm.create_model("dyvm_vim_tiny", **model_kwargs, **dyvm_kwargs)
        sampler = "gumbel"
    model.load_state_dict(teacher.state_dict(), strict=False)
    model.train()
    criterion = dyvm.losses.DyVMLoss.for_model(model, nn.CrossEntropyLoss(), teacher)
    opt = adamw(p for p in model.parameters() if p.requires_grad)

    def vim_step():
        if ctx is None:
            loss = ce(vim(x), y)
        else:
            with ctx():
                loss = ce(vim(x), y)
        vim_opt.zero_grad(set_to_none=True)
        loss.backward()
        vim_opt.step()

    def dyvm_step():
        if ctx is None:
            out = model(x, noise=None)
            loss, _ = criterion(x, out, y)
        else:
            with ctx():
                out = model(x, noise=None)
                loss, _ = criterion(x, out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    # inference: eval-mode copies of the two models, so the training steps' modes stay untouched
    vim_eval = dyvm.create_model("vim_tiny", **model_kwargs).eval()
    vim_eval.load_state_dict(teacher.state_dict())
    dyvm_eval = dyvm.create_model("dyvm_vim_tiny", **model_kwargs, **dyvm_kwargs).eval()
    dyvm_eval.load_state_dict(model.state_dict())

    def forward(net):
        def run():
            with torch.no_grad():
                if ctx is None:
                    net(x)
                else:
                    with ctx():
                        net(x)
        return run

    return {"dyvm": dyvm_step, "vim": vim_step, "dyvm-eval": forward(dyvm_eval), "vim-eval": forward(vim_eval)}, \
        dyvm.__file__, sampler, type(opt).__name__ + (" (fused)" if opt.defaults.get("fused") else "")


def main():
    out = sys.stdout
    sys.stdout = sys.stderr  # keep the reply channel clean
    steps = None
    for line in sys.stdin:
        req = json.loads(line)
        try:
            if req["cmd"] == "quit":
                break
            if req["cmd"] == "setup":
                import torch

                torch.set_num_threads(int(req["threads"]))
                steps, path, sampler, optimizer = _make_steps(int(req["batch"]), int(req.get("seed", 0)),
                                                              bool(req.get("autocast")), req.get("model", "demo"))
                reply = {"ok": True, "dyvm_file": path, "token_sampler": sampler, "optimizer": optimizer,
                         "torch": torch.__version__,
                         "threads": torch.get_num_threads(), "pid": os.getpid()}
            elif req["cmd"] == "run":
                fn = steps[req["kind"]]
                c0, w0 = time.process_time(), time.perf_counter()
                for _ in range(int(req["steps"])):
                    fn()
                reply = {"ok": True, "wall": time.perf_counter() - w0, "cpu": time.process_time() - c0}
            else:
                reply = {"ok": False, "error": f"unknown command {req['cmd']!r}"}
        except Exception as exc:  # reported to the driver, which raises
            import traceback

            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
