"""Sampling profiles of our server under load, with py-spy, summarised as text.

py-spy attaches to the running server (no restart, no code change) and samples every thread's
Python stack; a thread inside a C call (llama_decode, gRPC's core) shows the Python frame that
made the call. The summary says, per thread, how many samples it was on the CPU and which
functions those samples were in (self and inclusive), which is enough to tell decode time from
Python scheduling, serialisation and transport.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_FRAME_FILE = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")


def py_spy() -> str | None:
    return shutil.which("py-spy")


def start_recording(pid: int, seconds: float, out: Path, rate: int = 200,
                    gil: bool = False) -> subprocess.Popen[bytes]:
    """Start `py-spy record` on `pid` for `seconds`; wait on the returned process."""
    binary = py_spy()
    if binary is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy)")
    cmd = [binary, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
           "--rate", str(rate), "--format", "raw", "--output", str(out), "--threads",
           "--nonblocking", "--subprocesses", *(["--gil"] if gil else [])]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _short(frame: str) -> str:
    m = _FRAME_FILE.match(frame)
    if not m:
        return frame
    file = m.group("file")
    tail = "/".join(file.split("/")[-2:])
    return f"{m.group('func')} ({tail})"


def _short_head(head: str) -> str:
    # 'process 123:"python -m service.cli -m ..."' -> 'process 123 (service.cli)'
    m = re.match(r'process (\d+):"(.*)"', head)
    if not m:
        return head
    words = m.group(2).split()
    what = words[words.index("-m") + 1] if "-m" in words[:-1] else " ".join(words[:2])
    return f"process {m.group(1)} ({what})"


def summarize_raw(raw: str, top: int = 12) -> str:
    """Per thread: samples, top self frames and top inclusive frames, as plain text."""
    per_thread: Counter[str] = Counter()
    self_by_thread: dict[str, Counter[str]] = {}
    incl_by_thread: dict[str, Counter[str]] = {}
    for line in raw.splitlines():
        m = _LINE.match(line.strip())
        if not m:
            continue
        frames = m.group("stack").split(";")
        count = int(m.group("count"))
        n_heads = 0
        while n_heads < len(frames) and frames[n_heads].startswith(("process ", "thread ")):
            n_heads += 1
        heads = frames[:n_heads]
        thread = " / ".join(_short_head(h) for h in heads) or "?"
        frames = [_short(f) for f in frames[len(heads):]]
        per_thread[thread] += count
        if frames:
            self_by_thread.setdefault(thread, Counter())[frames[-1]] += count
        for f in set(frames):
            incl_by_thread.setdefault(thread, Counter())[f] += count
    total = sum(per_thread.values()) or 1
    out = [f"{total} samples on CPU over all threads"]
    for thread, n in per_thread.most_common(6):
        out.append(f"\n== {thread}: {n} samples ({n / total:.0%})")
        out.append("  self:")
        for f, c in self_by_thread.get(thread, Counter()).most_common(top):
            out.append(f"    {c / n:6.1%}  {f}")
        out.append("  inclusive:")
        for f, c in incl_by_thread.get(thread, Counter()).most_common(top):
            out.append(f"    {c / n:6.1%}  {f}")
    return "\n".join(out) + "\n"
