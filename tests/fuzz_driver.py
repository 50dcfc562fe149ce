"""What the GGUF and safetensors fuzzers share: running cases in a worker subprocess, judging
each outcome, the command line, and the tests' checks. Each fuzzer describes its format as a
`Format`: its valid bases, how a case is made, written and kept.

Run as a script, this file is the worker a `Runner` starts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Seconds one case may take (load plus a two-token generation of a tiny model).
CASE_TIMEOUT = 10.0


# ---------------------------------------------------------------------------------------------
# Running cases: a worker process loads each model and generates, the parent judges.


def worker() -> None:
    """Reads model paths (files or directories) on stdin, one per line; writes one JSON outcome
    per line."""
    import smolgen

    for line in sys.stdin:
        path = line.rstrip("\n")
        print(json.dumps(run_one(smolgen, path)), flush=True)


def _describe(stage: str, e: BaseException, smolgen) -> dict:
    return {
        "stage": stage,
        "class": type(e).__name__,
        "module": type(e).__module__,
        "smolgen": isinstance(e, smolgen.SmolgenError),
        "message": str(e)[:4000],
    }


def run_one(smolgen, path: str) -> dict:
    try:
        model = smolgen.load(path, threads=2)
    except BaseException as e:  # a panic is a BaseException
        return _describe("load", e, smolgen)
    try:
        model.generate("hi there 42", max_tokens=2, temperature=0)
    except BaseException as e:
        return _describe("generate", e, smolgen)
    return {"stage": "done"}


def names_model(message: str, path: Path) -> bool:
    """Whether an error message names the model at `path`: a file by its name, a directory by
    its path or the path of anything inside it (`.../config.json`)."""
    if path.is_dir():
        return re.search(re.escape(str(path)) + r"(?![\w.-])", message) is not None
    return path.name in message


def judge(outcome: dict, path: Path) -> str | None:
    """Why an outcome is a failure, or None when it is acceptable. `path`: the model file or
    directory, which a load error must name (`names_model`)."""
    stage = outcome["stage"]
    if stage in ("crash", "hang"):
        return outcome["why"]
    if stage == "done":
        return None
    cls, message = outcome["class"], outcome["message"]
    if not outcome["smolgen"]:
        return f"{stage}: untyped {outcome['module']}.{cls}: {message[:300]}"
    if cls == "InternalError" or "backtrace" in message.lower() or "panicked" in message:
        return f"{stage}: {cls}: {message[:300]}"
    if stage == "load" and cls != "InvalidArgumentError" and not names_model(message, path):
        return f"load: {cls} does not name the file: {message[:300]}"
    if stage == "generate" and cls == "InvalidArgumentError":
        return f"generate: the model's fault blamed on the arguments: {message[:300]}"
    if stage == "generate" and cls == "MalformedModelError" and not names_model(message, path):
        return f"generate: MalformedModelError does not name the file: {message[:300]}"
    return None


class Runner:
    """A worker subprocess, restarted after a crash, a hang or any failure."""

    def __init__(self, timeout: float = CASE_TIMEOUT, engine: str | None = None) -> None:
        self.timeout = timeout
        self.engine = engine
        self.proc: subprocess.Popen[str] | None = None
        # Held for the runner's life (each worker writes its stderr there); closed by close().
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self.started = 0

    def _start(self) -> subprocess.Popen[str]:
        if self.proc is None:
            self.stderr.seek(0)
            self.stderr.truncate()
            # Backtraces on, so that an error that would show one to a user is seen here.
            env = dict(os.environ, RUST_BACKTRACE="1", PYTHONFAULTHANDLER="1")
            if self.engine:
                env["SMOLGEN_ENGINE"] = self.engine
            self.proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve())],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self.stderr,
                text=True,
                env=env,
            )
            self.started += 1
        return self.proc

    def stop(self) -> None:
        if self.proc is not None:
            proc, self.proc = self.proc, None
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()

    def close(self) -> None:
        self.stop()
        self.stderr.close()

    def _stderr_tail(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")[-1500:]

    def run(self, path: Path) -> dict:
        # The first case of a worker also pays for its start (importing smolgen).
        deadline = time.monotonic() + self.timeout + (10.0 if self.proc is None else 0.0)
        proc = self._start()
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(f"{path}\n")
            proc.stdin.flush()
        except BrokenPipeError:
            pass
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([proc.stdout], [], [], max(left, 0))
            if ready:
                line = proc.stdout.readline()
                if line:
                    return json.loads(line)
                proc.wait()
                tail = self._stderr_tail()
                self.stop()
                return {"stage": "crash", "why": f"the process died ({proc.returncode}): {tail}"}
            if left <= 0:
                self.stop()
                return {"stage": "hang", "why": f"no answer within {self.timeout:.0f} s"}


@dataclass
class Failure:
    name: str
    why: str
    data: bytes

    @property
    def first_mutation(self) -> str:
        """The first mutation in the case's name (`seed:index base:mutation+...`)."""
        return self.name.split(" ", 1)[1].split(":", 1)[1].split("+")[0]


