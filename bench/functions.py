"""Lambda functions: cold init (imports and client creation, in a fresh process) and warm handler time.

Each function runs in a new Python process (bench/functions_probe.py) against moto's server and the local
Twilio stub, as a cold start would; three processes per function, the median kept. A bare `import boto3`
in a fresh process, measured in the same run, is the baseline every function pays anyway.
"""

import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from bench.functions_probe import FUNCTIONS
from tests.support.deployment import create_aws_resources, environment, platform_environment
from tests.support.moto_server import running_moto_process
from tests.support.twilio_stub import running_twilio_stub

PROCESSES = 2
_BASELINE = "import time; t = time.perf_counter(); import boto3; print((time.perf_counter() - t) * 1000)"


def _median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.median(run[key] for run in runs), 2) for key in runs[0]}


def run() -> dict[str, Any]:
    with running_moto_process() as aws_url, running_twilio_stub() as twilio:
        env = platform_environment(aws_url, twilio.url)
        with environment(env):
            env |= create_aws_resources(os.urandom(32).hex())
        child_env = {
            **os.environ,
            **env,
            "POWERTOOLS_LOG_LEVEL": "WARNING",
            "POWERTOOLS_METRICS_DISABLED": "true",
            "PYTHONPATH": os.pathsep.join(["layers", "."]),
        }
        baseline = []
        for _ in range(PROCESSES):
            out = subprocess.run([sys.executable, "-c", _BASELINE], capture_output=True, text=True, check=True)
            baseline.append(float(out.stdout))
        results: dict[str, Any] = {"baseline_import_boto3_ms": round(statistics.median(baseline), 1)}
        for function in FUNCTIONS:
            runs = []
            for _ in range(PROCESSES):
                started = time.perf_counter()
                out = subprocess.run(
                    [sys.executable, "-m", "bench.functions_probe", function],
                    capture_output=True,
                    text=True,
                    env=child_env,
                    check=False,
                )
                if out.returncode != 0:
                    raise RuntimeError(f"{function} probe failed:\n{out.stderr[-2000:]}")
                run = json.loads(out.stdout.strip().splitlines()[-1])
                run["process_ms"] = round((time.perf_counter() - started) * 1000, 1)
                runs.append(run)
            results[function] = _median_of(runs)
    return results


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
