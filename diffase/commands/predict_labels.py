"""``diffase predict-labels``: predicted site DOS and Bader charges, or densities, for a structure table, in the
label format."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "predict-labels", help="predict site DOS and Bader charges, or the valence density, with a trained predictor "
                                "(label-file format)",
        description="Write OUT/<name>.npz (the format of diffase label: site DOS and Bader charges from a site-label "
                    "model, rho32 from a density model such as density-mp20; marked as predicted with the predictor's "
                    "name, checkpoint hash and held-out errors) plus OUT/index.csv. Files are written batch by "
                    "batch; re-running the same command skips finished files; a folder made with another "
                    "predictor is refused. Predicted labels are refused where DFT labels are required.")
    p.add_argument("structures", nargs="+", help="CSV with a 'cif' column, extxyz, ASE .db, CIF files ...")
    p.add_argument("--model", default="site-labels-mp20", help="predictor name or checkpoint path "
                                                               "(default: the shipped site-labels-mp20)")
    p.add_argument("--out", required=True, help="output label folder")
    p.add_argument("--batch-size", type=int, default=32, help="structures per network call and per write")
    p.add_argument("--limit", type=int, default=None, help="read only the first N structures of each input")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    p.set_defaults(func=run)


def run(args) -> int:
    from collections import Counter

    from diffase.predictors.predict_labels import predict_labels
    from diffase.runtime import configure_threads

    configure_threads()
    report = predict_labels(args.structures, args.model, args.out, batch_size=args.batch_size, limit=args.limit,
                            device=args.device)
    if report.refused:
        counts = Counter(el for unseen in report.refused.values() for el in unseen)
        print(f"skipped {len(report.refused)} structures with elements the predictor never saw "
              f"({', '.join(f'{el}: {n}' for el, n in counts.most_common())})")
    print(f"{len(report.written)} predicted, {len(report.skipped)} already there, {len(report.refused)} skipped "
          f"-> {args.out}")
    return 1 if report.refused and not (report.written or report.skipped) else 0
