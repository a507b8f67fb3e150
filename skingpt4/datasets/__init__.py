"""Dataset builders (registered by name for YAML), the map-style folder dataset, the webdataset stream and
`collate`. See docs/datasets.md."""
from skingpt4.datasets.bad_images import BadSampleCounter
from skingpt4.datasets.builders import build_datasets, dataset_path_problems
from skingpt4.datasets.collate import collate
from skingpt4.datasets.image_text_pairs import ImageTextPairsDataset
from skingpt4.datasets.webdataset_source import WebDatasetSource

__all__ = ["build_datasets", "dataset_path_problems", "collate", "ImageTextPairsDataset", "WebDatasetSource", "BadSampleCounter"]
