import torch
from dyvm.data import build_dataset, build_transform, data_config_for
def real_images(model, n=64):
    ds = build_dataset("fashion-mnist", "test", build_transform(data_config_for(model), False), None, model.in_chans)
    return torch.stack([ds[i][0] for i in range(n)])
