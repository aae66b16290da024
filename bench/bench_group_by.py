"""Benchmark (SPEC §9, issue #12): `--group-by` keeps memory flat. Peak RSS of
`capi send --file X --preset shopify --dry-run -o /dev/null` on a Shopify-shaped orders export of
N line-item rows and of N/10 rows (target: under 150 MB, and about the same for both sizes).

    .venv/bin/python bench/bench_group_by.py --rows 1000000
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEADER_SOURCE = ROOT / "tests" / "fixtures" / "exports" / "shopify_orders_export.csv"


def generate(path: Path, rows: int) -> None:
    """Orders of 1-4 line items in the export's 79 columns; totals only on an order's first row."""
    with HEADER_SOURCE.open(encoding="utf-8") as source:
        header = next(csv.reader(source))
    paid = datetime.fromtimestamp(time.time() - 86400, UTC).strftime("%Y-%m-%d %H:%M:%S +0000")
    index = {name: i for i, name in enumerate(header)}
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        written, order = 0, 1000
        while written < rows:
            order += 1
            items = 1 + order % 4
            for item in range(items):
                row = [""] * len(header)
                row[index["Name"]] = f"#{order}"
                row[index["Email"]] = f"buyer{order}@example.in"
                row[index["Lineitem quantity"]] = str(1 + item % 2)
                row[index["Lineitem price"]] = f"{199 + item * 100}.00"
                row[index["Lineitem sku"]] = f"SKU-{item}"
                if item == 0:
                    for name, value in (("Financial Status", "paid" if order % 5 else "pending"), ("Paid at", paid),
                                        ("Currency", "INR"), ("Total", f"{999 + order % 1000}.00"),
                                        ("Billing Name", "Priya Sharma"), ("Billing Country", "IN"),
                                        ("Billing Phone", f"+91 98{order % 100000000:08d}")):
                        row[index[name]] = value
                writer.writerow(row)
                written += 1


def peak(path: Path) -> tuple[float, float]:
    env = dict(os.environ, CAPI_HOME=str(path.parent / "home"), CAPI_WHATSAPP_BUSINESS_ACCOUNT_ID="104123456789012")
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "capi_cli", "send", "--file", str(path), "--preset", "shopify",
                             "--dry-run", "-o", os.devnull, "--no-progress", "-q"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    return time.perf_counter() - start, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for rows in (args.rows // 10, args.rows):
            path = Path(folder) / f"orders-{rows}.csv"
            generate(path, rows)
            seconds, mb = peak(path)
            print(f"--group-by (preset shopify) on {rows} rows: {seconds:.1f} s, peak RSS {mb:.1f} MB")


if __name__ == "__main__":
    main()
