"""The raw dataset's layout and dataset.json."""

from __future__ import annotations

import pytest

from pipeline.training.dataset import Split, dataset_folder_name, dataset_json, image_file, label_file


def test_layout() -> None:
    assert dataset_folder_name(501, "LNQ") == "Dataset501_LNQ"
    assert dataset_folder_name(7, "lnq-partial_2") == "Dataset007_lnq-partial_2"
    assert image_file("case_0002", Split.TRAIN) == "imagesTr/case_0002_0000.nii.gz"
    assert label_file("case_0002", Split.TRAIN) == "labelsTr/case_0002.nii.gz"
    assert image_file("case_0002", Split.TEST) == "imagesTs/case_0002_0000.nii.gz"
    assert label_file("case_0002", Split.TEST) == "labelsTs/case_0002.nii.gz"


@pytest.mark.parametrize(
    ("dataset_id", "name", "message"),
    [
        (0, "LNQ", "dataset id 0 is not in 1..999"),
        (1000, "LNQ", "dataset id 1000 is not in 1..999"),
        (501, "../x", r"dataset name '../x': expected 1 to 64 letters"),
        (501, "", "dataset name '': expected"),
        (501, "a b", "dataset name 'a b': expected"),
    ],
)
def test_bad_names(dataset_id: int, name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dataset_folder_name(dataset_id, name)


def test_dataset_json_declares_the_ignore_label_only_when_needed() -> None:
    common = {"name": "LNQ", "n_test": 2, "provenance": {"licence": "CC BY 4.0"}, "export": {"rule": "hu"}}
    partial = dataset_json(n_training=5, with_ignore=True, **common)
    assert partial["labels"] == {"background": 0, "lymph_node": 1, "ignore": 2}
    assert partial["channel_names"] == {"0": "CT"}
    assert (partial["numTraining"], partial["numTest"], partial["file_ending"]) == (5, 2, ".nii.gz")
    assert partial["overwrite_image_reader_writer"] == "SimpleITKIO"
    assert partial["licence"] == "CC BY 4.0" and partial["lnq_export"] == {"rule": "hu"}
    full = dataset_json(n_training=5, with_ignore=False, **common)
    assert full["labels"] == {"background": 0, "lymph_node": 1}
