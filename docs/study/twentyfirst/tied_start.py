"""The nineteenth round's finetune_point.py with new keep predictors that start tied: their last Linear's weight
zeroed after the usual initialisation (keep prior bias kept), so every patch scores the same at the start and the
top-k sampler without noise (--token-noise 0) keeps static selection's slots until training moves the scores.

Usage: python docs/study/twentyfirst/tied_start.py RULE PRUNING_LOC RHO OUTDIR [SEED]   (RULE: dyvm_noise0, ...)
"""
import os
import runpy

import torch

from dyvm.models.dyvm import DyVM

reset = DyVM.reset_dynamic_parameters


def tied_start(self, keep_prior: bool = False) -> None:
    reset(self, keep_prior=keep_prior)
    with torch.no_grad():
        for predictor in self.score_predictors:
            predictor.out_conv[4].weight.zero_()


DyVM.reset_dynamic_parameters = tied_start
runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "nineteenth", "finetune_point.py"),
               run_name="__main__")
