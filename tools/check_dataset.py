"""Checks the data of a config, or a whole ADE20K or ShapeNetPart folder, before a long training
and lists every bad file.

    python tools/check_dataset.py CONFIG [--splits train val test] [--workers 2]
        [--cfg-options key=value ...]
    python tools/check_dataset.py DATA_ROOT [--format ade20k|shapenetpart] [--splits ...]
        [--dataset-type BiXTADE20KDataset] [--workers 2]

A config's train, val and test datasets are built as the config describes them (type, root,
prefixes, suffixes, classes, ``reduce_zero_label``), with a loading-only pipeline.

Runs the datasets' own checks (one implementation): for ADE20K the layout checks of
``BiXTADE20KDataset`` (images without label maps, label maps without images) and, on every
sample, loading with ``LoadImageFromFile``/``LoadAnnotations`` and ``CheckSegSample`` (decodable
files, single-channel label maps at their bit depth, values within the classes, matching sizes,
EXIF orientation); for ShapeNetPart the category and split files and every shape file.
Any mmseg ``BaseSegDataset`` type of a config gets the same split checks as ours (folders,
suffixes with a hint from the files found, pairs, duplicate split-list entries).
Prints one line per problem, then per split the share of each class among the labelled pixels
(after ``reduce_zero_label``) with warnings (a class that never occurs, ``reduce_zero_label``
ignoring the most frequent value) and a summary; exits with status 1 when there is any problem (a
bad file is reported and the check goes on). Images whose EXIF orientation turns or mirrors them
without changing their size are listed as notes (they load as viewers show them; check that
their label maps were drawn that way).
"""
import sys

from mmbixt.operations.checks.dataset_checks import main
from mmbixt.operations.cli import run_cli

if __name__ == '__main__':
    sys.exit(run_cli(main))