def signature(why: str) -> str:
    """What a failure is, without the numbers and names that differ between cases."""
    why = re.sub(r"`[^`]*`", "`_`", why.splitlines()[0] if why else "")
    return re.sub(r"\d+", "N", why)[:160]


@dataclass(frozen=True)
class Format:
    """What a fuzzer knows about its format; `run_cases` and `main` do the rest."""

    # The valid models to mutate, written once under the given directory.
    bases: Callable[[Path], list]
    # Case `index` of run `seed`, from the bases: `(name, contents)`, the same on every call.
    make_case: Callable[[int, int, list], tuple[str, Any]]
    # Writes a case's contents at the given path.
    write_case: Callable[[Path, Any], object]
    # A case's contents as one value, for `Failure.data`.
    encode: Callable[[Any], bytes]
    # Writes a failing case under the given directory; returns its path.
    save_regression: Callable[[Failure, Path], Path]
    # The suffix of a case's path: ".gguf" for a file, "" for a directory.
    suffix: str = ""


def run_cases(
    fmt: Format,
    seed: int,
    workdir: Path,
    *,
    cases: int | None = None,
    seconds: float | None = None,
    report=None,
    outcomes: dict[str, int] | None = None,
    engine: str | None = None,
) -> tuple[int, list[Failure]]:
    """Runs cases `0..cases` (or until `seconds` pass) of run `seed`; returns how many ran and
    the failures. `outcomes` counts each kind of outcome (stage and class); `engine` sets
    `SMOLGEN_ENGINE` for the worker."""
    bases = fmt.bases(workdir / "bases")
    runner = Runner(engine=engine)
    failures: list[Failure] = []
    start = time.monotonic()
    i = 0
    try:
        while (cases is None or i < cases) and (
            seconds is None or time.monotonic() - start < seconds
        ):
            try:
                name, contents = fmt.make_case(seed, i, bases)
            except Exception as e:  # the fuzzer's own bug: say so, and go on with the next case
                failures.append(Failure(f"{seed}:{i} generator", f"generator: {e!r}", b""))
                if report:
                    report(f"FAIL case {seed}:{i}: the generator raised {e!r}")
                i += 1
                continue
            path = workdir / f"case-{seed}-{i}{fmt.suffix}"
            fmt.write_case(path, contents)
            outcome = runner.run(path)
            why = judge(outcome, path)
            if outcomes is not None:
                kind = f"{outcome['stage']} {outcome.get('class', '')}".strip()
                outcomes[kind] = outcomes.get(kind, 0) + 1
            if why is not None:
                failures.append(Failure(f"{seed}:{i} {name}", why, fmt.encode(contents)))
                runner.stop()  # a fresh worker for the next case
                if report:
                    report(f"FAIL case {seed}:{i} {name}: {why}")
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
            i += 1
            if report and i % 500 == 0:
                report(f"{i} cases, {len(failures)} failures, {time.monotonic() - start:.0f} s")
    finally:
        runner.close()
    return i, failures


