"""Where the milliseconds go: the paper ladder's emitted configs next to the published variants
they compete with, on iphone12 (issue #32; the EfficientFormer paper's Fig. 2 view).

    python experiments/latency_breakdown/run.py

`nas show CONFIG --device iphone12 --breakdown --compare VARIANT` for the configs
`experiments/paper_ladder` emitted from the paper-scale space (7, 3 and 1.6 ms) against L7, L3
and L1. Estimated (Core ML cost model), so it runs on any host in seconds. Writes result.md and
one PNG per pair here.
"""
from __future__ import annotations

import argparse
import datetime
from pathlib import Path

import search_spaces
from nas.core import io
from nas.report import show_breakdown

HERE = Path(__file__).resolve().parent
LADDER = HERE.parent / "paper_ladder"
PAIRS = (("1.6ms", "l1"), ("3ms", "l3"), ("7ms", "l7"))


def run(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="iphone12")
    ap.add_argument("--tables", default=str(HERE.parents[1] / "runs" / "tables"))
    args = ap.parse_args(argv)
    sections = []
    for target, variant in PAIRS:
        emitted = LADDER / f"efficientformer@{args.device}-{target}.yaml"
        png = HERE / f"{target}-vs-{variant}.png"
        text, _ = show_breakdown([str(emitted), str(search_spaces.variant_path("efficientformer", variant))],
                                 Path(args.tables), args.device, png, progress=False)
        sections += [f"## The {target} config next to EfficientFormer-{variant.upper()}", "",
                     f"    nas show {emitted.relative_to(HERE.parents[1])} --device {args.device} --breakdown "
                     f"--compare search_spaces/efficientformer/variants/{variant}.yaml", "",
                     "```", text.replace(str(HERE.parents[1]) + "/", ""), "```", "", f"![{target} vs {variant}]({png.name})",
                     ""]
    io.write_text(HERE / "result.md", "\n".join([
        f"# Where the milliseconds go on {args.device} ({datetime.date.today()})", "",
        "    python experiments/latency_breakdown/run.py", "",
        "Per stage: the table's own op times. Per kind of op: each block's time split by what the Core ML cost "
        "model charges its attention, MLP, depthwise convs, norms, reshapes, elementwise ops and pooling (exact "
        "for these estimated tables); stem, downsamplings and head whole; the per-call overhead of the harness "
        "the model was fitted to apart.", "", *sections]))
    print((HERE / "result.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(run())
