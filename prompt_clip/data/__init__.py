"""The data layer: the field's 15 datasets in CoOp's on-disk layout, generic image folders and Hugging Face
datasets, few-shot and base-to-novel protocols, and CLIP pre-processing without torchvision.

Reading images needs Pillow (`pip install "prompt-clip[data]"`); everything else (catalog, validation of split
files, few-shot draws) works without it.
"""

from .catalog import DatasetInfo, get_dataset_info, list_datasets, register_dataset, unregister_dataset
from .classes import base_novel_split, select_classes
from .dataset import EpochSampler, PromptDataset, derive_seed
from .errors import DatasetError
from .fewshot import FewShotWarning, few_shot, few_shot_splits, sample_key
from .folder import load_image_folder
from .hf import from_hf_dataset
from .readers import load_dataset
from .splits import DatasetSplits, Sample
from .transforms import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, ImageTransform

__all__ = [
    "Sample",
    "DatasetSplits",
    "DatasetError",
    "DatasetInfo",
    "register_dataset",
    "unregister_dataset",
    "get_dataset_info",
    "list_datasets",
    "load_dataset",
    "load_image_folder",
    "from_hf_dataset",
    "few_shot",
    "few_shot_splits",
    "sample_key",
    "FewShotWarning",
    "base_novel_split",
    "select_classes",
    "ImageTransform",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "PromptDataset",
    "EpochSampler",
    "derive_seed",
]
