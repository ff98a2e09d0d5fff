"""A bounded coverage-guided fuzz run of the gateway's parsers (``fuzz_parsers.py``) in every test run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SECONDS = int(os.environ.get("GATEWAY_FUZZ_SECONDS", "20"))


def test_no_parser_fails_on_any_input_the_fuzzer_finds(tmp_path):
    run = subprocess.run(
        [sys.executable, str(HERE / "fuzz_parsers.py"), f"-max_total_time={SECONDS}", "-rss_limit_mb=2048",
         f"-artifact_prefix={tmp_path}/", "-print_final_stats=1"],
        capture_output=True, text=True, timeout=SECONDS + 120, cwd=HERE.parent.parent,
    )  # fmt: skip
    found = sorted(path.name for path in tmp_path.iterdir())
    assert run.returncode == 0 and not found, f"crashing inputs {found}:\n{run.stderr[-4000:]}"
    assert "stat::number_of_executed_units" in run.stderr
