"""The analysis stage: layer-wise CCA/PWCCA figures, MoE gate histograms, WER chart.

    python -m espnet_delta.bin.analyze --out_dir exp/analysis \\
        --upstream_conf conf/upstreams.yaml --models wavlm hubert wav2vec2 \\
        --finetuned 'exp/ft_{name}/valid.wer_ctc.best.pth' --wav_scp data/dev/wav.scp \\
        --max_utts 64 --max_frames 20000 \\
        --exp_dir exp --feats_dir dump/feats --gate_sets test --wer_sets dev test

Writes under ``--out_dir``:

* ``layerwise.csv`` (model, layer, measure, comparison, value) and
  ``layerwise_pt_vs_ft.png`` (Figure 1 of arXiv 2601.20142), ``layerwise_ft_vs_delta.png``
  (Figure 2), each with a mean-CCA and a PWCCA panel (:mod:`espnet_delta.analysis.layerwise`);
* ``gates_<system>_<set>.png`` + ``.tsv``: per-utterance mean gate weights of every MoE
  fusion system (:mod:`espnet_delta.analysis.gates`);
* ``wer_<set>.png`` + ``wer_intervals.tsv``: WER of every scored system with paired-bootstrap
  intervals (:mod:`espnet_delta.analysis.wer_chart`);
* ``figures.md``: Markdown links to the figures (paths relative to ``--link_base``).

Reruns skip finished work: per-model and per-system results are cached in
``<out_dir>/cache/`` with their inputs' fingerprints, and tables and figures are only
rewritten when their contents change. Each part can be switched off
(``--layerwise false`` ...).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import List, Optional, Sequence


from espnet_delta.recipe.names import CKPT_WER
from espnet_delta.cli import add_bool_argument, add_log_level_argument, new_parser, run_command, setup_logging


def get_parser() -> argparse.ArgumentParser:
    parser = new_parser(__doc__, option_file=True)
    parser.add_argument("--out_dir", type=Path, default=Path("exp/analysis"))
    parser.add_argument("--link_base", type=Path, default=Path("."),
                        help="figures.md links are relative to this directory (where RESULTS.md lives)")
    g = parser.add_argument_group("layer-wise similarity")
    add_bool_argument(g, "--layerwise", default=True, help="compute the layer-wise CCA/PWCCA figures")
    g.add_argument("--upstream_conf", type=Path, default=Path("conf/upstreams.yaml"),
                   help="name -> {upstream, path_or_url} of the pre-trained models")
    g.add_argument("--models", nargs="*", default=None, help="entries of --upstream_conf (default: all)")
    g.add_argument("--finetuned", default=f"exp/ft_{{name}}/{CKPT_WER}",
                   help="fine-tuned ESPnet checkpoint of each model; {name} is replaced")
    g.add_argument("--wav_scp", type=Path, default=Path("data/dev/wav.scp"), help="utterances to sample from")
    g.add_argument("--max_utts", type=int, default=64)
    g.add_argument("--max_frames", type=int, default=20000, help="frames pooled over the sampled utterances")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--hidden_norm", default="none", choices=["none", "auto", "layer_norm"])
    g.add_argument("--keep_variance", type=float, default=0.99, help="SVD reduction before CCA")
    g.add_argument("--batch_size", type=int, default=8)
    g = parser.add_argument_group("gate histograms and WER chart")
    add_bool_argument(g, "--gates", default=True, help="histograms of the MoE systems' gate weights")
    add_bool_argument(g, "--wer_chart", default=True, help="WER bar chart with bootstrap intervals")
    g.add_argument("--exp_dir", type=Path, default=Path("exp"))
    g.add_argument("--model_name", default=CKPT_WER)
    g.add_argument("--feats_dir", type=Path, default=Path("dump/feats"))
    g.add_argument("--gate_sets", nargs="*", default=["test"])
    g.add_argument("--wer_sets", nargs="*", default=[], help="test sets of the WER chart (default: all scored)")
    g.add_argument("--n_resamples", type=int, default=1000)
    g.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--device", default="cpu")
    add_log_level_argument(parser)
    return parser


def run_layerwise(args) -> List[Path]:
    from espnet_delta.analysis import layerwise as lw
    from espnet_delta.analysis.outputs import refresh_figures
    from espnet_delta.analysis.plots import layerwise_figure
    from espnet_delta.fileio import load_yaml

    conf = load_yaml(args.upstream_conf)
    names = args.models if args.models else list(conf)
    models = lw.models_from_conf(conf, names, args.finetuned, str(args.upstream_conf))
    if not models:
        logging.warning("no model has a fine-tuned checkpoint (%s); no layer-wise analysis", args.finetuned)
        return []
    options = lw.SampleOptions(max_utts=args.max_utts, max_frames=args.max_frames, seed=args.seed,
                               batch_size=args.batch_size, hidden_norm=args.hidden_norm,
                               keep_variance=args.keep_variance, device=args.device)
    sampler = lw.HiddenStateSampler(args.wav_scp, options)
    rows = []
    for model in models:
        rows += lw.analyse_model(model, sampler, args.out_dir / "cache" / f"layerwise_{model.name}.json")
    titles = {"pt_vs_ft": "similarity(pre-trained, fine-tuned) per layer",
              "ft_vs_delta": "similarity(fine-tuned, delta = ft - pt) per layer"}
    figures = {args.out_dir / f"layerwise_{c}.png": (lambda c=c: layerwise_figure(lw.curves(rows, c), titles[c]))
               for c in lw.COMPARISONS}
    refresh_figures(args.out_dir / "layerwise.csv", lw.format_csv(rows), figures)
    return list(figures)


def run_gates(args) -> List[Path]:
    from espnet_delta.analysis import gates
    from espnet_delta.analysis.outputs import refresh_figures
    from espnet_delta.analysis.plots import gate_histogram_figure

    systems = gates.moe_systems(args.exp_dir, args.model_name)
    if not systems:
        logging.info("no trained MoE fusion system under %s; no gate histograms", args.exp_dir)
    pngs = []
    for set_name, scp in gates.gate_sets(args.feats_dir, args.gate_sets) if systems else []:
        for system, job in systems:
            stem = f"gates_{system}_{set_name}"
            utts, means, labels = gates.gate_means_cached(
                job, args.model_name, scp, args.out_dir / "cache" / f"{stem}.json", args.batch_size, args.device)
            logging.info("%s on %s: mean gate weights %s", system, set_name, gates.describe(means, labels))
            png = args.out_dir / f"{stem}.png"
            title = f"MoE gate weights: {system} on {set_name} ({len(utts)} utterances)"
            refresh_figures(args.out_dir / f"{stem}.tsv", gates.format_gate_table(utts, means, labels),
                            {png: lambda m=means, lab=labels, t=title: gate_histogram_figure(m, lab, t)})
            pngs.append(png)
    return pngs


def run_wer_chart(args) -> List[Path]:
    from espnet_delta.analysis import wer_chart as wc
    from espnet_delta.analysis.outputs import refresh_figures
    from espnet_delta.analysis.plots import wer_bar_figure

    score_dirs = wc.find_score_dirs(args.exp_dir)
    if not score_dirs:
        logging.warning("no score dirs under %s/*/decode/*/score_wer; no WER chart", args.exp_dir)
        return []
    intervals = wc.wer_intervals(score_dirs, args.wer_sets, args.n_resamples, args.seed, args.confidence)
    figures = {
        wc.chart_path(args.out_dir, test_set): (
            lambda r=rows, t=test_set: wer_bar_figure(r, f"WER on {t}", args.confidence))
        for test_set, rows in intervals.items() if rows
    }
    table = wc.format_interval_table(intervals, args.n_resamples, args.seed, args.confidence)
    refresh_figures(args.out_dir / "wer_intervals.tsv", table, figures)
    return list(figures)


def figures_markdown(layerwise: Sequence[Path], gate_pngs: Sequence[Path], wer_pngs: Sequence[Path],
                     link_base: Path) -> str:
    """The RESULTS.md section that links the figures."""

    def link(p: Path) -> str:
        return f"![{p.stem}]({Path(os.path.relpath(p, link_base)).as_posix()})"

    out = ["## Analysis figures", ""]
    if layerwise:
        out += ["Layer-wise similarity (mean CCA and PWCCA; Figures 1-2 of arXiv 2601.20142; numbers in "
                f"`{Path(os.path.relpath(layerwise[0].parent / 'layerwise.csv', link_base)).as_posix()}`):", ""]
        out += [link(p) for p in layerwise] + [""]
    if gate_pngs:
        out += ["Per-utterance mean gate weights of the MoE fusion systems:", ""]
        out += [link(p) for p in gate_pngs] + [""]
    if wer_pngs:
        out += ["WER per test set with 95 % paired-bootstrap intervals:", ""]
        out += [link(p) for p in wer_pngs] + [""]
    return "\n".join(out)


def main(cmd: Optional[Sequence[str]] = None) -> None:
    parser = get_parser()
    args = parser.parse_args(cmd)
    if args.max_utts < 1 or args.max_frames < 2:
        parser.error(f"--max_utts must be >= 1 and --max_frames >= 2 (got {args.max_utts}, {args.max_frames})")
    if not 0.0 < args.keep_variance <= 1.0 or not 0.0 < args.confidence < 1.0:
        parser.error("--keep_variance must be in (0, 1] and --confidence in (0, 1)")
    setup_logging(args.log_level)
    run_command(lambda: _analyze(args), args.log_level)


def _analyze(args) -> None:
    from espnet_delta.analysis.outputs import write_text_if_changed

    layerwise = run_layerwise(args) if args.layerwise else []
    gate_pngs = run_gates(args) if args.gates else []
    wer_pngs = run_wer_chart(args) if args.wer_chart else []
    index = args.out_dir / "figures.md"
    if write_text_if_changed(index, figures_markdown(layerwise, gate_pngs, wer_pngs, args.link_base)):
        logging.info("wrote %s", index)
    logging.info("analysis done: %d figures under %s", len(layerwise) + len(gate_pngs) + len(wer_pngs), args.out_dir)


if __name__ == "__main__":
    main()