def replay(paths: list[Path], engine: str | None = None) -> list[tuple[Path, str]]:
    """Each saved case's failure, if it still fails."""
    runner = Runner(engine=engine)
    bad = []
    try:
        for path in paths:
            why = judge(runner.run(path), path)
            if why is not None:
                bad.append((path, why))
                runner.stop()
    finally:
        runner.close()
    return bad


def main(
    fmt: Format,
    argv: list[str] | None,
    *,
    description: str,
    regressions: Path,
    tmp_prefix: str,
    summary_seconds: bool = False,
) -> int:
    """A fuzzer's command line: runs cases, keeps the smallest failing case of each kind under
    `--save`, prints a summary (with the time taken if `summary_seconds`)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seconds", type=float, default=1800.0, help="how long to run")
    parser.add_argument("--cases", type=int, default=None, help="stop after this many cases")
    parser.add_argument("--seed", type=int, default=1, help="which run of cases (0 is the test's)")
    parser.add_argument("--save", type=Path, default=regressions, help="where failing cases go")
    parser.add_argument(
        "--engine", choices=["auto", "candle"], default=None, help="SMOLGEN_ENGINE for the loads"
    )
    args = parser.parse_args(argv)
    outcomes: dict[str, int] = {}
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=tmp_prefix) as tmp:
        ran, failures = run_cases(
            fmt,
            args.seed,
            Path(tmp),
            cases=args.cases,
            seconds=args.seconds,
            report=lambda line: print(line, flush=True),
            outcomes=outcomes,
            engine=args.engine,
        )
    smallest: dict[str, Failure] = {}
    for f in failures:
        if not f.data:
            continue  # the generator's own failure: nothing to keep
        sig = signature(f.why)
        if sig not in smallest or len(f.data) < len(smallest[sig].data):
            smallest[sig] = f
    saved = {sig: fmt.save_regression(f, args.save) for sig, f in smallest.items()}
    summary = f"{ran} cases, {len(failures)} failures ({len(saved)} kinds)"
    if summary_seconds:
        summary += f", {time.monotonic() - start:.0f} s"
    print(summary)
    print("outcomes: " + ", ".join(f"{k} {n}" for k, n in sorted(outcomes.items())))
    for sig, path in saved.items():
        print(f"  {path.name}: {sig}")
    return 1 if failures else 0


# ---------------------------------------------------------------------------------------------
# The tests' checks, the same for both formats. `engine` "auto" leaves `SMOLGEN_ENGINE` unset.


def _engine(engine: str) -> str | None:
    return None if engine == "auto" else engine


def check_cases(fmt: Format, workdir: Path, cases: int, engine: str) -> None:
    """Cases `0..cases` of run 0 each load and generate or fail cleanly."""
    ran, failures = run_cases(fmt, 0, workdir, cases=cases, engine=_engine(engine))
    assert ran == cases
    report = "\n".join(f"case {f.name}: {f.why}" for f in failures[:10])
    assert not failures, f"{len(failures)} of {ran} cases failed:\n{report}"


def check_replay(paths: list[Path], engine: str) -> None:
    """Each saved case loads and generates or fails cleanly."""
    bad = replay(paths, engine=_engine(engine))
    assert not bad, "\n".join(f"{path.name}: {why}" for path, why in bad)


def check_cases_repeat(fmt: Format, workdir: Path) -> None:
    """The first cases of run 0 are the same on a second go, and all different."""
    bases = fmt.bases(workdir / "bases")
    first = [fmt.make_case(0, i, bases) for i in range(20)]
    again = [fmt.make_case(0, i, bases) for i in range(20)]
    assert first == again
    assert len({fmt.encode(contents) for _, contents in first}) == 20


if __name__ == "__main__":
    worker()
