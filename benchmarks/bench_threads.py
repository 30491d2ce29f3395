"""The `--threads` option shared by the benchmark scripts: how many intra-op threads torch may use.

On a shared machine, several torch threads stall on every hand-off while other processes hold the cores, so the
default `auto` falls back to one thread when the load average says the machine is busy.
"""

from __future__ import annotations

import argparse
import os

import torch

THREADS_HELP = (
    "torch.set_num_threads: a number, 'default' (torch's own), or 'auto' (the default: torch's own on an idle "
    "machine, 1 when the load average is 0.5 or more)"
)


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """Adds `--threads` (default `auto`) to a benchmark's parser."""
    parser.add_argument("--threads", default="auto", help=THREADS_HELP)


def set_threads(setting: str) -> tuple[int, str, float]:
    """Applies a `--threads` value with `torch.set_num_threads`.

    Args:
        setting (`str`): a number, `"default"` or `"auto"`.

    Returns:
        `(threads, why, load)`: the thread count set, the reason to print, and the 1-minute load average.
    """
    load = os.getloadavg()[0]
    if setting == "auto":
        threads = torch.get_num_threads() if load < 0.5 else 1
        why = "torch's default, machine idle" if load < 0.5 else "--threads auto: machine busy"
    elif setting == "default":
        threads, why = torch.get_num_threads(), "torch's default"
    else:
        threads, why = int(setting), "--threads"
    torch.set_num_threads(threads)
    return threads, why, load
