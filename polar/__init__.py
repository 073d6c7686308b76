"""Polar: neuron-level structured pruning with the polarization regularizer (Zhuang et al., NeurIPS 2020).

    import polar
    m = polar.create_model("resnet56", num_classes=10)
    reg = polar.Polarization(lam=5e-5, t=1.4)          # loss = CE + reg(m)
    for event in polar.train(polar.TrainConfig(model="resnet20", dataset="synthetic", epochs=2)):
        ...
"""
from .channel_cost import channel_macs, flops_layer_weights
from .compare import ValleyPruning, finetune_config, matched_flops, prune_at_valley, threshold_rules
from .config import LIMITS, PAPER_SETTINGS, SCHEDULES, TrainConfig, check_range, parse_numbers
from .datasets import load_dataset, load_images, load_training_data
from .device import autocast, finish_distributed, rank_world, resolve_device, synchronize, uses_bf16
from .device_dataset import DeviceDataset, ImageTensors
from .duel import Duel
from .errors import CheckpointError, ConfigError, DatasetError, PolarError
from .evaluate import evaluate
from .export import export_onnx
from .flops import Cost, cost, count_macs, flops_reduction
from .gamma_stats import count_modes, gamma_histogram, gamma_summary, is_polarized, middle_share, valley
from .grid import GRID_COLUMNS, grid_summary, read_grid, tl_grid
from .latency import deployed_latency, latency_ms, paired_latency_ms, steady_allocator
from .latency_table import LatencyTable, latency_table, measured_speedup
from .models import ChannelSet, PrunableModel, channel_sets, create_model, list_models, regularized_bns, sparse_bns
from .pretrained import initial_model, list_pretrained, pretrained
from .prune import mask, mask_channels, prune, prune_channels, prune_to_widths, pruned_cost, unpruned_cost
from .regularizers import (
                           L1,
                           NoRegularizer,
                           Polarization,
                           l1_lambda_for,
                           make_regularizer,
                           optimal_zero_share,
                           polarization,
                           sparse_gammas,
)
from .runs import RunDir
from .saving import load, save
from .schedule import lr_sum, scale_lambda
from .search import Trial, search_lambda
from .speedup import SpeedupPruning, plan_speedup, prune_to_speedup, pruned_for_speedup
from .sweep import sweep
from .threshold import NoValleyError, find_threshold, threshold_for_reduction
from .toy import toy_gammas
from .train import EpochEvent, StepEvent, TrainState, gamma_snapshot, train
from .uniform import uniform_width_model

__all__ = [
    "create_model", "list_models", "sparse_bns", "regularized_bns", "Polarization", "L1", "NoRegularizer",
    "make_regularizer", "sparse_gammas", "TrainConfig", "SCHEDULES", "PAPER_SETTINGS", "train", "StepEvent",
    "EpochEvent", "evaluate", "gamma_snapshot", "resolve_device", "rank_world", "finish_distributed", "autocast",
    "uses_bf16", "synchronize", "load_dataset", "load_images", "DeviceDataset", "ImageTensors", "RunDir", "save",
    "load", "PolarError", "ConfigError", "DatasetError", "CheckpointError", "find_threshold", "threshold_for_reduction",
    "NoValleyError", "mask", "prune", "count_macs", "cost", "Cost", "flops_reduction", "is_polarized", "count_modes",
    "gamma_histogram", "middle_share", "scale_lambda", "lr_sum", "sweep", "search_lambda", "Trial", "initial_model",
    "prune_at_valley", "ValleyPruning", "load_training_data", "Duel", "gamma_summary", "matched_flops",
    "finetune_config", "LIMITS", "check_range",
    "pretrained", "list_pretrained", "parse_numbers", "l1_lambda_for", "valley", "optimal_zero_share",
    "threshold_rules", "toy_gammas", "polarization", "export_onnx", "deployed_latency", "latency_ms",
    "paired_latency_ms", "steady_allocator", "PrunableModel", "ChannelSet", "channel_sets", "channel_macs",
    "prune_to_widths", "prune_channels", "mask_channels", "latency_table", "LatencyTable", "measured_speedup",
    "prune_to_speedup", "pruned_for_speedup", "SpeedupPruning",
    "plan_speedup", "pruned_cost", "unpruned_cost", "flops_layer_weights", "uniform_width_model", "tl_grid",
    "read_grid", "grid_summary", "GRID_COLUMNS", "TrainState",
]
