"""Copy every benchmarks/results/*.md into RESULTS.md between the generated-section markers.

The summary above the markers is written by hand from these tables; everything below them is
the scripts' own output (each with the command, date, machine and versions that produced it).
Run: ``.venv/bin/python benchmarks/collect_results.py``
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
BEGIN, END = "<!-- generated: begin -->", "<!-- generated: end -->"
ORDER = ("bench_graph_ops", "bench_latency_rounding", "bench_candidate_cost", "bench_recovery")


def main() -> None:
    target = HERE / "RESULTS.md"
    text = target.read_text() if target.exists() else f"# Results\n\n{BEGIN}\n{END}\n"
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    parts = []
    names = [n for n in ORDER if (HERE / "results" / f"{n}.md").exists()]
    names += sorted(p.stem for p in (HERE / "results").glob("*.md") if p.stem not in ORDER)
    for name in names:
        lines = (HERE / "results" / f"{name}.md").read_text().strip().splitlines()
        # One heading level down: each file's title becomes a section of RESULTS.md, named
        # with its file, since reruns of one script share a title.
        if lines and lines[0].startswith("# "):
            lines[0] = f"{lines[0]} (`results/{name}.md`)"
        parts.append("\n".join("#" + ln if ln.startswith("#") else ln for ln in lines))
    target.write_text(head + BEGIN + "\n\n" + "\n\n".join(parts) + "\n\n" + END + tail)
    print(f"wrote {target} ({len(names)} result files)")


if __name__ == "__main__":
    main()
