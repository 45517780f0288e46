"""Train the judge shipped with course_lib (the MNIST digit classifier of lessons 8 and 9) and
write its weights and its record to course_lib/judges/.

    python scripts/train_judge.py mnist          # about 3 min of one CPU core
    python scripts/train_judge.py mnist --check  # train again, compare with the record, write nothing

The recipe is ``evaluation.SHIPPED_RECIPES``: the lesson classifier's network, trained on the
4,000 training digits of the MNIST subset with one-pixel shifts and outlier exposure (images
that are not digits, with the target "each digit 1/10"). The record keeps the recipe, the
weights' checksum (``digit_classifier`` refuses weights that do not match it) and what the
judge measured on held-out data: its test accuracy, and the share it labels with confidence
>= 0.9 among real held-out digits and among images that are not digits, of kinds it was shown
in training and of kinds it was not. ``tests/test_judge.py`` checks the shipped files against it.

One thread gives the same arithmetic on every run on the same CPU and PyTorch build, so the
same bytes there. Elsewhere (another instruction set, another build) the recipe gives a judge
whose numbers agree to about a point but whose bytes, and checksum, differ; ``--check`` says
by how much.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=sorted(ev.SHIPPED_RECIPES))
    parser.add_argument("--check", action="store_true", help="train again and compare with the record; write nothing")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one thread: the same arithmetic on every run of this script
    recipe = ev.SHIPPED_RECIPES[args.dataset]
    start = time.process_time()
    clf = ev.train_classifier(args.dataset, **recipe)
    seconds = time.process_time() - start
    weights, record = ev.judge_files(args.dataset)
    if args.check:
        old = json.loads(record.read_text(encoding="utf-8"))
        now = ev.judge_report(clf, args.dataset)
        pairs = [("test_accuracy", old["test_accuracy"], now["test_accuracy"]),
                 ("confident_real_heldout", old["confident_real_heldout"], now["confident_real_heldout"])]
        pairs += [(f"confident_not_digits[{k}]", v, now["confident_not_digits"][k]) for k, v in old["confident_not_digits"].items()]
        worst = max(abs(a - b) for _, a, b in pairs)
        for name, a, b in pairs:
            print(f"{name:>45}: record {a:.4f}, now {b:.4f}")
        print(f"largest difference {worst:.4f} ({'within' if worst <= 0.02 else 'OVER'} 0.02)")
        sys.exit(0 if worst <= 0.02 else 1)
    weights.parent.mkdir(parents=True, exist_ok=True)
    torch.save(clf.state_dict(), weights)
    info = {
        "dataset": args.dataset,
        "recipe": recipe,
        "sha256": ev.file_sha256(weights),
        "trained": datetime.date.today().isoformat(),
        "cpu_seconds": round(seconds, 1),
        "machine": f"{platform.machine()} ({torch.backends.cpu.get_cpu_capability()}), torch {torch.__version__}, 1 thread",
        **ev.judge_report(clf, args.dataset),
    }
    record.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
