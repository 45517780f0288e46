"""Train the judge shipped with course_lib (the MNIST digit classifier of lessons 8 and 9) and
write its weights and its record to course_lib/judges/.

    python scripts/train_judge.py mnist          # about 3 min of one CPU core

The recipe is ``evaluation.SHIPPED_RECIPES``: the lesson classifier's network, trained on the
4,000 training digits of the MNIST subset with one-pixel shifts and outlier exposure (images
that are not digits, with the target "each digit 1/10"). The record keeps the recipe, the
weights' checksum (``digit_classifier`` refuses weights that do not match it) and what the
judge measured on held-out data: its test accuracy, and the share it labels with confidence
>= 0.9 among real held-out digits and among images that are not digits, of kinds it was shown
in training and of kinds it was not. ``tests/test_judge.py`` checks the shipped files against it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("COURSE_PROGRESS", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from course_lib import evaluation as ev  # noqa: E402


def judge_report(clf: ev.DigitClassifier, dataset: str) -> dict:
    """What the record keeps: accuracy and confident shares, each on fixed held-out images."""
    x_test, y_test = ev._load(dataset, "test")
    x_val, _ = ev._load(dataset, "val")
    held_out = torch.cat([x_val, x_test])
    strangers = ev.strangers(dataset)
    return {
        "test_accuracy": round(ev.accuracy(clf, x_test, y_test), 4),
        "confident_real_heldout": round(ev.confident_labels(clf, held_out)[0], 4),
        "confident_not_digits": {name: round(ev.confident_labels(clf, x)[0], 4) for name, x in strangers.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=sorted(ev.SHIPPED_RECIPES))
    args = parser.parse_args()
    torch.set_num_threads(1)  # one thread: the same arithmetic on every run of this script
    recipe = ev.SHIPPED_RECIPES[args.dataset]
    start = time.process_time()
    clf = ev.train_classifier(args.dataset, **recipe)
    seconds = time.process_time() - start
    weights, record = ev.judge_files(args.dataset)
    weights.parent.mkdir(parents=True, exist_ok=True)
    torch.save(clf.state_dict(), weights)
    info = {
        "dataset": args.dataset,
        "recipe": recipe,
        "sha256": ev.file_sha256(weights),
        "trained": datetime.date.today().isoformat(),
        "cpu_seconds": round(seconds, 1),
        "machine": f"{platform.machine()}, torch {torch.__version__}, 1 thread",
        **judge_report(clf, args.dataset),
    }
    record.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
