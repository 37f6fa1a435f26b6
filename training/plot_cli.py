"""Command line for `plot_metrics`: python -m training.plot_cli OUT/metrics.jsonl OUT/curves.png"""
from training.plotting import plot_metrics


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Plot a run's metrics.jsonl into a PNG.")
    parser.add_argument("metrics", help="path to metrics.jsonl (written by utils.Logger)")
    parser.add_argument("out_png", help="PNG file to write")
    parser.add_argument("--keys", nargs="*", default=None,
                        help="metrics to plot (default: every numeric one)")
    parser.add_argument("--title", default=None, help="figure title")
    args = parser.parse_args(argv)
    print(plot_metrics(args.metrics, args.out_png, args.keys, args.title))


if __name__ == "__main__":
    main()
