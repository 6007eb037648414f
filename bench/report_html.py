"""The reports as a person sees them: full default ``hwopt optimize`` runs, HTML opened in headless Chromium.

    python -m bench.report_html [--out build/report_bench]

For the MobileNetV2 example (default rule set, as the README runs it) and a
real paddle2onnx export (tests/data, 566 nodes), with stderr a pipe as in CI:
prints the progress lines stderr got, the HTML report's size, whether
Chromium loaded it offline without a console message, and the screenshot's
path (look at it), plus the Model Explorer files written. Several minutes on
2 cores (the MobileNetV2 run materialises every block fused, twice).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = {
    "mobilenetv2": [],
    "ppocr_cls": ["--input-shape", "x=1x3x48x192"],
}


def chromium(page: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--no-first-run", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={page.parent / 'chromium-profile'}", "--enable-logging=stderr", "--v=0",
                           "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9", *args,
                           page.as_uri()], capture_output=True, text=True, timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "report_bench")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    from examples.build import build_example

    models = {"mobilenetv2": build_example("mobilenetv2", args.out),
              "ppocr_cls": ROOT / "tests" / "data" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"}
    for name, extra in RUNS.items():
        page = args.out / f"{name}.html"
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "hwopt.cli", "optimize", str(models[name]), *extra,
                               "-o", str(args.out / f"{name}.hwopt.onnx"), "--report", str(page),
                               "--node-data", str(args.out / f"{name}.nodes.json"), "--json"],
                              capture_output=True, text=True, cwd=ROOT)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            print(f"{name}: exit {done.returncode}: {done.stderr.strip()[-500:]}")
            continue
        doc = json.loads(done.stdout)  # stdout is the JSON alone
        progress = [line for line in done.stderr.splitlines() if not line.startswith("hwopt: ")]
        dom = chromium(page, "--dump-dom")
        console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
        shot = args.out / f"{name}.png"
        chromium(page, "--hide-scrollbars", "--window-size=1200,3200", f"--screenshot={shot}")
        print(f"{name}: {seconds:.0f} s, {len(progress)} progress lines on stderr, best "
              f"{doc['best']['latency_change']:+.1%}; report {page.stat().st_size / 1024:.0f} KB, "
              f"{dom.stdout.count('<svg')} charts, console messages {len(console)}; screenshot {shot}; "
              f"{len(doc.get('node_data', []))} Model Explorer files")
        for line in progress:
            print(f"    {line}")


if __name__ == "__main__":
    main()
